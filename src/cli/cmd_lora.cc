// `ckptkit lora bake` — apply LoRAs to a base model; `lora convert` — rename a LoRA into another
// format (docs/lora.md).
#include <fmt/format.h>

#include <charconv>
#include <cstdio>

#include "ckptkit/lora.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {
namespace {

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
    std::string base, out, dtype = "keep";
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
      "Tucker cores), LoHa, LoKr and full-diff modules in kohya/LyCORIS/PEFT/diffusers/\n"
      "ComfyUI names; a LoRA of another family, inconsistent factors, NaN in a factor or\n"
      "module kinds not applied yet (DoRA, LoHa/LoKr with Tucker cores) are refused before\n"
      "(or without) writing anything.\n\n"
      "Examples:\n"
      "  ckptkit lora bake sd_xl_base_1.0.safetensors detail.safetensors:0.8 style.safetensors \\\n"
      "      -o sdxl-detail-style.safetensors\n"
      "  ckptkit lora bake v1-5.safetensors my_lora.safetensors --strength-te 0.5 -o baked.safetensors");
  return [o] {
    BakeOptions options;
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    options.run = *run;
    options.strict = o->strict;
    options.allow_dangerous = o->allow_dangerous;
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
      w.key("notes").begin_array();
      for (const std::string& n : report->notes) w.value(n);
      w.end_array();
      w.key("output_bytes").value(report->stats.bytes_written);
      w.key("seconds").value(fmt::format("{:.3f}", report->stats.seconds));
      w.end_object();
      std::fputs(w.str().c_str(), stdout);
      return kExitOk;
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
    for (const std::string& n : report->notes) out += fmt::format("  note: {}\n", n);
    out += fmt::format("  wrote {} ({})\n", o->out, human_bytes(report->stats.bytes_written));
    std::fputs(out.c_str(), stderr);
    return kExitOk;
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
      w.key("notes").begin_array();
      for (const std::string& n : report->notes) w.value(n);
      w.end_array();
      w.key("output_bytes").value(report->stats.bytes_written);
      w.key("seconds").value(fmt::format("{:.3f}", report->stats.seconds));
      w.end_object();
      std::fputs(w.str().c_str(), stdout);
      return kExitOk;
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
    for (const std::string& n : report->notes) out += fmt::format("  note: {}\n", n);
    out += fmt::format("  wrote {} ({})\n", o->out, human_bytes(report->stats.bytes_written));
    std::fputs(out.c_str(), stderr);
    return kExitOk;
  };
}

}  // namespace

Runner setup_lora(CLI::App& sub) {
  sub.require_subcommand(1);
  auto* bake = sub.add_subcommand("bake", "add LoRAs to a base model's weights, streamed");
  Runner bake_run = setup_bake(*bake);
  auto* convert = sub.add_subcommand(
      "convert", "write a LoRA in another format's names (kohya, diffusers, peft)");
  Runner convert_run = setup_convert_lora(*convert);
  return [bake, bake_run, convert, convert_run] {
    if (bake->parsed()) return bake_run();
    if (convert->parsed()) return convert_run();
    return kExitError;
  };
}

}  // namespace ckptkit::cli
