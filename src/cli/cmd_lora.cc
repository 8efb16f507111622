// `ckptkit lora bake|extract|resize|convert` — apply, extract, resize and rename LoRAs
// (docs/lora.md).
#include <fmt/format.h>

#include <charconv>
#include <cstdio>

#include "ckptkit/lora.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {
namespace {

/// Ends a lora command's --json report with the fields they all share and prints it.
int finish_json(JsonWriter& w, const std::vector<std::string>& notes, const RunStats& stats) {
  w.key("notes").begin_array();
  for (const std::string& n : notes) w.value(n);
  w.end_array();
  w.key("output_bytes").value(stats.bytes_written);
  w.key("seconds").value(fmt::format("{:.3f}", stats.seconds));
  w.end_object();
  print_out(w.str());
  return kExitOk;
}

/// Ends a lora command's plain report (notes, what was written) and prints it on stderr.
int finish_text(std::string out, const std::vector<std::string>& notes, const std::string& path,
                const RunStats& stats) {
  for (const std::string& n : notes) out += fmt::format("  note: {}\n", n);
  out += fmt::format("  wrote {} ({})\n", path, human_bytes(stats.bytes_written));
  std::fputs(out.c_str(), stderr);
  return kExitOk;
}

/// "style.safetensors:0.8" -> (path, 0.8); a suffix that is not a number stays in the path.
Result<LoraInput> parse_lora_arg(const std::string& arg) {
  LoraInput in;
  in.path = arg;
  const size_t colon = arg.rfind(':');
  if (colon == std::string::npos || colon + 1 == arg.size()) return in;
  const std::string num = arg.substr(colon + 1);
  double v = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
  if (ec != std::errc() || p != num.data() + num.size()) return in;
  if (!std::isfinite(v))
    return error(ErrorCode::kInvalidArgument, "strength '{}' is not a finite number", num);
  in.path = arg.substr(0, colon);
  in.strength = v;
  return in;
}

Runner setup_bake(CLI::App& sub) {
  struct Opts {
    std::string base, out, dtype = "keep", fp8_rounding = "nearest", block_weights, quant,
        target = "comfyui";
    std::vector<std::string> blocks;
    uint64_t seed = 0;
    std::vector<std::string> loras;
    std::optional<double> strength_te;
    bool strict = false, json = false, quiet = false, allow_dangerous = false;
    WriteFlags write;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("BASE", o->base, "the model to bake into (.safetensors, .ckpt, …)")->required();
  sub.add_option("LORA", o->loras, "LoRA files, each optionally :STRENGTH (default 1.0)")
      ->required();
  sub.add_option("-o,--output", o->out, "output file (.safetensors)")->required();
  sub.add_option("--strength-te", o->strength_te,
                 "strength of every LoRA's text-encoder modules (default: each LoRA's strength)");
  sub.add_option("--dtype", o->dtype,
                 "precision of the output's float tensors: f16, bf16, f32, f8_e4m3, f8_e5m2 or "
                 "keep (the base's)")
      ->default_str("keep");
  sub.add_option("--fp8-rounding", o->fp8_rounding,
                 "FP8 outputs of changed tensors: nearest (default, as kohya and torch's cast) "
                 "or stochastic (each value to one of its two FP8 neighbours with probability "
                 "by nearness, so small deltas survive on average, as ComfyUI does)")
      ->check(CLI::IsMember({"nearest", "stochastic"}))
      ->default_str("nearest");
  sub.add_option("--seed", o->seed, "seed of --fp8-rounding stochastic (same seed, same bytes)")
      ->default_val(0);
  sub.add_option("--quant", o->quant,
                 "write a GGUF instead (-o NAME.gguf): the baked model quantized as `convert "
                 "--quant` would quantize it (q8_0, q6_k, q5_k_m, q4_k_m, …, f16, bf16)");
  sub.add_option("--target", o->target, "GGUF loader with --quant: comfyui (default) or sdcpp")
      ->check(CLI::IsMember({"comfyui", "sdcpp"}))
      ->default_str("comfyui");
  sub.add_option("--block", o->blocks,
                 "NAME=X: multiply the strength of modules on block NAME by X (merge's block "
                 "names: IN00…OUT11, M00; joint_blocks.N; double_blocks.N, single_blocks.N; "
                 "text_encoder); repeatable");
  sub.add_option("--block-weights", o->block_weights,
                 "a supermerger block-weight string (25 or 26 values with BASE first; SDXL 19/20), "
                 "--block entries override it");
  sub.add_flag("--strict", o->strict,
               "refuse (exit 1, nothing written) when a module lands on no tensor of the base");
  sub.add_flag("--json", o->json, "print the report as JSON on stdout");
  sub.add_flag("-q,--quiet", o->quiet, "print nothing on success");
  sub.add_flag("--allow-dangerous", o->allow_dangerous,
               "read PyTorch files even if `scan` finds code in them (only tensors are taken)");
  o->write.add_to(sub);
  sub.footer(
      "Each changed tensor is computed in F32: the base value, plus for each LoRA in the order\n"
      "given strength × alpha/rank × (up · down) (summed over the rank in index order), then\n"
      "rounded once to the output dtype (docs/lora.md). Tensors no module touches are copied\n"
      "(or cast with --dtype). Streams tensor by tensor: memory is the I/O buffers plus the\n"
      "factors of the tensors in flight. Applies LoRA, LoCon (incl. 3x3 convolutions and\n"
      "Tucker cores), LoHa, LoKr, full-diff and DoRA modules in kohya/LyCORIS/PEFT/diffusers/\n"
      "ComfyUI names (LoHa and LoKr with Tucker cores too); a LoRA of another family,\n"
      "inconsistent factors or NaN in a factor are refused before (or without) writing\n"
      "anything.\n\n"
      "Examples:\n"
      "  ckptkit lora bake sd_xl_base_1.0.safetensors detail.safetensors:0.8 style.safetensors \\\n"
      "      -o sdxl-detail-style.safetensors\n"
      "  ckptkit lora bake v1-5.safetensors my_lora.safetensors --strength-te 0.5 -o baked.safetensors\n"
      "  ckptkit lora bake sd_xl_base_1.0.safetensors style.safetensors --block IN04=0 --block IN05=0 \\\n"
      "      -o style-outputs-only.safetensors\n"
      "  ckptkit lora bake flux1-dev.safetensors style.safetensors --quant q8_0 -o flux-style-Q8_0.gguf");
  return [o] {
    BakeOptions options;
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    options.run = *run;
    options.strict = o->strict;
    options.allow_dangerous = o->allow_dangerous;
    options.fp8_stochastic = o->fp8_rounding == "stochastic";
    options.block_weights = o->block_weights;
    if (!o->quant.empty()) options.gguf = GgufConvertOptions{o->quant, o->target};
    for (const std::string& b : o->blocks) {
      const size_t eq = b.find('=');
      double v = 0;
      const std::string num = eq == std::string::npos ? "" : b.substr(eq + 1);
      auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
      if (eq == std::string::npos || eq == 0 || num.empty() || ec != std::errc() ||
          p != num.data() + num.size())
        return report_error(Status(ErrorCode::kInvalidArgument,
                                   fmt::format("--block {}: give NAME=X, e.g. OUT03=0.5", b)));
      options.block_strength[b.substr(0, eq)] = v;
    }
    options.seed = o->seed;
    auto dtype = parse_dtype_flag(o->dtype);
    if (!dtype) return report_error(dtype.status());
    options.dtype = *dtype;
    std::vector<LoraInput> inputs;
    for (const std::string& a : o->loras) {
      auto in = parse_lora_arg(a);
      if (!in) return report_error(in.status());
      in->strength_te = o->strength_te;
      inputs.push_back(*in);
    }
    if (auto rc = scan_gate(o->base, "bake into", options.limits, options.allow_dangerous,
                            options.verdict))
      return *rc;
    auto report = bake_loras(o->base, inputs, o->out, options);
    if (!report) {
      // --strict refusals are "problems found", not errors of the input.
      if (o->strict && report.status().message().starts_with("--strict")) {
        if (Capture* c = current_capture()) {
          c->error = report.status();
          return kExitProblems;
        }
        std::fprintf(stderr, "ckptkit: %s\n", report.status().to_string().c_str());
        return kExitProblems;
      }
      return report_error(report.status());
    }
    if (o->json) {
      JsonWriter w;
      w.begin_object();
      w.key("output").value(o->out);
      w.key("architecture").value(report->architecture);
      w.key("tensors_changed").value(report->tensors_changed);
      w.key("loras").begin_array();
      for (const auto& l : report->loras) {
        w.begin_object();
        w.key("path").value(l.path);
        w.key("format").value(l.format);
        w.key("modules").value(l.modules);
        w.key("applied").value(l.applied);
        w.key("unmatched").begin_array();
        for (const std::string& u : l.unmatched) w.value(u);
        w.end_array();
        w.end_object();
      }
      w.end_array();
      return finish_json(w, report->notes, report->stats);
    }
    if (o->quiet) return kExitOk;
    std::string out = fmt::format("baked {} LoRA(s) into {} ({} tensors changed) in {:.2f} s\n",
                                  report->loras.size(), report->architecture,
                                  report->tensors_changed, report->stats.seconds);
    for (const auto& l : report->loras) {
      out += fmt::format("  {} ({}): {} of {} modules applied\n", l.path, l.format, l.applied,
                         l.modules);
      for (size_t i = 0; i < l.unmatched.size() && i < 10; ++i)
        out += fmt::format("    not applied: {}\n", l.unmatched[i]);
      if (l.unmatched.size() > 10)
        out += fmt::format("    … and {} more (--json lists all)\n", l.unmatched.size() - 10);
    }
    return finish_text(out, report->notes, o->out, report->stats);
  };
}


Result<DType> parse_float_dtype(const std::string& s) {
  auto d = parse_dtype_flag(s);
  if (!d) return d.status();
  if (!*d || !is_float(**d))
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("--dtype {}: a floating-point type is needed (f16, bf16, f32)", s));
  return **d;
}

Runner setup_extract(CLI::App& sub) {
  struct Opts {
    std::string tuned, base, out, format = "kohya", dtype = "f16";
    uint64_t rank = 0;
    std::optional<uint64_t> conv_rank;
    std::optional<double> alpha;
    double clamp = 0.99, min_diff = 0.01;
    bool no_clamp = false, exact = false, text_encoders = false, json = false, quiet = false,
         allow_dangerous = false;
    WriteFlags write;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("TUNED", o->tuned, "the finetuned model")->required();
  sub.add_option("BASE", o->base, "the model it was tuned from")->required();
  sub.add_option("-o,--output", o->out, "output LoRA (.safetensors)")->required();
  sub.add_option("--rank", o->rank, "rank of the linear and 1x1 convolution modules")->required();
  sub.add_option("--conv-rank", o->conv_rank,
                 "also extract the 3x3 convolutions of the UNet's ResNet blocks, at this rank "
                 "(LoCon)");
  sub.add_flag("--text-encoders", o->text_encoders,
               "also the text encoders' attention and MLP (a text encoder that did not change, "
               "max |dW| < --min-diff, is left out)");
  sub.add_option("--min-diff", o->min_diff, "see --text-encoders")->default_val(0.01);
  sub.add_option("--alpha", o->alpha,
                 "alpha to write (up is scaled so that alpha/rank x up x down is unchanged); "
                 "default: alpha = rank");
  sub.add_option("--clamp-quantile", o->clamp,
                 "clamp up and down to [-q, q] where q is this quantile of their values (kohya)")
      ->default_val(0.99);
  sub.add_flag("--no-clamp", o->no_clamp, "write the SVD factors unclamped");
  sub.add_flag("--exact", o->exact,
               "full SVD of every dW (LAPACK gesdd, as torch.linalg.svd) instead of the "
               "randomized one");
  sub.add_option("--format", o->format, "kohya (default), diffusers or peft key names")
      ->default_str("kohya");
  sub.add_option("--dtype", o->dtype, "precision of the factors: f16 (default), bf16 or f32")
      ->default_str("f16");
  sub.add_flag("--json", o->json, "print the report as JSON on stdout");
  sub.add_flag("-q,--quiet", o->quiet, "print nothing on success");
  sub.add_flag("--allow-dangerous", o->allow_dangerous,
               "read PyTorch files even if `scan` finds code in them (only tensors are taken)");
  o->write.add_to(sub);
  sub.footer(
      "For each module kohya targets (attention and MLP projections of the UNet/DiT; with\n"
      "--conv-rank the ResNet convolutions; with --text-encoders CLIP's attention and MLP),\n"
      "dW = TUNED - BASE in F32 and its truncated SVD: a randomized range finder (16 extra\n"
      "columns, 2 power iterations) or, with --exact, LAPACK's full SVD. The singular values go\n"
      "into up (kohya), alpha = rank, then up and down are clamped at the 0.99 quantile of their\n"
      "values as kohya does (an exact selection, no size limit). Streams module by module:\n"
      "memory holds the modules in flight. The report gives the share of ||dW|| kept.\n\n"
      "Examples:\n"
      "  ckptkit lora extract my_finetune.safetensors sd_xl_base_1.0.safetensors --rank 64 \\\n"
      "      -o my_finetune-r64.safetensors\n"
      "  ckptkit lora extract tuned.safetensors v1-5.safetensors --rank 32 --conv-rank 16 \\\n"
      "      --text-encoders --format diffusers -o tuned-lora.safetensors");
  return [o] {
    ExtractOptions options;
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    options.run = *run;
    options.rank = o->rank;
    options.conv_rank = o->conv_rank;
    options.text_encoders = o->text_encoders;
    options.min_diff = o->min_diff;
    options.alpha = o->alpha;
    options.clamp_quantile = o->no_clamp ? std::nullopt : std::optional<double>(o->clamp);
    options.exact = o->exact;
    options.allow_dangerous = o->allow_dangerous;
    if (o->format == "kohya") options.format = LoraWriteFormat::kKohya;
    else if (o->format == "diffusers") options.format = LoraWriteFormat::kDiffusers;
    else if (o->format == "peft") options.format = LoraWriteFormat::kPeft;
    else
      return report_error(Status(ErrorCode::kInvalidArgument,
                                 fmt::format("--format {}: kohya, diffusers or peft", o->format)));
    auto dtype = parse_float_dtype(o->dtype);
    if (!dtype) return report_error(dtype.status());
    options.dtype = *dtype;
    for (const std::string* p : {&o->tuned, &o->base}) {
      std::optional<Verdict> verdict;
      if (auto rc = scan_gate(*p, "extract from", options.limits, options.allow_dangerous, verdict))
        return *rc;
    }
    auto report = extract_lora(o->tuned, o->base, o->out, options);
    if (!report) return report_error(report.status());
    if (o->json) {
      JsonWriter w;
      w.begin_object();
      w.key("output").value(o->out);
      w.key("architecture").value(report->architecture);
      w.key("modules").value(report->modules);
      w.key("unchanged").value(report->unchanged);
      w.key("mean_kept").value(report->mean_kept);
      w.key("min_kept").value(report->min_kept);
      w.key("min_kept_module").value(report->min_kept_module);
      return finish_json(w, report->notes, report->stats);
    }
    if (o->quiet) return kExitOk;
    std::string out = fmt::format(
        "extracted {} modules of {} in {:.2f} s\n  share of ||dW|| kept at rank {}: {:.1f}% on "
        "average, lowest {:.1f}% ({})\n",
        report->modules, report->architecture, report->stats.seconds, o->rank,
        100 * report->mean_kept, 100 * report->min_kept, report->min_kept_module);
    return finish_text(out, report->notes, o->out, report->stats);
  };
}

Runner setup_resize(CLI::App& sub) {
  struct Opts {
    std::string in, out, dynamic, dtype = "keep";
    uint64_t rank = 0;
    std::optional<uint64_t> conv_rank;
    bool json = false, quiet = false, verbose = false, allow_dangerous = false;
    WriteFlags write;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("LORA", o->in, "the LoRA to resize")->required();
  sub.add_option("-o,--output", o->out, "output LoRA (.safetensors)")->required();
  sub.add_option("--rank", o->rank, "the new rank (with --dynamic: the largest rank kept)")
      ->required();
  sub.add_option("--conv-rank", o->conv_rank, "the new rank of 3x3 convolution modules (default: --rank)");
  sub.add_option("--dynamic", o->dynamic,
                 "choose each module's rank from its singular values, kohya's rules: "
                 "sv_ratio=X (keep values above max/X), sv_fro=X (keep X of the Frobenius norm), "
                 "sv_cumulative=X (keep X of their sum)");
  sub.add_option("--dtype", o->dtype, "precision of the output: f16, bf16, f32 or keep (the input's)")
      ->default_str("keep");
  sub.add_flag("-v,--verbose", o->verbose, "list every module's new rank and the norm it keeps");
  sub.add_flag("--json", o->json, "print the report as JSON on stdout (every module)");
  sub.add_flag("-q,--quiet", o->quiet, "print nothing on success");
  sub.add_flag("--allow-dangerous", o->allow_dangerous,
               "read PyTorch files even if `scan` finds code in them (only tensors are taken)");
  o->write.add_to(sub);
  sub.footer(
      "Each lora_down/lora_up (or lora_A/lora_B) module's dW = up x down is cut to the new rank\n"
      "by its exact SVD, which QRs of the two factors give without forming dW; the singular\n"
      "values go into up and alpha becomes old alpha / old rank x new rank, so the strength is\n"
      "unchanged (kohya's resize_lora.py rules, including the rank its sv_ratio rule keeps: one\n"
      "more than the values above the threshold). A rank above a module's own is not padded.\n"
      "LoHa, LoKr and full-diff modules are copied; DoRA is refused.\n\n"
      "Examples:\n"
      "  ckptkit lora resize flux-style-r128.safetensors --rank 32 -o flux-style-r32.safetensors\n"
      "  ckptkit lora resize big.safetensors --rank 64 --dynamic sv_fro=0.9 -o small.safetensors");
  return [o] {
    ResizeOptions options;
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    options.run = *run;
    options.rank = o->rank;
    options.conv_rank = o->conv_rank;
    options.allow_dangerous = o->allow_dangerous;
    if (!o->dynamic.empty()) {
      const size_t eq = o->dynamic.find('=');
      const std::string rule = o->dynamic.substr(0, eq);
      double v = 0;
      const std::string num = eq == std::string::npos ? "" : o->dynamic.substr(eq + 1);
      auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
      if (rule == "sv_ratio") options.rule = ResizeRule::kSvRatio;
      else if (rule == "sv_fro") options.rule = ResizeRule::kSvFro;
      else if (rule == "sv_cumulative") options.rule = ResizeRule::kSvCumulative;
      if (options.rule == ResizeRule::kFixed || num.empty() || ec != std::errc() ||
          p != num.data() + num.size())
        return report_error(Status(
            ErrorCode::kInvalidArgument,
            fmt::format("--dynamic {}: expected sv_ratio=X, sv_fro=X or sv_cumulative=X",
                        o->dynamic)));
      options.param = v;
    }
    auto dtype = parse_dtype_flag(o->dtype);
    if (!dtype) return report_error(dtype.status());
    options.dtype = *dtype;
    std::optional<Verdict> verdict;
    if (auto rc = scan_gate(o->in, "resize", options.limits, options.allow_dangerous, verdict))
      return *rc;
    auto report = resize_lora(o->in, o->out, options);
    if (!report) return report_error(report.status());
    double fro = 0;
    for (const auto& m : report->modules) fro += m.fro_kept;
    fro /= static_cast<double>(std::max<size_t>(1, report->modules.size()));
    if (o->json) {
      JsonWriter w;
      w.begin_object();
      w.key("output").value(o->out);
      w.key("mean_fro_kept").value(fro);
      w.key("modules").begin_array();
      for (const auto& m : report->modules) {
        w.begin_object();
        w.key("name").value(m.name);
        w.key("old_rank").value(m.old_rank);
        w.key("new_rank").value(m.new_rank);
        w.key("new_alpha").value(m.new_alpha);
        w.key("fro_kept").value(m.fro_kept);
        w.key("sum_kept").value(m.sum_kept);
        w.end_object();
      }
      w.end_array();
      w.key("copied").value(report->copied);
      return finish_json(w, report->notes, report->stats);
    }
    if (o->quiet) return kExitOk;
    std::string out;
    if (o->verbose)
      for (const auto& m : report->modules)
        out += fmt::format("  {:<72} rank {} -> {}, alpha {:g}, ||dW|| kept {:.1f}%, sum(S) "
                           "kept {:.1f}%\n",
                           m.name, m.old_rank, m.new_rank, m.new_alpha, 100 * m.fro_kept,
                           100 * m.sum_kept);
    out += fmt::format("resized {} modules in {:.2f} s; share of ||dW|| kept: {:.1f}% on average\n",
                       report->modules.size(), report->stats.seconds, 100 * fro);
    return finish_text(out, report->notes, o->out, report->stats);
  };
}

Runner setup_convert_lora(CLI::App& sub) {
  struct Opts {
    std::string in, out, to, base;
    bool json = false, quiet = false, allow_dangerous = false;
    WriteFlags write;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("IN", o->in, "the LoRA to convert")->required();
  sub.add_option("-o,--output", o->out, "output file (.safetensors)")->required();
  sub.add_option("--to", o->to, "the format to write: kohya, diffusers or peft")
      ->required()
      ->check(CLI::IsMember({"kohya", "diffusers", "peft"}));
  sub.add_option("--base", o->base,
                 "a base model of the LoRA's family to name modules against (default: the "
                 "family's embedded reference layout)");
  sub.add_flag("--json", o->json, "print the report as JSON on stdout");
  sub.add_flag("-q,--quiet", o->quiet, "print nothing on success");
  sub.add_flag("--allow-dangerous", o->allow_dangerous,
               "read PyTorch files even if `scan` finds code in them (only tensors are taken)");
  o->write.add_to(sub);
  sub.footer(
      "Each module is matched to the base tensor (or rows of it) it changes, then written under\n"
      "the name the target format's tools give that tensor. kohya names FLUX's fused q/k/v\n"
      "(img_attn.qkv, linear1) whole, diffusers and PEFT by to_q/to_k/to_v(/proj_mlp): going to\n"
      "diffusers/peft splits (down copied to each part, up split by rows); going to kohya fuses\n"
      "(down concatenated, rank the sum, up block-diagonal, a missing part zero). ΔW of every\n"
      "base tensor is unchanged: a fused module's alpha is the parts' scale × the summed rank,\n"
      "or when the parts' alpha/rank differ each part's scale is multiplied into its factors\n"
      "and alpha = rank (the split_qkv bug, sd-scripts #2204, avoided); diffusers and PEFT files\n"
      "carry no alpha their loaders read, so alpha/rank goes into the factors (sqrt into each).\n"
      "LoHa, LoKr, full-diff and DoRA modules are written in kohya naming only. A module that\n"
      "lands nowhere or has no name in the format is refused; nothing is written (exit 2).\n\n"
      "Examples:\n"
      "  ckptkit lora convert flux_kohya.safetensors --to diffusers -o flux_diffusers.safetensors\n"
      "  ckptkit lora convert pytorch_lora_weights.safetensors --to kohya -o my_lora.safetensors\n"
      "  ckptkit lora convert my_lora.safetensors --to peft --base v1-5.safetensors -o peft.safetensors --json");
  return [o] {
    LoraConvertOptions options;
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    options.run = *run;
    options.to = o->to;
    options.allow_dangerous = o->allow_dangerous;
    if (!o->base.empty()) options.base = o->base;
    std::optional<Verdict> verdict;
    if (auto rc = scan_gate(o->in, "convert", options.limits, options.allow_dangerous, verdict))
      return *rc;
    if (options.base) {
      std::optional<Verdict> bv;
      if (auto rc = scan_gate(*options.base, "name modules against", options.limits,
                              options.allow_dangerous, bv))
        return *rc;
    }
    auto report = convert_lora(o->in, o->out, options);
    if (!report) return report_error(report.status());
    if (o->json) {
      JsonWriter w;
      w.begin_object();
      w.key("output").value(o->out);
      w.key("from").value(report->from);
      w.key("to").value(report->to);
      w.key("family").value(report->family);
      w.key("names_from").value(report->names_from);
      w.key("modules_in").value(report->modules_in);
      w.key("modules_out").value(static_cast<uint64_t>(report->outputs.size()));
      w.key("kept").value(report->kept);
      w.key("renamed").value(report->renamed);
      w.key("split").value(report->split);
      w.key("fused").value(report->fused);
      w.key("scale_folded").value(report->folded);
      w.key("modules").begin_array();
      for (const auto& m : report->outputs) {
        w.begin_object();
        w.key("module").value(m.module);
        w.key("action").value(m.action);
        w.key("from").begin_inline_array();
        for (const std::string& f : m.from) w.value(f);
        w.end_array();
        w.key("rank_in").begin_inline_array();
        for (uint64_t r : m.rank_in) w.value(r);
        w.end_array();
        w.key("alpha_in").begin_inline_array();
        for (const auto& a : m.alpha_in) a ? w.value(*a) : w.null();
        w.end_array();
        w.key("rank").value(m.rank);
        w.key("alpha");
        m.alpha ? w.value(*m.alpha) : w.null();
        w.key("scale_folded").value(m.folded);
        w.end_object();
      }
      w.end_array();
      return finish_json(w, report->notes, report->stats);
    }
    if (o->quiet) return kExitOk;
    std::string out = fmt::format(
        "converted {} ({}, {}) to {}: {} modules in, {} out ({} kept, {} renamed, {} split "
        "parts, {} fused) in {:.2f} s\n",
        o->in, report->from, report->family, report->to, report->modules_in,
        report->outputs.size(), report->kept, report->renamed, report->split, report->fused,
        report->stats.seconds);
    out += fmt::format("  names from {}\n", report->names_from);
    size_t shown = 0;
    for (const auto& m : report->outputs) {
      if (m.action != "fused") continue;
      if (++shown > 10) break;
      std::string alphas;
      for (size_t i = 0; i < m.from.size(); ++i)
        alphas += fmt::format("{}{}/{}", i ? ", " : "",
                              m.alpha_in[i] ? fmt::format("{:g}", *m.alpha_in[i]) : "none",
                              m.rank_in[i]);
      out += fmt::format("  {} {} <- {} module(s) (alpha/rank {}): rank {}, alpha {}{}\n",
                         m.action, m.module, m.from.size(), alphas, m.rank,
                         m.alpha ? fmt::format("{:g}", *m.alpha) : "none",
                         m.folded ? ", scale folded into the factors" : "");
    }
    if (shown > 10) out += "  … (--json lists every module)\n";
    return finish_text(out, report->notes, o->out, report->stats);
  };
}

}  // namespace

Runner setup_lora(CLI::App& sub) {
  sub.require_subcommand(1);
  auto* bake = sub.add_subcommand("bake", "add LoRAs to a base model's weights, streamed");
  Runner bake_run = setup_bake(*bake);
  auto* extract = sub.add_subcommand("extract", "a LoRA from the difference of two models");
  Runner extract_run = setup_extract(*extract);
  auto* resize = sub.add_subcommand("resize", "cut a LoRA's modules to a smaller rank");
  Runner resize_run = setup_resize(*resize);
  auto* convert = sub.add_subcommand(
      "convert", "write a LoRA in another format's names (kohya, diffusers, peft)");
  Runner convert_run = setup_convert_lora(*convert);
  return [=] {
    if (convert->parsed()) return convert_run();
    if (bake->parsed()) return bake_run();
    if (extract->parsed()) return extract_run();
    if (resize->parsed()) return resize_run();
    return kExitError;
  };
}

}  // namespace ckptkit::cli
