// convert to GGUF: a plan whose producers copy, cast or quantize each tensor as the target
// loader's own tool chain would (model/gguf_policy.h), written through the one executor.
#include <fmt/format.h>

#include <map>
#include <optional>

#include "ckptkit/anatomy.h"
#include "ckptkit/gguf.h"
#include "ckptkit/ops.h"
#include "io/errors.h"
#include "model/gguf_policy.h"
#include "ops/input.h"
#include "ops/parts.h"
#include "pipeline/plan.h"

namespace ckptkit::detail {

namespace {

/// The metadata a source file carries that a GGUF should keep: ModelSpec's keys.
void copy_modelspec(const Checkpoint& ck, std::vector<GgufKV>& kv) {
  for (const auto& [k, v] : ck.metadata)
    if (k.starts_with("modelspec.")) kv.push_back(gguf_kv(k, v));
}

/// The T5 hyperparameters llama.cpp's converter records, read from the shapes (T5 v1.1 XXL:
/// width 4096, 24 blocks, feed-forward 10240, 64 heads, 32 relative-position buckets).
void add_t5_hparams(const std::vector<std::pair<const TensorInfo*, std::string>>& tensors,
                    std::vector<GgufKV>& kv) {
  uint32_t width = 0, blocks = 0, ff = 0, heads = 0, buckets = 0;
  for (const auto& [t, name] : tensors) {
    if (t->shape.size() != 2) continue;
    if (name == "token_embd.weight") width = static_cast<uint32_t>(t->shape[1]);
    if (name.ends_with(".ffn_up.weight")) ff = static_cast<uint32_t>(t->shape[0]);
    if (name.ends_with(".attn_rel_b.weight")) {
      buckets = static_cast<uint32_t>(t->shape[0]);
      heads = static_cast<uint32_t>(t->shape[1]);
    }
    if (name.ends_with(".attn_q.weight")) ++blocks;
  }
  kv.push_back(gguf_kv("t5encoder.context_length", uint32_t{512}));
  if (width) kv.push_back(gguf_kv("t5encoder.embedding_length", width));
  if (ff) kv.push_back(gguf_kv("t5encoder.feed_forward_length", ff));
  if (blocks) kv.push_back(gguf_kv("t5encoder.block_count", blocks));
  if (heads) kv.push_back(gguf_kv("t5encoder.attention.head_count", heads));
  if (buckets) kv.push_back(gguf_kv("t5encoder.attention.relative_buckets_count", buckets));
  kv.push_back(gguf_kv("t5encoder.attention.layer_norm_epsilon", 1e-6f));
}

}  // namespace

Result<Plan> gguf_plan(const OpenedInput& in, const Anatomy& a, const GgufSource& source,
                       const GgufConvertOptions& go, const std::string& in_path,
                       ConvertReport& report, const ProducerOverride* override) {
  CKPT_ASSIGN_OR_RETURN(const QuantScheme* scheme, find_quant_scheme(go.quant));
  GgufTarget target;
  if (go.target == "comfyui")
    target = GgufTarget::kComfyUi;
  else if (go.target == "sdcpp")
    target = GgufTarget::kSdcpp;
  else
    return error(ErrorCode::kInvalidArgument, "unknown --target '{}' (choose comfyui or sdcpp)",
                 go.target);
  const Checkpoint& ck = in.checkpoint();
  std::string arch(comfy_architecture(a.family));
  if (source.t5) arch = "t5encoder";  // llama.cpp's name, which both loaders accept
  report.gguf_architecture = arch;

  // Which tensors, under which names.
  std::vector<std::pair<const TensorInfo*, std::string>> chosen;
  if (source.t5) {
    // A T5-XXL encoder: the names llama.cpp's converter writes (token_embd, enc.blk.N.attn_q,
    // …), which ComfyUI-GGUF's and stable-diffusion.cpp's T5 loaders both map back.
    const Component& t5 = *source.component;
    bool have_embedding = false;
    for (size_t i : t5.tensors) {
      const TensorInfo& t = ck.tensors[i];
      const std::string bare = component_local_name(t5, t.name);
      if (bare == "logit_scale") {
        // A monolithic SD3 file's CLIP-style scalar beside the encoder: no T5 weight.
        report.notes.push_back("logit_scale left out: not a T5 weight (no loader reads it)");
        continue;
      }
      std::optional<std::string> name = t5_gguf_name(bare);
      if (name && *name == "token_embd.weight") {
        if (have_embedding) {
          report.notes.push_back(fmt::format(
              "{} left out: a copy of the shared token embedding (llama.cpp keeps one)", bare));
          continue;
        }
        have_embedding = true;
      }
      if (!name) report.notes.push_back(fmt::format("{} has no llama.cpp T5 name: kept", bare));
      chosen.emplace_back(&t, name ? *name : bare);
    }
  } else if (source.component != nullptr) {
    // A diffusion model on its own: its single-file prefix stripped, the names ComfyUI's UNet
    // loader detects and stable-diffusion.cpp's --diffusion-model prefixes again.
    const Component& dm = *source.component;
    for (size_t i : dm.tensors)
      chosen.emplace_back(&ck.tensors[i], ck.tensors[i].name.substr(dm.prefix.size()));
  } else {
    for (const TensorInfo& t : ck.tensors) chosen.emplace_back(&t, t.name);
  }
  if (arch.empty())
    report.notes.push_back(
        a.family.empty()
            ? "architecture not recognized: the generic policy was used (no per-architecture "
              "exclusions, no general.architecture)"
            : fmt::format("{} has no GGUF architecture name: the generic policy was used",
                          a.family));

  GgufPolicy policy(target, *scheme, arch);
  const QuantPath path =
      target == GgufTarget::kComfyUi ? QuantPath::kReference : QuantPath::kUnitImportance;
  Plan plan;
  in.add_inputs(plan);
  plan.format = OutputFormat::kGguf;
  plan.gguf_options.name_limit = target == GgufTarget::kComfyUi ? 128 : 160;
  if (!arch.empty()) plan.gguf_kv.push_back(gguf_kv("general.architecture", arch));
  plan.gguf_kv.push_back(gguf_kv("general.quantization_version", uint32_t{2}));
  plan.gguf_kv.push_back(gguf_kv("general.file_type", scheme->file_type));
  if (source.t5) add_t5_hparams(chosen, plan.gguf_kv);
  std::vector<GgufKV> shapes;
  for (const auto& [t, name] : chosen) {
    const GgufTensorPlan p = policy.decide(name, t->shape, t->dtype);
    PlannedTensor out{name, p.stored, t->shape, nullptr};
    std::unique_ptr<TensorProducer> replaced;
    const bool computable = is_float(p.stored) || is_quantized(p.stored);
    if (override && computable) replaced = (*override)(*t, p.quantized ? DType::F32 : p.stored);
    if (p.quantized) {
      // A tensor already in the first step's type is not rounded again: the second step
      // reads that file's values as they are (NaN payloads included). New values are.
      const DType stage = p.stage == t->dtype && !replaced ? DType::F32 : p.stage;
      out.producer = make_quantize_producer(
          replaced ? std::move(replaced) : in.producer(*t, DType::F32), stage, p.stored, path,
          p.stored_shape.empty() ? 1 : p.stored_shape.back());
    } else if (!computable) {
      out.producer = in.producer(*t, t->dtype);
    } else {
      out.producer = replaced ? std::move(replaced) : in.producer(*t, p.stored);
    }
    if (p.reshaped) {
      out.gguf_ne.assign(p.stored_shape.rbegin(), p.stored_shape.rend());
      CKPT_ASSIGN_OR_RETURN(GgufKV kv, gguf_orig_shape_kv(name, t->shape));
      shapes.push_back(std::move(kv));
      ++report.gguf_reshaped;
    }
    if (!p.quantized && !p.why.empty()) ++report.gguf_not_quantized[std::string(p.why)];
    ++report.gguf_types[std::string(dtype_name(p.stored))];
    if (p.stored == t->dtype)
      ++report.tensors_copied;
    else
      ++report.tensors_cast;
    plan.tensors.push_back(std::move(out));
  }
  for (GgufKV& kv : shapes) plan.gguf_kv.push_back(std::move(kv));
  copy_modelspec(ck, plan.gguf_kv);
  plan.gguf_kv.push_back(gguf_kv("ckptkit.source", std::string(file_stem(in_path))));
  plan.gguf_kv.push_back(gguf_kv(
      "ckptkit.quantization",
      fmt::format("{} --target {} ({} path)", scheme->name, go.target,
                  path == QuantPath::kReference ? "ggml reference"
                                                : "ggml with an all-ones importance matrix")));
  return plan;
}

GgufSource gguf_source(const Anatomy& a, const Checkpoint& ck, const GgufConvertOptions& go,
                       ConvertReport& report) {
  GgufSource source;
  const Component* dm = a.find(Role::kDiffusionModel);
  if (dm == nullptr) {
    source.component = a.find(PartKind::kT5xxl);
    source.t5 = source.component != nullptr;
  } else if (go.target == "comfyui") {
    source.component = dm;
    if (dm->tensors.size() < ck.tensors.size())
      report.notes.push_back(fmt::format(
          "only the diffusion model is written ({} of {} tensors): ComfyUI loads text encoders "
          "and the VAE from their own files (ckptkit split --quant)",
          dm->tensors.size(), ck.tensors.size()));
  }
  return source;
}

Result<ConvertReport> convert_to_gguf(OpenedInput& in, const std::string& in_path,
                                      const std::string& out_path, const ConvertOptions& options,
                                      ConvertReport report) {
  const Checkpoint& ck = in.checkpoint();
  const Anatomy a = analyze(ck, &in.file());
  if (a.layout == "lora")
    return Status(ErrorCode::kInvalidArgument,
                  "this is a LoRA; GGUF files hold models (bake it into its base first)", in_path);
  // ComfyUI-GGUF's UNet loader takes the diffusion model alone with its single-file prefix
  // stripped; stable-diffusion.cpp takes the file as it is. A file with no diffusion model but
  // a T5-XXL is that encoder.
  const GgufSource source = gguf_source(a, ck, *options.gguf, report);
  CKPT_ASSIGN_OR_RETURN(Plan plan, gguf_plan(in, a, source, *options.gguf, in_path, report));
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "quantizing";
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
  return report;
}

}  // namespace ckptkit::detail
