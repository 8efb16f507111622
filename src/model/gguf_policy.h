// Which type each tensor gets in a GGUF file, per target loader. Model knowledge as tables
// (gguf_policy.cc), used by `convert --quant` and documented in docs/gguf.md.
//
// Two targets, each reproducing the tool chain its users run today, so that a file ckptkit
// writes holds the same types (and, with the same quantizer path, the same bytes):
//
// * comfyui — ComfyUI-GGUF's two steps: `tools/convert.py` (BF16 stays BF16, everything else
//   becomes F16; from an F32 or BF16 source, 1-D tensors, tensors of at most 1,024 elements and
//   the architecture's high-precision names stay F32; SD1/SDXL tensors whose last dimension is
//   not a multiple of 256 are stored as (n/256, 256) with the original shape in
//   `comfy.gguf.orig_shape.<name>`), then its patched `llama-quantize` (only 2-D tensors whose
//   name ends in `weight` and that the architecture does not exclude are quantized; the _S/_M
//   mixes raise V projections, fused qkv and FFN-down layers; a K-quant on rows that are not a
//   multiple of 256 falls back to F16). Quantization uses ggml's reference path (no
//   importance matrix) on the F16/BF16 values of the first step.
// * sdcpp — stable-diffusion.cpp's `convert`: true shapes, one type for every tensor it
//   converts, and its skip rules (rows that are not a multiple of the block, biases, scales,
//   embeddings, the per-architecture input and output layers keep their source type).
//   Quantization uses the path with an all-ones importance matrix, from the source values.
//
// Thread safety: GgufPolicy is not (it counts tensors as llama-quantize does); the tables are
// immutable.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ckptkit/dtype.h"
#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit::detail {

enum class GgufTarget : uint8_t { kComfyUi, kSdcpp };

/// A `--quant` name: the type most tensors get and the mix around it.
struct QuantScheme {
  std::string_view name;  ///< q4_k_m, q8_0, f16, …
  DType base;             ///< the type of an ordinary tensor
  char mix;               ///< 'S', 'M' or 0 (K-quant mixes; also 'L' reserved)
  uint32_t file_type;     ///< general.file_type (llama.cpp's LLAMA_FTYPE_*)
};

/// The scheme named `name` (case-insensitive), or an error listing the valid names.
Result<const QuantScheme*> find_quant_scheme(std::string_view name);
/// "f32, f16, bf16, q8_0, …" for messages and --help.
std::string quant_scheme_names();

/// ComfyUI-GGUF's `general.architecture` for an anatomy family ("" when it has none): flux,
/// sd3, sdxl, sd1 (SD2 shares SD1's key names and is told apart by shapes).
std::string_view comfy_architecture(std::string_view family);

/// The name llama.cpp's T5 converter gives a Hugging Face T5 encoder tensor (`shared.weight` and
/// `encoder.embed_tokens.weight` both → `token_embd.weight`; `encoder.block.N.layer.0.
/// SelfAttention.q.weight` → `enc.blk.N.attn_q.weight`, …), which ComfyUI-GGUF's and
/// stable-diffusion.cpp's T5 loaders map back; nullopt for a name it has no rule for.
std::optional<std::string> t5_gguf_name(std::string_view hf_name);

/// The inverse: a llama.cpp T5 name back to its Hugging Face name (`token_embd.weight` →
/// `shared.weight`), nullopt for any other name.
std::optional<std::string> t5_hf_name(std::string_view gguf_name);

/// Whether a GGUF file's tensors use llama.cpp's T5 names (general.architecture t5 or
/// t5encoder): ckptkit then reads them under their Hugging Face names.
bool uses_llama_t5_names(const Checkpoint& ck);

/// What one tensor becomes.
struct GgufTensorPlan {
  DType stage = DType::F32;   ///< comfyui: the first step's type (what quantization starts from)
  DType stored = DType::F32;  ///< the type written
  Shape stored_shape;         ///< as written (torch order); differs when reshaped
  bool reshaped = false;      ///< comfy.gguf.orig_shape.<name> records the original shape
  bool quantized = false;     ///< stored is a block type made by the quantizer
  std::string_view why;       ///< a short reason when the tensor was not quantized
};

class GgufPolicy {
 public:
  /// `arch`: comfy_architecture() of the model ("" for an unknown model: the generic policy).
  GgufPolicy(GgufTarget target, const QuantScheme& scheme, std::string_view arch)
      : target_(target), scheme_(scheme), arch_(arch) {}

  /// The plan for tensor `name` (the name as written, without the single-file prefix) of
  /// torch shape `shape` and source type `source`. Call in the order the tensors are written:
  /// the _S/_M mixes count V projections as llama-quantize does.
  GgufTensorPlan decide(std::string_view name, const Shape& shape, DType source);

 private:
  GgufTensorPlan comfy(std::string_view name, const Shape& shape, DType source);
  GgufTensorPlan sdcpp(std::string_view name, const Shape& shape, DType source) const;
  DType comfy_mix(std::string_view name, DType type);

  GgufTarget target_;
  const QuantScheme& scheme_;
  std::string arch_;
  int attention_wv_ = 0;  ///< V projections seen (llama-quantize's i_attention_wv)
};

}  // namespace ckptkit::detail
