// GGUF type policies (see gguf_policy.h). Sources, read for the facts (docs/gguf.md has the
// tables in prose): ComfyUI-GGUF `tools/convert.py` (handle_tensors, the reshape rule) and
// `tools/lcpp.patch` (img_tensor_get_type and the per-architecture quantize exclusions),
// stable-diffusion.cpp `src/model_loader.cpp` (tensor_should_be_converted) and llama.cpp's
// LLAMA_FTYPE numbering for general.file_type.
#include "model/gguf_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "io/errors.h"

namespace ckptkit::detail {
namespace {

// llama.cpp's LLAMA_FTYPE_* values, which general.file_type holds.
constexpr uint32_t kFtypeQ2K = 10, kFtypeQ3KM = 12, kFtypeQ4KS = 14, kFtypeQ4KM = 15,
                   kFtypeQ5KM = 17, kFtypeQ4_0 = 2, kFtypeQ5_0 = 8;

constexpr QuantScheme kSchemes[] = {
    {"f32", DType::F32, 0, 0},        {"f16", DType::F16, 0, 1},
    {"bf16", DType::BF16, 0, 32},     {"q8_0", DType::Q8_0, 0, 7},
    {"q6_k", DType::Q6_K, 0, 18},     {"q5_k_m", DType::Q5_K, 'M', 17},
    {"q5_k_s", DType::Q5_K, 'S', 16}, {"q5_0", DType::Q5_0, 0, 8},
    {"q5_1", DType::Q5_1, 0, 9},      {"q4_k_m", DType::Q4_K, 'M', 15},
    {"q4_k_s", DType::Q4_K, 'S', 14}, {"q4_0", DType::Q4_0, 0, 2},
    {"q4_1", DType::Q4_1, 0, 3},      {"q3_k_m", DType::Q3_K, 'M', 12},
    {"q3_k_s", DType::Q3_K, 'S', 11}, {"q2_k", DType::Q2_K, 0, 10},
};

bool has(std::string_view s, std::string_view part) { return s.find(part) != s.npos; }
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// A name rule of the tables below: a substring, or (leading '=') the whole name.
bool matches(std::string_view name, std::string_view rule) {
  return rule.starts_with('=') ? name == rule.substr(1) : has(name, rule);
}
bool any_match(std::string_view name, std::initializer_list<std::string_view> rules) {
  return std::any_of(rules.begin(), rules.end(),
                     [&](std::string_view r) { return matches(name, r); });
}

/// ComfyUI-GGUF's patched llama-quantize: names it never quantizes, per architecture.
bool comfy_excluded(std::string_view arch, std::string_view name) {
  if (arch == "flux")
    return any_match(
        name, {"txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."});
  if (arch == "sd1" || arch == "sdxl")
    return any_match(
        name, {"class_embedding.", "time_embedding.", "add_embedding.", "time_embed.", "label_emb.",
               "conv_in.", "conv_out.", "=input_blocks.0.0.weight", "=out.2.weight"});
  if (arch == "sd3")
    return any_match(name, {"final_layer.", "time_text_embed.", "context_embedder.", "t_embedder.",
                            "y_embedder.", "x_embedder.", "=proj_out.weight", "=pos_embed"});
  if (arch == "t5encoder") return has(name, "attn_rel_b.weight");  // llama-quantize's own rule
  return false;
}

uint64_t numel_of(const Shape& s) {
  uint64_t n = 1;
  for (uint64_t d : s) n *= d;
  return n;
}

}  // namespace

namespace {
constexpr std::pair<std::string_view, std::string_view> kT5BlockParts[] = {
    {"layer.0.SelfAttention.q.weight", "attn_q.weight"},
    {"layer.0.SelfAttention.k.weight", "attn_k.weight"},
    {"layer.0.SelfAttention.v.weight", "attn_v.weight"},
    {"layer.0.SelfAttention.o.weight", "attn_o.weight"},
    {"layer.0.SelfAttention.relative_attention_bias.weight", "attn_rel_b.weight"},
    {"layer.0.layer_norm.weight", "attn_norm.weight"},
    {"layer.1.DenseReluDense.wi_0.weight", "ffn_gate.weight"},
    {"layer.1.DenseReluDense.wi_1.weight", "ffn_up.weight"},
    {"layer.1.DenseReluDense.wo.weight", "ffn_down.weight"},
    {"layer.1.layer_norm.weight", "ffn_norm.weight"},
};

/// "N" and the rest of "<prefix>N.<rest>", or nothing.
std::optional<std::pair<std::string_view, std::string_view>> block_of(std::string_view n,
                                                                      std::string_view prefix) {
  if (!n.starts_with(prefix)) return std::nullopt;
  n.remove_prefix(prefix.size());
  const size_t dot = n.find('.');
  if (dot == 0 || dot == n.npos) return std::nullopt;
  const std::string_view index = n.substr(0, dot);
  if (index.find_first_not_of("0123456789") != index.npos) return std::nullopt;
  return std::pair{index, n.substr(dot + 1)};
}
}  // namespace

std::optional<std::string> t5_gguf_name(std::string_view n) {
  if (n == "shared.weight" || n == "encoder.embed_tokens.weight") return "token_embd.weight";
  if (n == "encoder.final_layer_norm.weight") return "enc.output_norm.weight";
  auto b = block_of(n, "encoder.block.");
  if (!b) return std::nullopt;
  for (const auto& [hf, gg] : kT5BlockParts)
    if (b->second == hf) return fmt::format("enc.blk.{}.{}", b->first, gg);
  return std::nullopt;
}

std::optional<std::string> t5_hf_name(std::string_view n) {
  if (n == "token_embd.weight") return "shared.weight";
  if (n == "enc.output_norm.weight") return "encoder.final_layer_norm.weight";
  auto b = block_of(n, "enc.blk.");
  if (!b) return std::nullopt;
  for (const auto& [hf, gg] : kT5BlockParts)
    if (b->second == gg) return fmt::format("encoder.block.{}.{}", b->first, hf);
  return std::nullopt;
}

bool uses_llama_t5_names(const Checkpoint& ck) {
  if (ck.format != FileFormat::kGguf) return false;
  const GgufKV* arch = ck.gguf.find("general.architecture");
  const std::string* s = arch ? arch->string_at(0) : nullptr;
  return s != nullptr && (*s == "t5encoder" || *s == "t5");
}

Result<const QuantScheme*> find_quant_scheme(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const QuantScheme& s : kSchemes)
    if (s.name == lower) return &s;
  return error(ErrorCode::kInvalidArgument, "unknown --quant '{}' (choose {})", name,
               quant_scheme_names());
}

