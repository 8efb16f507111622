// `ckptkit split | assemble | swap | prune` — move between monolithic and modular files.
#include <fmt/format.h>

#include <cstdio>

#include "ckptkit/ops.h"
#include "ckptkit/scan.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "cli/scan_report.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {
namespace {

/// Flags every reshaping command shares.
struct ReshapeFlags {
  bool json = false;
  bool quiet = false;
  bool allow_dangerous = false;
  std::string title;
  uint64_t max_header = kDefaultMaxHeaderBytes;
  WriteFlags write;

  void add_to(CLI::App& sub) {
    sub.add_flag("--json", json, "print the report as JSON on stdout");
    sub.add_flag("-q,--quiet", quiet, "print nothing on success");
    sub.add_option("--title", title, "modelspec.title of the output (default: the input's)");
    sub.add_flag("--allow-dangerous", allow_dangerous,
                 "read a PyTorch file even if `scan` finds code in it (only the tensors are "
                 "taken; nothing is ever run)");
    sub.add_option("--max-header-size", max_header, "refuse input headers larger than this")
        ->default_val(kDefaultMaxHeaderBytes);
    write.add_to(sub);
  }

  Result<ReshapeOptions> to_options() const {
    ReshapeOptions o;
    CKPT_ASSIGN_OR_RETURN(o.run, write.to_options());
    o.limits.max_header_bytes = max_header;
    o.allow_dangerous = allow_dangerous;
    o.title = title;
    return o;
  }
};

}  // namespace

