// What a diffusers folder of each family holds, and the config.json of each of its parts,
// derived from the weights: the numbers a loader reads to build the network (channels per
// level, layers per block, attention per level, cross-attention width, text widths and depths)
// come from tensor shapes; what shapes cannot tell (attention heads, sample size, the VAE's
// latent scaling factor, the scheduler) is the family's published convention, one row of a
// table. docs/models.md lists both with their sources.
//
// Thread safety: the tables are immutable.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit::detail {

/// One part folder of a diffusers pipeline.
struct DiffusersSlot {
  std::string_view folder;      ///< unet, text_encoder, text_encoder_2, vae
  PartKind kind;                ///< which part of the single file goes there
  std::string_view library;     ///< diffusers, transformers
  std::string_view class_name;  ///< UNet2DConditionModel, CLIPTextModel, …
  std::string_view weights;     ///< diffusion_pytorch_model.safetensors, model.safetensors
};

struct DiffusersFamily {
  std::string_view family;            ///< as in families.h: sd1, sdxl
  std::string_view pipeline;          ///< model_index.json _class_name
  std::string_view inpaint_pipeline;  ///< the same for a 9-channel (inpainting) UNet
  std::vector<DiffusersSlot> slots;
  /// model_index.json entries written as [null, null]: optional parts, and the tokenizers,
  /// which weights cannot give.
  std::vector<std::string_view> null_parts;
  /// Extra model_index.json entries, as JSON text ("requires_safety_checker": false).
  std::vector<std::pair<std::string_view, std::string_view>> pipeline_flags;
  std::string_view scheduler_class;
  /// The scheduler's settings (keys in order, JSON values), besides _class_name and
  /// prediction_type.
  std::vector<std::pair<std::string_view, std::string_view>> scheduler;
  /// When neither metadata nor the user says: epsilon, or SD2's v_prediction (768-v, the
  /// common SD2 model; the report says it was assumed).
  std::string_view default_prediction;
  /// The OpenCLIP text encoder's last layer, projection and logit_scale are not in the folder
  /// (SD2: the pipeline uses the penultimate layer, diffusers' CLIPTextModel has 23 layers).
  bool text_drops_last_layer;
  uint64_t unet_sample_size;
  uint64_t unet_sample_size_v;  ///< for a v-prediction model (SD2 768-v: 96)
  /// diffusers' attention_head_dim: a fixed 8 heads (SD1), or width / 64 per level (SD2, SDXL).
  bool heads_from_width;
  uint64_t vae_sample_size;
  std::string_view vae_scaling_factor;
  bool vae_force_upcast;
  /// The anatomy's architecture this row is for (FLUX dev and schnell differ in their
  /// scheduler); "" for every architecture of the family.
  std::string_view architecture;
  /// The 16-channel VAEs' shift_factor; "" for none.
  std::string_view vae_shift_factor;
  /// The scheduler has a prediction_type (the DDPM ones; flow matching has none).
  bool scheduler_prediction;
  /// Parts other than the denoiser may be missing (FLUX and SD3 files often come without
  /// text encoders): [null, null] in model_index.json, absent from the single file.
  bool parts_optional;
};

/// nullptr when the family has no diffusers folder layout here; `architecture` picks among the
/// family's rows (flux1-dev, flux1-schnell), the first row when none is for it.
const DiffusersFamily* diffusers_family(std::string_view family,
                                        std::string_view architecture = "");
/// The family of a model_index.json `_class_name` (nullptr: not one this converts);
/// `has_text_encoder`: the folder has a non-null text_encoder entry; `architecture`: what
/// read_diffusers_folder took it for.
const DiffusersFamily* diffusers_family_of_pipeline(std::string_view pipeline,
                                                    bool has_text_encoder,
                                                    std::string_view architecture = "");

using ShapeMap = std::map<std::string, Shape, std::less<>>;

/// The config.json of each part, from its tensors (diffusers names) and the family's row.
/// A tensor a loader would read a dimension from that is missing is an error naming it;
/// `where` is the path the message names.
Result<std::string> unet_config_json(const DiffusersFamily& fam, const ShapeMap& unet,
                                     std::string_view prediction, const std::string& where);
Result<std::string> vae_config_json(const DiffusersFamily& fam, const ShapeMap& vae,
                                    const std::string& where);
/// FluxTransformer2DModel or SD3Transformer2DModel, from the diffusers-named tensors.
Result<std::string> transformer_config_json(const DiffusersFamily& fam, const ShapeMap& t,
                                            const std::string& where);
/// T5EncoderModel (T5 v1.1: gated GELU when the MLP has wi_0 and wi_1).
Result<std::string> t5_config_json(const ShapeMap& t5, DType dtype, const std::string& where);
/// CLIPTextModel (or CLIPTextModelWithProjection when it has text_projection.weight).
Result<std::string> clip_config_json(PartKind kind, const ShapeMap& clip, DType dtype,
                                     const std::string& where);
/// `prediction`: epsilon or v_prediction.
std::string scheduler_config_json(const DiffusersFamily& fam, std::string_view prediction);
/// The tokenizer folder of a text encoder's folder: tokenizer for text_encoder, tokenizer_2
/// for text_encoder_2, …
std::string tokenizer_of(std::string_view text_encoder_folder);
/// The tokenizer folders the family's pipeline uses.
std::vector<std::string> tokenizers_of(const DiffusersFamily& fam);

/// `pipeline`: fam.pipeline or fam.inpaint_pipeline; `tokenizers`: the tokenizer folders the
/// output has (CLIPTokenizer, T5TokenizerFast for a T5's), the others are [null, null];
/// `absent`: part folders the output does not have ([null, null]).
std::string model_index_json(const DiffusersFamily& fam, std::string_view pipeline,
                             const std::vector<std::string>& tokenizers,
                             const std::vector<std::string_view>& absent = {});

/// Compares the dimensions a loader reads from `config_path` (a part's config.json) with
/// `derived` (the config derived from the part's weights): a key present in both with another
/// value is an error naming the file, the key and both values. Keys that are conventions
/// rather than shapes (heads, sample size, scaling factor) are not compared.
Status check_config_against_weights(const std::string& config_path, const std::string& derived);

/// The diffusers version the configs are written for (the keys they use exist since then).
inline constexpr std::string_view kDiffusersVersion = "0.30.0";

}  // namespace ckptkit::detail