std::string quant_scheme_names() {
  std::string s;
  for (const QuantScheme& q : kSchemes) s += (s.empty() ? "" : ", ") + std::string(q.name);
  return s;
}

std::string_view comfy_architecture(std::string_view family) {
  if (family == "flux") return "flux";
  if (family == "sd3") return "sd3";
  if (family == "sdxl" || family == "sdxl-refiner") return "sdxl";
  if (family == "sd1" || family == "sd2") return "sd1";
  return "";
}

GgufTensorPlan GgufPolicy::decide(std::string_view name, const Shape& shape, DType source) {
  return target_ == GgufTarget::kComfyUi ? comfy(name, shape, source) : sdcpp(name, shape, source);
}

DType GgufPolicy::comfy_mix(std::string_view name, DType type) {
  const uint32_t ft = scheme_.file_type;
  if (any_match(name, {"attn_v.weight", ".to_v.weight", ".v.weight", ".attn.w1v.weight",
                       ".attn.w2v.weight", "_attn.v_proj.weight"})) {
    if (ft == kFtypeQ2K)
      type = DType::Q3_K;
    else if (ft == kFtypeQ3KM)
      type = attention_wv_ < 2 ? DType::Q5_K : DType::Q4_K;
    else if (ft == kFtypeQ4KM || ft == kFtypeQ5KM)
      type = DType::Q6_K;
    else if (ft == kFtypeQ4KS && attention_wv_ < 4)
      type = DType::Q5_K;
    ++attention_wv_;
  } else if (any_match(name, {"attn_qkv.weight", "attn.qkv.weight", "attention.qkv.weight"})) {
    if (ft == kFtypeQ3KM)
      type = DType::Q4_K;
    else if (ft == kFtypeQ4KM)
      type = DType::Q5_K;
    else if (ft == kFtypeQ5KM)
      type = DType::Q6_K;
  } else if (has(name, "ffn_down") || (has(name, "experts.") && has(name, ".w2.weight")) ||
             any_match(name, {".ffn.2.weight", ".ff.net.2.weight", ".mlp.layer2.weight",
                              ".adaln_modulation_mlp.2.weight", ".feed_forward.w2.weight"})) {
    if (ft == kFtypeQ3KM)
      type = DType::Q4_K;
    else if (ft == kFtypeQ4KS)
      type = DType::Q5_K;
    else if (ft == kFtypeQ4KM || ft == kFtypeQ5KM)
      type = DType::Q6_K;
    else if (ft == kFtypeQ4_0)
      type = DType::Q4_1;
    else if (ft == kFtypeQ5_0)
      type = DType::Q5_1;
  }
  return type;
}

