// `ckptkit lora bake` — apply LoRAs to a base model (docs/lora.md).
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

}  // namespace

Runner setup_lora(CLI::App& sub) {
  sub.require_subcommand(1);
  auto* bake = sub.add_subcommand("bake", "add LoRAs to a base model's weights, streamed");
  Runner bake_run = setup_bake(*bake);
  return [bake, bake_run] {
    if (bake->parsed()) return bake_run();
    return kExitError;
  };
}

}  // namespace ckptkit::cli
