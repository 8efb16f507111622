// `ckptkit convert IN -o OUT [--dtype D]` — streaming rewrite, optionally changing precision;
// `convert MODEL -o DIR --to diffusers` and `convert DIR -o MODEL.safetensors` between a single
// file and a diffusers folder.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "ckptkit/ops.h"
#include "ckptkit/reader.h"
#include "ckptkit/scan.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "cli/scan_report.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {
namespace {

int print_folder_report(const ReshapeReport& r, bool quiet, bool json) {
  if (json) {
    print_out(reshape_report_json(r));
    return kExitOk;
  }
  if (quiet) return kExitOk;
  std::string out = fmt::format("converted {} ({}) in {:.2f} s\n", r.architecture,
                                r.family.empty() ? "no family" : r.family, r.stats.seconds);
  for (const WrittenFile& o : r.outputs)
    out += fmt::format("  wrote {:<12} {}  ({}{})\n", o.part, o.path, human_bytes(o.bytes),
                       o.tensors ? fmt::format(", {} tensors", o.tensors) : "");
  for (const DroppedGroup& d : r.dropped) {
    const bool kept = d.what == "kept_in_extra_file";
    out += fmt::format("  {} {}: {} tensors, {}{}\n", kept ? "kept" : "left out",
                       kept ? "in ckptkit_extra.safetensors (no place in a diffusers folder; "
                              "the reverse conversion restores them)"
                            : d.what,
                       d.tensors, human_bytes(d.bytes),
                       d.names.empty() ? "" : fmt::format(" (first: {})", d.names.front()));
  }
  for (const std::string& n : r.notes) out += fmt::format("  note: {}\n", n);
  std::fputs(out.c_str(), stderr);
  return kExitOk;
}

/// diffusers' and transformers' size strings: "10GB" is 10^10 bytes (decimal, as they count);
/// the binary forms (10G, 10GiB) and plain bytes are parse_size's.
Result<uint64_t> parse_shard_size(std::string_view text) {
  uint64_t v = 0;
  bool decimal = false;
  for (auto [unit, mult] : {std::pair<std::string_view, uint64_t>{"GB", 1'000'000'000ull},
                            {"MB", 1'000'000ull},
                            {"KB", 1'000ull},
                            {"kB", 1'000ull}})
    if (!decimal && text.size() > unit.size() && text.ends_with(unit)) {
      CKPT_ASSIGN_OR_RETURN(v, parse_size(text.substr(0, text.size() - unit.size())));
      if (v == 0) break;
      if (v > UINT64_MAX / mult)
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("--max-shard-size '{}' is too large", text));
      v *= mult;
      decimal = true;
    }
  if (!decimal) {
    CKPT_ASSIGN_OR_RETURN(v, parse_size(text));
  }
  if (v == 0) return Status(ErrorCode::kInvalidArgument, "--max-shard-size must be larger than 0");
  return v;
}

void write_counts(JsonWriter& w, std::string_view key, const std::map<std::string, uint64_t>& m) {
  w.key(key).begin_object();
  for (const auto& [k, n] : m) w.key(k).value(n);
  w.end_object();
}

/// `convert --json` of a file (not a folder): what the text report says, every count.
std::string convert_report_json(const ConvertReport& r, const std::string& out,
                                const std::optional<GgufConvertOptions>& gguf) {
  JsonWriter w;
  w.begin_object();
  w.key("output").value(out);
  w.key("input_format").value(format_name(r.format));
  w.key("tensors").value(r.stats.tensors);
  w.key("tensors_converted").value(r.tensors_cast);
  w.key("tensors_copied").value(r.tensors_copied);
  write_counts(w, "kept_not_float", r.kept_not_float);
  w.key("output_bytes").value(r.stats.bytes_written);
  w.key("seconds").value(fmt::format("{:.3f}", r.stats.seconds));
  if (r.format == FileFormat::kSafetensors || r.format == FileFormat::kGguf) {
    w.key("state_dict_key").null();
  } else {
    w.key("state_dict_key").value(r.state_dict_key);
  }
  w.key("dropped_values").value(r.dropped_values);
  w.key("other_entries").value(r.other_entries);
  w.key("tensors_materialized").value(r.tensors_materialized);
  if (r.verdict) {
    w.key("verdict").value(verdict_name(*r.verdict));
  } else {
    w.key("verdict").null();
  }
  if (gguf) {
    w.key("gguf").begin_object();
    w.key("target").value(gguf->target);
    w.key("quant").value(gguf->quant);
    w.key("architecture").value(r.gguf_architecture);
    write_counts(w, "types", r.gguf_types);
    w.key("reshaped").value(r.gguf_reshaped);
    write_counts(w, "not_quantized", r.gguf_not_quantized);
    w.end_object();
  } else {
    w.key("gguf").null();
  }
  w.key("notes").begin_array();
  for (const std::string& n : r.notes) w.value(n);
  w.end_array();
  w.end_object();
  return w.str();
}

}  // namespace

Runner setup_convert(CLI::App& sub) {
  struct Opts {
    std::string in, out, dtype = "keep", quant, target = "comfyui", to, prediction, tokenizers,
                         max_shard;
    PartPaths parts;  // --to diffusers of a diffusion model given alone
    uint64_t max_header = kDefaultMaxHeaderBytes;
    bool quiet = false;
    bool json = false;
    bool allow_dangerous = false;
    WriteFlags write;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("IN", o->in, "input checkpoint (.safetensors, .ckpt, .pt, .pth, .bin, .gguf)")
      ->required();
  sub.add_option("-o,--output", o->out,
                 "output file (.safetensors, or .gguf with --quant), or the folder to create "
                 "with --to diffusers")
      ->required();
  sub.add_option("--to", o->to,
                 "diffusers: write MODEL as a diffusers folder OUT (SD1, SD2, SDXL base, SDXL "
                 "refiner, FLUX.1 dev/schnell). A folder as IN is converted back to a single "
                 "file without this flag")
      ->check(CLI::IsMember({"diffusers"}));
  sub.add_option("--prediction-type", o->prediction,
                 "with --to diffusers: the scheduler's prediction_type, epsilon or v_prediction "
                 "(default: from the file's metadata or v_pred marker, else the family's usual: "
                 "v_prediction for SD2, epsilon otherwise)")
      ->check(CLI::IsMember({"epsilon", "v_prediction"}));
  sub.add_option("--tokenizers-from", o->tokenizers,
                 "with --to diffusers: copy tokenizer/ (and tokenizer_2/) from this diffusers "
                 "folder (weights cannot give a tokenizer; without it none is written)");
  sub.add_option("--max-shard-size", o->max_shard,
                 "with --to diffusers: write a part's weights larger than this as shards with an "
                 "index (10GB, 500MB: decimal, as diffusers counts; 2G, 512M: binary; default: "
                 "10GB for unet/transformer/vae, 5GB for text encoders, the libraries' own)");
  sub.add_option("--clip-l", o->parts.clip_l,
                 "with --to diffusers: the CLIP-L part file for a diffusion model given alone "
                 "(a FLUX or SD3 transformer, as ComfyUI loads them)");
  sub.add_option("--clip-g", o->parts.clip_g, "with --to diffusers: the CLIP-G part file");
  sub.add_option("--t5xxl", o->parts.t5xxl, "with --to diffusers: the T5-XXL part file");
  sub.add_option("--vae", o->parts.vae, "with --to diffusers: the VAE part file");
  sub.add_option("--quant", o->quant,
                 "write GGUF with this type: f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_k_s, q5_0, "
                 "q5_1, q4_k_m, q4_k_s, q4_0, q4_1, q3_k_m, q3_k_s, q2_k (docs/gguf.md)");
  sub.add_option("--target", o->target,
                 "GGUF for which loader: comfyui (ComfyUI-GGUF; default) or sdcpp "
                 "(stable-diffusion.cpp)")
      ->check(CLI::IsMember({"comfyui", "sdcpp"}))
      ->default_str("comfyui");
  sub.add_option("--dtype", o->dtype,
                 "precision of floating-point tensors: f16, bf16, f32, f8_e4m3, f8_e5m2 or keep")
      ->default_str("keep");
  sub.add_option("--max-header-size", o->max_header, "refuse input headers larger than this")
      ->default_val(kDefaultMaxHeaderBytes);
  sub.add_flag("-q,--quiet", o->quiet, "print nothing on success");
  sub.add_flag("--json", o->json, "print the report as JSON on stdout");
  sub.add_flag("--allow-dangerous", o->allow_dangerous,
               "convert a PyTorch file even if `scan` finds code in it (only the tensors are "
               "taken; nothing is ever run)");
  o->write.add_to(sub);
  sub.footer(
      "Integer tensors (such as CLIP's position_ids) are never cast. Rounding is to nearest\n"
      "even, bit-identical to PyTorch's tensor.to(dtype). Metadata is kept.\n\n"
      "PyTorch files (.ckpt/.pt/.pth/.bin, zip or legacy) are read without running their pickle:\n"
      "the state dict's tensors are written (views materialized in C order), everything else\n"
      "(optimizer states, callbacks, epoch counters) is dropped and counted. A file that `scan`\n"
      "calls dangerous is refused (exit 1) unless --allow-dangerous.\n\n"
      "GGUF (--quant): each tensor gets the type the target loader's own tools give it, and\n"
      "quantized blocks are bit-identical to ggml's (reference path for comfyui, the all-ones\n"
      "importance path stable-diffusion.cpp uses for sdcpp). comfyui writes the diffusion model\n"
      "alone, prefix stripped; sdcpp writes every tensor under its own name. A .gguf input is\n"
      "dequantized (exactly, to F32 unless --dtype) with its original shapes. See docs/gguf.md.\n\n"
      "Examples:\n"
      "  ckptkit convert v1-5-pruned-emaonly.ckpt -o v1-5-pruned-emaonly.safetensors\n"
      "  ckptkit convert flux1-dev.safetensors -o flux1-dev-Q8_0.gguf --quant q8_0\n"
      "  ckptkit convert sd_xl_base_1.0.safetensors -o sdxl-q4_0.gguf --quant q4_0 --target sdcpp\n"
      "  ckptkit convert flux1-dev-Q4_K_M.gguf -o flux1-dev-bf16.safetensors --dtype bf16\n"
      "  ckptkit convert model-fp32.safetensors -o model-fp16.safetensors --dtype f16\n"
      "  ckptkit convert flux1-dev.safetensors -o flux1-dev-fp8.safetensors --dtype f8_e4m3\n\n"
      "Diffusers folders (--to diffusers; a folder as IN): a single file of SD 1.x, SD 2.x,\n"
      "SDXL base or the SDXL refiner becomes model_index.json, unet/, text_encoder/ (and/or\n"
      "text_encoder_2/), vae/ with weights (metadata format: pt) and a config.json derived from\n"
      "them, and scheduler/. Renames are exact byte copies (rules: docs/models.md); what the\n"
      "folder has no place for (EMA, schedule buffers, logit_scale, SD2's last text layer, the\n"
      "file's metadata) goes into OUT/ckptkit_extra.safetensors, which diffusers ignores and the\n"
      "reverse conversion puts back, so a round trip gives back every tensor byte for byte.\n"
      "A FLUX.1 file (all-in-one or a bare transformer) becomes transformer/ (q/k/v split,\n"
      "final shift/scale swapped: byte ranges), text_encoder/, text_encoder_2/ (T5), vae/ as\n"
      "it has them. Weights above --max-shard-size (10GB, text encoders 5GB) are sharded.\n"
      "Tokenizers are copied with --tokenizers-from DIR, else not written. OUT must not exist\n"
      "(--force writes into it); the folder appears whole or not at all.\n"
      "  ckptkit convert v1-5-pruned-emaonly.safetensors -o sd15-diffusers --to diffusers\n"
      "  ckptkit convert sd15-diffusers -o v1-5-again.safetensors\n"
      "  ckptkit convert sd_xl_base_1.0.safetensors -o sdxl-diffusers --to diffusers\n"
      "  ckptkit convert v2-1_512-ema-pruned.safetensors -o sd21-base --to diffusers "
      "--prediction-type epsilon\n"
      "  ckptkit convert flux1-dev.safetensors -o flux1-dev --to diffusers\n"
      "  ckptkit convert flux1-dev-transformer.safetensors -o flux1-dev --to diffusers \\\n"
      "      --clip-l clip_l.safetensors --t5xxl t5xxl_fp16.safetensors --vae ae.safetensors");
  return [o] {
    std::error_code ec;
    const bool folder_in = std::filesystem::is_directory(o->in, ec);
    const PartPaths& p = o->parts;
    if ((!p.clip_l.empty() || !p.clip_g.empty() || !p.t5xxl.empty() || !p.vae.empty()) &&
        o->to.empty())
      return report_error(Status(ErrorCode::kInvalidArgument,
                                 "--clip-l, --clip-g, --t5xxl and --vae go with --to diffusers "
                                 "(to make one file of parts: ckptkit assemble)",
                                 o->in));
    if (folder_in || !o->to.empty()) {
      if (folder_in && !o->to.empty())
        return report_error(Status(ErrorCode::kInvalidArgument,
                                   "the input is a folder; --to diffusers converts a single "
                                   "file (a folder is converted back to a single file without "
                                   "--to)",
                                   o->in));
      if (!o->quant.empty() || o->dtype != "keep")
        return report_error(Status(ErrorCode::kInvalidArgument,
                                   "a diffusers conversion keeps every tensor as it is: "
                                   "--quant and --dtype do not apply (convert the result)",
                                   o->in));
      auto run = o->write.to_options();
      if (!run) return report_error(run.status());
      ReshapeOptions options;
      options.run = *run;
      options.limits.max_header_bytes = o->max_header;
      options.allow_dangerous = o->allow_dangerous;
      if (!folder_in) {
        if (auto rc =
                scan_gate(o->in, "convert", options.limits, o->allow_dangerous, options.verdict))
          return *rc;
      }
      if (folder_in && (!o->prediction.empty() || !o->tokenizers.empty() || !o->max_shard.empty()))
        return report_error(Status(ErrorCode::kInvalidArgument,
                                   "--prediction-type, --tokenizers-from and --max-shard-size "
                                   "apply to --to diffusers (a single file has none of them)",
                                   o->in));
      uint64_t max_shard = 0;
      if (!o->max_shard.empty()) {
        auto size = parse_shard_size(o->max_shard);
        if (!size) return report_error(size.status());
        max_shard = *size;
      }
      auto report = folder_in
                        ? diffusers_to_single(o->in, o->out, options)
                        : single_to_diffusers(o->in, o->out,
                                              {options, o->prediction, o->tokenizers, max_shard,
                                               o->parts});
      if (!report) return report_error(report.status());
      return print_folder_report(*report, o->quiet, o->json);
    }
    auto dtype = parse_dtype_flag(o->dtype);
    if (!dtype) return report_error(dtype.status());
    const bool gguf_out = o->out.size() >= 5 && o->out.compare(o->out.size() - 5, 5, ".gguf") == 0;
    if (gguf_out && o->quant.empty())
      return report_error(Status(ErrorCode::kInvalidArgument,
                                 "a .gguf output needs --quant TYPE (f16, bf16, q8_0, q4_k_m, …; "
                                 "see --help)",
                                 o->out));
    if (!o->quant.empty() && !gguf_out)
      return report_error(Status(ErrorCode::kInvalidArgument,
                                 "--quant writes GGUF: name the output OUT.gguf", o->out));
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    ConvertOptions options;
    options.dtype = *dtype;
    options.limits.max_header_bytes = o->max_header;
    options.run = *run;
    // PyTorch inputs: the safety verdict first, so a refusal comes with the reasons.
    if (auto rc = scan_gate(o->in, "convert", options.limits, o->allow_dangerous, options.verdict))
      return *rc;
    options.allow_dangerous = o->allow_dangerous;
    if (gguf_out) options.gguf = GgufConvertOptions{o->quant, o->target};
    auto report = convert_file(o->in, o->out, options);
    if (!report) return report_error(report.status());
    if (o->json) {
      print_out(convert_report_json(*report, o->out, options.gguf));
      return kExitOk;
    }
    if (!o->quiet) {
      const RunStats& s = report->stats;
      std::string kept;
      for (const auto& [dt, n] : report->kept_not_float)
        kept += fmt::format("{}{} {}", kept.empty() ? "" : ", ", n, dt);
      std::fprintf(stderr, "wrote %s: %s, %llu tensors (%llu converted, %llu copied%s) in %.2f s\n",
                   o->out.c_str(), human_bytes(s.bytes_written).c_str(),
                   static_cast<unsigned long long>(s.tensors),
                   static_cast<unsigned long long>(report->tensors_cast),
                   static_cast<unsigned long long>(report->tensors_copied),
                   kept.empty() ? "" : fmt::format("; not float, kept: {}", kept).c_str(),
                   s.seconds);
      if (options.gguf) {
        std::string types;
        for (const auto& [t, n] : report->gguf_types)
          types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, t);
        std::fprintf(
            stderr, "  GGUF for %s, architecture %s: %s%s\n", o->target.c_str(),
            report->gguf_architecture.empty() ? "(none)" : report->gguf_architecture.c_str(),
            types.c_str(),
            report->gguf_reshaped
                ? fmt::format("; {} stored as rows of 256", report->gguf_reshaped).c_str()
                : "");
        for (const auto& [why, n] : report->gguf_not_quantized)
          std::fprintf(stderr, "  not quantized: %llu (%s)\n", static_cast<unsigned long long>(n),
                       why.c_str());
        for (const std::string& note : report->notes)
          std::fprintf(stderr, "  note: %s\n", note.c_str());
      }
      if (report->format != FileFormat::kSafetensors && report->format != FileFormat::kGguf) {
        std::fprintf(
            stderr,
            "  from %s (state dict: %s); dropped: %llu non-tensor values in it, "
            "%llu other top-level entries%s\n",
            std::string(format_name(report->format)).c_str(),
            report->state_dict_key.empty() ? "top level" : report->state_dict_key.c_str(),
            static_cast<unsigned long long>(report->dropped_values),
            static_cast<unsigned long long>(report->other_entries),
            report->tensors_materialized
                ? fmt::format("; {} views materialized", report->tensors_materialized).c_str()
                : "");
      }
    }
    return kExitOk;
  };
}

}  // namespace ckptkit::cli