GgufTensorPlan GgufPolicy::comfy(std::string_view name, const Shape& shape, DType source) {
  GgufTensorPlan p;
  p.stored_shape = shape;
  const uint64_t n = numel_of(shape);
  // Step 1, convert.py: the storage type before quantization.
  const bool wide_source = source == DType::F32 || source == DType::BF16;
  if (!is_float(source) && !is_quantized(source)) {
    p.stage = p.stored = source;  // integer buffers pass unchanged
    p.why = "not floating point";
    return p;
  }
  if (scheme_.base == DType::F32) {
    p.stage = DType::F32;
  } else if ((wide_source || arch_ == "t5encoder") && (shape.size() <= 1 || n <= 1024)) {
    // (llama.cpp's T5 converter writes 1-D tensors as F32 whatever the source)
    p.stage = DType::F32;  // 1-D and tiny tensors: ComfyUI uses them unquantized, in F32
  } else if (source == DType::BF16 && scheme_.base != DType::F16) {
    p.stage = DType::BF16;
  } else {
    p.stage = scheme_.base == DType::BF16 ? DType::BF16 : DType::F16;
  }
  p.stored = p.stage;
  // SD1/SDXL convolutions and 320/640-wide layers: rows of 256 so that K-quants apply.
  if ((arch_ == "sd1" || arch_ == "sdxl") && shape.size() > 1 && n >= 512 && n % 256 == 0 &&
      shape.back() % 256 != 0) {
    p.stored_shape = {n / 256, 256};
    p.reshaped = true;
  }
  // Step 2, the patched llama-quantize.
  if (!is_quantized(scheme_.base)) {
    p.why = "not a quantized scheme";
    return p;
  }
  if (!ends_with(name, "weight") || p.stored_shape.size() != 2) {
    p.why = p.stored_shape.size() != 2 ? "only 2-D weights are quantized" : "not a weight";
    return p;
  }
  if (has(name, "_norm.weight") || comfy_excluded(arch_, name)) {
    p.why = "kept at full precision for this architecture";
    return p;
  }
  const DType type = comfy_mix(name, scheme_.base);
  const uint64_t row = p.stored_shape.back();
  if (row % dtype_info(type).block != 0) {
    p.stored = DType::F16;  // the patch's fallback (a K-quant on rows not a multiple of 256)
    p.why = "rows not a multiple of the block: F16";
    return p;
  }
  p.stored = type;
  p.quantized = true;
  return p;
}

GgufTensorPlan GgufPolicy::sdcpp(std::string_view name, const Shape& shape, DType source) const {
  GgufTensorPlan p;
  p.stage = p.stored = source;
  p.stored_shape = shape;
  if (!is_float(source) && !is_quantized(source)) {
    p.why = "not floating point";
    return p;
  }
  const DType type = scheme_.base;
  const uint64_t row = shape.empty() ? 1 : shape.back();
  if (is_quantized(type) && row % dtype_info(type).block != 0) {
    p.why = "rows not a multiple of the block: kept";
    return p;
  }
  if (ends_with(name, ".bias") || ends_with(name, ".scale") || ends_with(name, ".weight_scale") ||
      has(name, "embedding") ||
      any_match(name, {"img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.",
                       "final_layer.", "x_embedder.", "t_embedder.", "y_embedder.", "pos_embed",
                       "context_embedder.", "time_embed.", "label_emb."})) {
    p.why = "stable-diffusion.cpp keeps it in its source type";
    return p;
  }
  p.stored = type;
  p.quantized = is_quantized(type);
  return p;
}

}  // namespace ckptkit::detail