std::string reshape_report_json(const ReshapeReport& r) {
  JsonWriter w;
  w.begin_object();
  w.key("architecture").value(r.architecture);
  w.key("family").value(r.family);
  w.key("outputs").begin_array();
  for (const WrittenFile& o : r.outputs) {
    w.begin_object();
    w.key("path").value(o.path);
    w.key("part").value(o.part);
    w.key("tensors").value(o.tensors);
    w.key("bytes").value(o.bytes);
    w.end_object();
  }
  w.end_array();
  w.key("dropped").begin_array();
  for (const DroppedGroup& d : r.dropped) {
    w.begin_object();
    w.key("what").value(d.what);
    w.key("tensors").value(d.tensors);
    w.key("bytes").value(d.bytes);
    w.key("names").begin_array();
    for (const std::string& n : d.names) w.value(n);
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.key("notes").begin_array();
  for (const std::string& n : r.notes) w.value(n);
  w.end_array();
  w.key("input_bytes").value(r.input_bytes);
  w.key("output_bytes").value(r.stats.bytes_written);
  w.key("seconds").value(fmt::format("{:.3f}", r.stats.seconds));
  w.end_object();
  return w.str();
}

namespace {

int print_report(const ReshapeReport& r, const ReshapeFlags& f, std::string_view verb) {
  if (f.json) {
    print_out(reshape_report_json(r));
    return kExitOk;
  }
  if (f.quiet) return kExitOk;
  std::string out = fmt::format(
      "{} {} ({}{}) in {:.2f} s\n", verb, r.architecture, r.family.empty() ? "no family" : r.family,
      r.outputs.size() > 1 ? fmt::format(", {} files", r.outputs.size()) : "", r.stats.seconds);
  for (const WrittenFile& o : r.outputs)
    out += fmt::format("  wrote {:<16} {}  ({}, {} tensors)\n", o.part, o.path,
                       human_bytes(o.bytes), o.tensors);
  uint64_t dropped = 0;
  for (const DroppedGroup& d : r.dropped) {
    out += fmt::format("  left out {}: {} tensors, {}{}\n", d.what, d.tensors, human_bytes(d.bytes),
                       d.names.empty() ? "" : fmt::format(" (first: {})", d.names.front()));
    dropped += d.bytes;
  }
  for (const std::string& n : r.notes) out += fmt::format("  note: {}\n", n);
  if (verb == "pruned" && r.input_bytes > r.stats.bytes_written)
    out += fmt::format("  saved {} ({} → {})\n", human_bytes(r.input_bytes - r.stats.bytes_written),
                       human_bytes(r.input_bytes), human_bytes(r.stats.bytes_written));
  (void)dropped;
  std::fputs(out.c_str(), stderr);
  return kExitOk;
}

void add_part_flags(CLI::App& sub, PartPaths& p, bool with_denoiser) {
  if (with_denoiser)
    sub.add_option("--diffusion-model,--unet", p.diffusion_model,
                   "the UNet/DiT (a standalone file, or a monolithic one to take it from)")
        ->required();
  sub.add_option("--clip-l", p.clip_l, "CLIP-L text encoder (SD1, SDXL, SD3, FLUX)");
  sub.add_option("--clip-g", p.clip_g, "CLIP-G text encoder (SDXL, SD3)");
  sub.add_option("--clip-h", p.clip_h, "OpenCLIP-H text encoder (SD2)");
  sub.add_option("--t5xxl", p.t5xxl, "T5-XXL text encoder (SD3, FLUX)");
  sub.add_option("--vae", p.vae, "VAE (4-channel for SD1/SD2/SDXL, 16-channel for SD3/FLUX)");
}

}  // namespace

Runner setup_split(CLI::App& sub) {
  struct Opts {
    std::string in, dir, name, quant, target = "comfyui";
    ReshapeFlags flags;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("IN", o->in, "monolithic checkpoint (.safetensors, .ckpt, .gguf, …)")->required();
  sub.add_option("-o,--output", o->dir, "output folder (ComfyUI's models/ folder works)")
      ->required();
  sub.add_option("--name", o->name, "base of the part file names (default: IN's file name)");
  sub.add_option("--quant", o->quant,
                 "write the diffusion model and a T5-XXL as GGUF of this type (q8_0, q4_k_m, …, "
                 "as convert --quant; docs/gguf.md); CLIP and the VAE stay safetensors");
  sub.add_option("--target", o->target,
                 "with --quant: GGUF for comfyui (ComfyUI-GGUF; default) or sdcpp "
                 "(stable-diffusion.cpp)")
      ->check(CLI::IsMember({"comfyui", "sdcpp"}))
      ->default_str("comfyui");
  o->flags.add_to(sub);
  sub.footer(
      "Writes each part under its ComfyUI folder:\n"
      "  DIR/diffusion_models/NAME.safetensors       UNet/DiT, bare LDM/BFL names\n"
      "  DIR/text_encoders/NAME-clip_l.safetensors   CLIP text encoders in HF text_model.* names\n"
      "  DIR/text_encoders/NAME-clip_g.safetensors   (SDXL's OpenCLIP-G and SD2's OpenCLIP-H are\n"
      "  DIR/text_encoders/NAME-t5xxl.safetensors     converted exactly: in_proj split into "
      "q/k/v)\n"
      "  DIR/vae/NAME-vae.safetensors                bare encoder.*/decoder.* names\n"
      "ComfyUI's UNETLoader/CLIPLoader/VAELoader load these parts for every family;\n"
      "stable-diffusion.cpp loads SD3 and FLUX parts, but SD1/SD2/SDXL only as a single file\n"
      "(ckptkit assemble makes one). Which loader takes which files: docs/models.md, \"Which\n"
      "loader takes which files\". Renamed tensors are copied byte for byte. EMA copies and\n"
      "training buffers belong to no part and are left out (reported).\n\n"
      "With --quant TYPE the diffusion model becomes diffusion_models/NAME-TYPE.gguf and a\n"
      "T5-XXL text_encoders/NAME-t5xxl-TYPE.gguf (llama.cpp's T5 names), each quantized exactly\n"
      "as `convert --quant TYPE --target …` would; ComfyUI-GGUF's Unet/CLIP loaders and\n"
      "stable-diffusion.cpp's --diffusion-model/--t5xxl read them. A quantized .gguf input is\n"
      "dequantized exactly (to F32) wherever a safetensors part must hold it.\n\n"
      "Examples:\n"
      "  ckptkit split sd_xl_base_1.0.safetensors -o ComfyUI/models\n"
      "  ckptkit split flux1-dev-fp8.safetensors -o parts --name flux1-dev\n"
      "  ckptkit split sd3_medium_incl_clips_t5xxlfp16.safetensors -o ComfyUI/models --quant q8_0");
  return [o] {
    auto common = o->flags.to_options();
    if (!common) return report_error(common.status());
    if (auto rc =
            scan_gate(o->in, "split", common->limits, common->allow_dangerous, common->verdict))
      return *rc;
    SplitOptions options;
    options.common = *common;
    options.name = o->name;
    if (!o->quant.empty())
      options.gguf = GgufConvertOptions{o->quant, o->target};
    else if (o->target != "comfyui")
      return report_error(
          Status(ErrorCode::kInvalidArgument, "--target chooses a GGUF loader: it needs --quant"));
    options.common.run.label = "splitting";
    auto report = split_file(o->in, o->dir, options);
    if (!report) return report_error(report.status());
    return print_report(*report, o->flags, "split");
  };
}

Runner setup_assemble(CLI::App& sub) {
  struct Opts {
    PartPaths parts;
    std::string out;
    bool allow_missing = false;
    ReshapeFlags flags;
  };
  auto o = std::make_shared<Opts>();
  add_part_flags(sub, o->parts, true);
  sub.add_option("-o,--output", o->out, "output file (.safetensors)")->required();
  sub.add_flag("--allow-missing", o->allow_missing,
               "write the file even if a part the family needs is not given");
  o->flags.add_to(sub);
  sub.footer(
      "The architecture comes from the diffusion model; the file is written in its family's\n"
      "standard single-file layout (SD1/SD2 LDM, SDXL SGM, SD3/FLUX all-in-one), which A1111,\n"
      "Forge and ComfyUI's checkpoint loader read. A part the family does not use (a CLIP-G for\n"
      "SD1), a VAE with the wrong latent (16-channel for SDXL) or a file that holds no such part\n"
      "is refused with the reason, before anything is written.\n\n"
      "Examples:\n"
      "  ckptkit assemble --unet parts/diffusion_models/sdxl.safetensors \\\n"
      "      --clip-l parts/text_encoders/sdxl-clip_l.safetensors \\\n"
      "      --clip-g parts/text_encoders/sdxl-clip_g.safetensors \\\n"
      "      --vae sdxl_vae.safetensors -o sdxl-fixed-vae.safetensors\n"
      "  ckptkit assemble --unet flux1-dev.safetensors --clip-l clip_l.safetensors \\\n"
      "      --t5xxl t5xxl_fp16.safetensors --vae ae.safetensors -o flux1-dev-aio.safetensors");
  return [o] {
    auto common = o->flags.to_options();
    if (!common) return report_error(common.status());
    if (auto rc = scan_gate(o->parts.diffusion_model, "assemble", common->limits,
                            common->allow_dangerous, common->verdict))
      return *rc;
    AssembleOptions options;
    options.common = *common;
    options.allow_missing = o->allow_missing;
    auto report = assemble_files(o->parts, o->out, options);
    if (!report) return report_error(report.status());
    return print_report(*report, o->flags, "assembled");
  };
}

Runner setup_swap(CLI::App& sub) {
  struct Opts {
    std::string in, out;
    PartPaths parts;
    ReshapeFlags flags;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("IN", o->in, "monolithic checkpoint")->required();
  add_part_flags(sub, o->parts, false);
  sub.add_option("-o,--output", o->out, "output file (.safetensors)")->required();
  o->flags.add_to(sub);
  sub.footer(
      "Replaces parts of a single-file model with the same checks as `assemble`; everything\n"
      "else (the diffusion model, EMA, markers) is copied unchanged. A part file may be a\n"
      "standalone part or another single-file model to take the part from.\n\n"
      "Examples:\n"
      "  ckptkit swap my-sdxl-merge.safetensors --vae sdxl_vae.safetensors -o fixed.safetensors\n"
      "  ckptkit swap sd15-finetune.ckpt --vae vae-ft-mse-840000-ema-pruned.safetensors \\\n"
      "      -o sd15-finetune-mse.safetensors");
  return [o] {
    auto common = o->flags.to_options();
    if (!common) return report_error(common.status());
    if (auto rc = scan_gate(o->in, "swap parts of", common->limits, common->allow_dangerous,
                            common->verdict))
      return *rc;
    AssembleOptions options;
    options.common = *common;
    auto report = swap_parts(o->in, o->parts, o->out, options);
    if (!report) return report_error(report.status());
    return print_report(*report, o->flags, "swapped parts of");
  };
}

Runner setup_prune(CLI::App& sub) {
  struct Opts {
    std::string in, out, ema = "drop", dtype = "keep";
    bool drop_extras = false, keep_extras = false;
    ReshapeFlags flags;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("IN", o->in, "checkpoint")->required();
  sub.add_option("-o,--output", o->out, "output file (.safetensors)")->required();
  sub.add_option("--ema", o->ema,
                 "EMA copy (model_ema.*): drop it, keep it, or use its weights in place of "
                 "the diffusion model's")
      ->check(CLI::IsMember({"drop", "keep", "use"}))
      ->default_str("drop");
  sub.add_flag("--drop-training-extras", o->drop_extras,
               "drop DDPM schedule buffers, logvar and EMA counters (the default)");
  sub.add_flag("--keep-training-extras", o->keep_extras, "keep them");
  sub.add_option("--dtype", o->dtype, "also cast floating-point tensors: f16, bf16, f32 or keep")
      ->default_str("keep");
  o->flags.add_to(sub);
  sub.footer(
      "What a pruned model keeps: the diffusion model, text encoders, VAE and the sampling\n"
      "markers loaders read (v_pred, ztsnr, edm_*). Unknown tensors are kept too (inspect lists\n"
      "them). The report says what was left out and the bytes saved.\n\n"
      "Examples:\n"
      "  ckptkit prune v1-5-pruned.ckpt -o v1-5-pruned-emaonly.safetensors --ema use\n"
      "  ckptkit prune merge.safetensors -o merge-fp16.safetensors --dtype f16");
  return [o] {
    auto common = o->flags.to_options();
    if (!common) return report_error(common.status());
    if (o->drop_extras && o->keep_extras)
      return report_error(Status(ErrorCode::kInvalidArgument,
                                 "--drop-training-extras and --keep-training-extras conflict"));
    auto dtype = parse_dtype_flag(o->dtype);
    if (!dtype) return report_error(dtype.status());
    if (auto rc =
            scan_gate(o->in, "prune", common->limits, common->allow_dangerous, common->verdict))
      return *rc;
    PruneOptions options;
    options.common = *common;
    options.ema = o->ema == "keep"  ? EmaMode::kKeep
                  : o->ema == "use" ? EmaMode::kUse
                                    : EmaMode::kDrop;
    options.keep_training_extras = o->keep_extras;
    options.dtype = *dtype;
    auto report = prune_file(o->in, o->out, options);
    if (!report) return report_error(report.status());
    return print_report(*report, o->flags, "pruned");
  };
}

}  // namespace ckptkit::cli
