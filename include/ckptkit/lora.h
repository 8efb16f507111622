// ckptkit/lora.h — a LoRA file as modules: which tensors form each adapter module, its
// algorithm, rank, alpha and target, and the training facts its metadata records.
//
// Every flavour in the wild keys a module as `<module>.<factor>`: kohya and LyCORIS
// (`lora_down`/`lora_up`/`lora_mid`/`alpha`, `hada_*`, `lokr_*`, `diff`, `dora_scale`), PEFT
// (`lora_A`/`lora_B`), diffusers (`lora.down`/`lora.up`, `lora_linear_layer.down`/`up`) and
// XLabs (`…_lora1.down`/`up`). read_lora() groups the keys by module and checks that the factors
// of each module agree in shape (docs/lora.md has the conventions and their sources).
//
// Thread safety: reentrant.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ckptkit/ops.h"
#include "ckptkit/safetensors.h"
#include "ckptkit/scan.h"
#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit {

class InputFile;

/// The algorithm of a module.
enum class LoraKind : uint8_t {
  kLora,    ///< ΔW = up · down (Linear, or Conv with a 1×1 up: LoCon)
  kTucker,  ///< LoCon with a Tucker core: up · mid · down (lora_mid)
  kLoha,    ///< Hadamard product of two low-rank products (hada_*)
  kLokr,    ///< Kronecker product of two factors (lokr_*)
  kFull,    ///< the whole ΔW stored (diff / diff_b)
};
std::string_view lora_kind_name(LoraKind k);

/// Which network of the base model a module changes, from its key prefix.
enum class LoraTarget : uint8_t {
  kDiffusionModel,  ///< UNet or DiT (lora_unet_, unet., transformer., diffusion_model., …)
  kTextEncoder1,    ///< lora_te_/lora_te1_, text_encoder., text_encoders.clip_l.
  kTextEncoder2,    ///< lora_te2_, text_encoder_2., text_encoders.clip_g.
  kTextEncoder3,    ///< lora_te3_, text_encoder_3., text_encoders.t5xxl.
  kUnknown,
};
std::string_view lora_target_name(LoraTarget t);

struct LoraModule {
  std::string name;  ///< the key without its factor suffix
  LoraKind kind = LoraKind::kLora;
  LoraTarget target = LoraTarget::kUnknown;
  uint64_t rank = 0;            ///< 0 for full ΔW and for LoKr without low-rank factors
  std::optional<double> alpha;  ///< the stored alpha; none: scale 1 (alpha = rank)
  bool conv = false;            ///< the base tensor is a convolution (4-D factors)
  bool dora = false;            ///< has dora_scale (weight-decomposed)
  Shape delta_shape;            ///< the shape of ΔW the factors imply ({} when undetermined)
  std::vector<size_t> tensors;  ///< indices into Checkpoint::tensors
};

struct LoraTraining {
  std::string base_model;     ///< ss_sd_model_name or ss_base_model_version
  std::string network;        ///< ss_network_module (networks.lora, lycoris.kohya, …)
  std::string network_dim;    ///< ss_network_dim
  std::string network_alpha;  ///< ss_network_alpha
  std::string resolution;     ///< ss_resolution
  std::string epochs;         ///< ss_epoch of ss_num_epochs
  std::string steps;          ///< ss_steps
  std::string trigger;        ///< modelspec.trigger_phrase
  std::string output_name;    ///< ss_output_name
  /// The most frequent tags of ss_tag_frequency (summed over its datasets), most first.
  std::vector<std::pair<std::string, uint64_t>> top_tags;
};

struct LoraProblem {
  std::string key;      ///< the tensor (or module) it concerns
  std::string message;  ///< plain words
};

struct LoraFile {
  std::string format;  ///< kohya, lycoris, diffusers, peft, xlabs, comfyui, mixed
  std::vector<LoraModule> modules;
  std::map<LoraKind, uint64_t> kinds;
  std::map<LoraTarget, uint64_t> targets;
  std::map<uint64_t, uint64_t> ranks;     ///< rank -> modules
  std::map<std::string, uint64_t> alphas;  ///< alpha as written ("16", "none") -> modules
  uint64_t conv_modules = 0;
  uint64_t dora_modules = 0;
  uint64_t missing_alpha = 0;  ///< low-rank modules without alpha: applied at scale 1
  std::vector<std::string> unknown_keys;  ///< keys that are no known factor of any module
  std::vector<LoraProblem> errors;        ///< factors that disagree, NaN alpha, …
  LoraTraining training;
};

struct Anatomy;

/// Where a module lands in a base model.
struct LoraModuleMatch {
  std::string module;
  std::string base_tensor;  ///< "" when it lands nowhere (then why_not says why)
  std::optional<std::pair<uint64_t, uint64_t>> rows;  ///< a row slice [first, last) of it
  std::string why_not;
};

/// Each module of `lora` against `base` (analyzed as `a`), by the names every flavour gives a
/// base weight: kohya (diffusers paths for the SD1/SD2 UNet, the base's own for SDXL, SD3 and
/// FLUX), diffusers/PEFT (unet., text_encoder[_N].), ComfyUI (the base's names); OpenCLIP
/// encoders by Hugging Face names, q/k/v as rows of in_proj. The module's ΔW must have the
/// target's shape (trailing 1-dims aside).
std::vector<LoraModuleMatch> match_lora(const LoraFile& lora, const Checkpoint& base,
                                        const Anatomy& a);

/// One LoRA of a bake: `LORA[:STRENGTH]`.
struct LoraInput {
  std::string path;
  double strength = 1.0;
  std::optional<double> strength_te;  ///< for text-encoder modules; none: `strength`
};

struct BakeOptions {
  std::optional<DType> dtype;  ///< of changed and unchanged float tensors; none: the base's
  bool strict = false;         ///< a module that lands nowhere is an error (nothing written)
  /// FP8 outputs of changed tensors: stochastic rounding (seeded, reproducible) instead of
  /// round-to-nearest.
  bool fp8_stochastic = false;
  uint64_t seed = 0;
  /// Per-block strength, by merge's block names (IN00…OUT11, M00, joint_blocks.N,
  /// double_blocks.N, single_blocks.N, text_encoder): multiplies every LoRA's strength for the
  /// modules on that block's tensors. Blocks not named: 1.
  std::map<std::string, double> block_strength;
  /// A supermerger block-weight string (25/26 values, SDXL 19/20), applied first; entries of
  /// block_strength override it.
  std::string block_weights;
  /// Set: write a GGUF of the baked model (as `convert --quant` writes one), not safetensors.
  std::optional<GgufConvertOptions> gguf;
  bool allow_dangerous = false;
  std::optional<Verdict> verdict;  ///< the base's scan verdict when the caller has it
  SafetensorsLimits limits;
  RunOptions run;
};

struct BakeReport {
  RunStats stats;
  std::string architecture;  ///< the base's
  uint64_t tensors_changed = 0;
  struct PerLora {
    std::string path;
    std::string format;
    uint64_t modules = 0;
    uint64_t applied = 0;
    std::vector<std::string> unmatched;  ///< "module: why"
  };
  std::vector<PerLora> loras;
  std::vector<std::string> notes;
};

/// `lora bake`: BASE with every module of every LoRA added to the tensor it lands on
/// (match_lora), streamed tensor by tensor. Each changed tensor is computed in F32 in this
/// order (docs/lora.md): base value; then per LoRA in the order given, the module's ΔW element
/// as a sum over the rank in index order, times the factor strength·alpha/rank rounded once to
/// F32, added (DoRA modules: the decomposition of docs/lora.md on the whole tensor); then
/// rounded once to the output dtype. Refused before writing (InvalidArgument): a LoRA of
/// another family, a LoRA with factor errors, with `strict` any module that lands nowhere. A NaN
/// or infinity in a factor stops the run with nothing written.
Result<BakeReport> bake_loras(const std::string& base_path, const std::vector<LoraInput>& loras,
                              const std::string& out_path, const BakeOptions& options);

/// The file format of a LoRA written by ckptkit (docs/lora.md): kohya (lora_down/lora_up/alpha,
/// kohya module names), diffusers or PEFT (diffusers module paths, their tools' factor keys).
enum class LoraWriteFormat : uint8_t { kKohya, kDiffusers, kPeft };

struct ExtractOptions {
  uint64_t rank = 32;                  ///< of linear and 1×1 convolution modules
  std::optional<uint64_t> conv_rank;   ///< set: also 3×3 convolutions (ResNet blocks), this rank
  bool text_encoders = false;          ///< also the text encoders' modules
  double min_diff = 0.01;              ///< a text encoder whose max |ΔW| is below: left out
  std::optional<double> alpha;         ///< none: alpha = rank (scale 1)
  std::optional<double> clamp_quantile = 0.99;  ///< none: no clamp
  bool exact = false;                  ///< full SVD instead of the randomized one
  LoraWriteFormat format = LoraWriteFormat::kKohya;
  DType dtype = DType::F16;            ///< of the written factors
  bool allow_dangerous = false;
  SafetensorsLimits limits;
  RunOptions run;
};

struct ExtractReport {
  RunStats stats;
  std::string architecture;  ///< the base's
  uint64_t modules = 0;
  uint64_t unchanged = 0;    ///< modules whose ΔW is all zero (written as zeros)
  /// Share of ‖ΔW‖_F the rank-r factors keep, over the modules that changed.
  double mean_kept = 0, min_kept = 1;
  std::string min_kept_module;
  std::vector<std::string> notes;
};

/// `lora extract`: a LoRA whose modules approximate TUNED − BASE at the given rank: for every
/// target module, ΔW in F32, its truncated SVD, singular values folded into `up` (kohya), up
/// and down clamped at the quantile of their values, written in `format` (docs/lora.md).
Result<ExtractReport> extract_lora(const std::string& tuned_path, const std::string& base_path,
                                   const std::string& out_path, const ExtractOptions& options);

/// kohya's dynamic rank rules (resize_lora.py): the rank kept from the singular values.
enum class ResizeRule : uint8_t { kFixed, kSvRatio, kSvFro, kSvCumulative };

struct ResizeOptions {
  uint64_t rank = 4;                  ///< the new rank, or the cap of a dynamic rule
  std::optional<uint64_t> conv_rank;  ///< of 3×3 convolution modules; none: `rank`
  ResizeRule rule = ResizeRule::kFixed;
  double param = 0;                   ///< the dynamic rule's parameter
  std::optional<DType> dtype;         ///< none: the input's
  bool allow_dangerous = false;
  SafetensorsLimits limits;
  RunOptions run;
};

struct ResizeReport {
  RunStats stats;
  struct Module {
    std::string name;
    uint64_t old_rank = 0, new_rank = 0;
    double new_alpha = 0;
    double fro_kept = 0;  ///< share of ‖ΔW‖_F kept
    double sum_kept = 0;  ///< share of Σ singular values kept
  };
  std::vector<Module> modules;
  uint64_t copied = 0;  ///< tensors that are no low-rank factor, copied
  std::vector<std::string> notes;
};

/// `lora resize`: each LoRA/LoCon module's ΔW = up · down (exact SVD, through QRs of the
/// factors) cut to the new rank; alpha = old alpha / old rank × new rank (kohya's rule).
Result<ResizeReport> resize_lora(const std::string& in_path, const std::string& out_path,
                                 const ResizeOptions& options);

/// `lora convert`: the same LoRA in another file format's names (docs/lora.md).
struct LoraConvertOptions {
  std::string to;                  ///< kohya, diffusers or peft
  std::optional<std::string> base;  ///< a base model to name modules against; none: the
                                    ///< reference layout of the LoRA's family
  bool allow_dangerous = false;
  SafetensorsLimits limits;
  RunOptions run;
};

struct LoraConvertReport {
  RunStats stats;
  std::string from;        ///< the input's format (read_lora's)
  std::string to;          ///< kohya, diffusers, peft
  std::string family;      ///< of the base the names come from
  std::string names_from;  ///< the base file, or "layout NAME" (the embedded reference)
  uint64_t modules_in = 0;
  /// One written module.
  struct Output {
    std::string module;
    std::string action;  ///< kept, renamed, split (a part of one input), fused (several inputs)
    std::vector<std::string> from;                ///< the input modules, in row order
    std::vector<uint64_t> rank_in;                ///< their ranks
    std::vector<std::optional<double>> alpha_in;  ///< their alphas (none: not stored)
    uint64_t rank = 0;
    std::optional<double> alpha;  ///< the alpha written; none: no alpha tensor (scale 1)
    bool folded = false;          ///< a scale was multiplied into the factors
  };
  std::vector<Output> outputs;
  /// Written modules by action; `folded`: those with a scale multiplied into their factors.
  uint64_t kept = 0, renamed = 0, split = 0, fused = 0, folded = 0;
  std::vector<std::string> notes;
};

/// Writes the modules of the LoRA at `in_path` under the names and factor keys of `options.to`,
/// naming each module's target (a base tensor or rows of it, match_lora) by the first name the
/// format's convention gives it (detail::lora_names). A module on rows of a tensor the format
/// names whole is fused with the others on that tensor (down concatenated, up block-diagonal);
/// a module on a tensor the format names by row slices is split (down copied, up split by
/// rows). ΔW of every base tensor is unchanged: alpha is corrected when fusing (or, when the
/// parts' scales differ, each part's scale is folded into its factors and alpha = rank), and
/// the diffusers and PEFT files, whose loaders read no alpha tensor, get the scale folded into
/// the factors and a lora_adapter_metadata header (each module's rank, lora_alpha = rank) for
/// diffusers; an input's lora_adapter_metadata gives its modules' scales. Refused before writing: not a LoRA, inconsistent factors, a module that lands
/// nowhere or has no name in the format, LyCORIS/full/DoRA modules for diffusers or PEFT (or
/// needing a split or fuse), a family other than the base's.
Result<LoraConvertReport> convert_lora(const std::string& in_path, const std::string& out_path,
                                       const LoraConvertOptions& options);

/// Groups `ck`'s tensors into modules. `file` (may be null) is read for the alpha scalars;
/// without it alphas are unknown. Inconsistent modules are listed in `errors`, not refused:
/// inspect shows them, the ops that apply a LoRA refuse a file with errors.
LoraFile read_lora(const Checkpoint& ck, const InputFile* file);

}  // namespace ckptkit
