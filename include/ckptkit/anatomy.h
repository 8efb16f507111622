// ckptkit/anatomy.h — what a checkpoint is: architecture, components, defects.
//
// analyze() looks only at names, dtypes, shapes and metadata (never at tensor data, except the
// few bytes of CLIP's position_ids when a file is given), so it costs microseconds per tensor.
// Everything it knows is in tables (src/model/anatomy_tables.cc): the key prefixes of each
// monolithic layout, the key + shape signatures of each part and architecture, and the
// metadata that names distilled models. Adding a model is a table row plus a test.
//
// Vocabulary:
//   part          a network a loader takes on its own: a UNet/DiT, a CLIP or T5 text encoder,
//                 a VAE. Its "standalone naming" is the one ComfyUI's UNETLoader/CLIPLoader/
//                 VAELoader and stable-diffusion.cpp accept: bare LDM/BFL names, HF
//                 `text_model.*` names for CLIP, bare `encoder.*`/`decoder.*` for the VAE.
//   component     a part (or EMA copy, training buffers, …) as it sits in a file, under a
//                 key prefix.
//   family        a monolithic layout: sd1, sd2, sdxl, sdxl-refiner, sd3, flux.
//
// Thread safety: all functions are reentrant; tables are immutable.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit {

class InputFile;

enum class Role : uint8_t {
  kDiffusionModel,
  kTextEncoder,
  kVae,
  kEma,            ///< an exponential-moving-average copy of the denoiser (`model_ema.*`)
  kTrainingExtra,  ///< DDPM schedule buffers, logvar, EMA counters, saved sigmas
  kModelConfig,    ///< markers loaders read: v_pred, ztsnr, edm_mean/edm_std, edm_vpred.*
  kLora,
  kUnknown,
};
std::string_view role_name(Role r);

/// What a part is, independent of where it sits.
enum class PartKind : uint8_t {
  kNone,
  kUNet,     ///< SD1/SD2/SDXL UNet
  kMMDiT,    ///< SD3/SD3.5
  kFluxDiT,  ///< FLUX.1
  kClipL,    ///< CLIP ViT-L/14 text encoder (SD1, SDXL, SD3, FLUX)
  kClipG,    ///< OpenCLIP ViT-bigG/14 text encoder (SDXL, SD3)
  kClipH,    ///< OpenCLIP ViT-H/14 text encoder (SD2)
  kT5xxl,    ///< T5 v1.1 XXL encoder (SD3, FLUX)
  kVae,
};
std::string_view part_kind_name(PartKind k);
/// "CLIP-L", "OpenCLIP-H", "T5-XXL", "FLUX DiT", …: for messages.
std::string_view part_display_name(PartKind k);
/// "clip_l", "clip_g", "clip_h", "t5xxl", "vae", "diffusion_model": the suffix split uses.
std::string_view part_file_tag(PartKind k);

/// How a component's keys are spelled (after its prefix).
enum class Naming : uint8_t { kNone, kLdm, kBfl, kHf, kOpenClip, kDiffusers };
std::string_view naming_name(Naming n);

struct Component {
  Role role = Role::kUnknown;
  PartKind kind = PartKind::kNone;
  Naming naming = Naming::kNone;
  std::string prefix;           ///< key prefix in this file; "" for a standalone part
  std::string detail;           ///< "12 layers, width 768", "16-channel latent", …
  std::vector<size_t> tensors;  ///< indices into Checkpoint::tensors, in file order
  uint64_t parameters = 0;
  uint64_t bytes = 0;
  std::map<std::string, uint64_t> dtypes;  ///< dtype name -> tensor count
  /// VAE: latent channels; UNet/DiT: latent channels it denoises; text encoders: width.
  uint64_t channels = 0;
};

struct Defect {
  std::string code;      ///< stable id: missing-component, ema-duplicate, position-ids-float, …
  std::string severity;  ///< "error" (will not load as this model), "warning", "info"
  std::string message;
  std::vector<std::string> tensors;  ///< the tensors concerned (may be empty)
};

/// An architecture a file came close to, and the first signature it failed.
struct Candidate {
  std::string architecture;
  unsigned matched = 0;
  unsigned total = 0;
  std::string why_not;
  double closeness = 0;  ///< 0..1, how near (candidates are sorted by it)
};

struct Anatomy {
  /// sd1, sd2, sdxl-base, sdxl-refiner, ssd-1b, segmind-vega, sd3-medium, sd3.5-medium,
  /// sd3.5-large, flux1-dev, flux1-schnell; a standalone text encoder or VAE reports its kind
  /// (clip-l, clip-g, clip-h, t5xxl, vae); lora; unknown.
  std::string architecture = "unknown";
  std::string family;                 ///< monolithic layout family, "" when none applies
  std::string variant;                ///< standard, inpaint, instruct-pix2pix, fill, …
  std::string layout;                 ///< monolithic, diffusion-model, text-encoder, vae, lora,
                                      ///< partial, diffusers-folder, unknown
  std::string modelspec;              ///< ModelSpec architecture id, "" when there is none
  std::string confidence;             ///< keys, metadata, heuristic ("" for unknown)
  std::vector<std::string> evidence;  ///< the signatures and metadata that decided
  std::vector<std::string> notes;     ///< what the weights cannot tell (eps vs v, Turbo, …)
  /// Distillation named by metadata (turbo, lightning, hyper, lcm), with its source key.
  std::string distillation;
  std::string distillation_source;
  std::vector<Component> components;
  std::vector<Defect> defects;
  std::vector<Candidate> candidates;  ///< filled when the architecture is unknown
  // LoRA files:
  std::string lora_format;  ///< kohya, diffusers, peft
  std::string lora_base;    ///< sd1, sd2, sdxl, sd3, flux, "" when undetermined
  uint64_t lora_rank = 0;

  /// The component of `kind` with a role other than EMA, or nullptr.
  const Component* find(PartKind kind) const;
  const Component* find(Role role) const;
};

/// Reads names, shapes and metadata of `ck`. With `file` (the file `ck` was read from) the
/// values of CLIP position_ids are checked too (a few hundred bytes).
Anatomy analyze(const Checkpoint& ck, const InputFile* file = nullptr);

/// A diffusers folder: model_index.json and one subfolder per part.
struct DiffusersPart {
  std::string name;                ///< unet, transformer, text_encoder, text_encoder_2, vae, …
  std::string library;             ///< "diffusers", "transformers"
  std::string class_name;          ///< "UNet2DConditionModel", "CLIPTextModel", …
  std::vector<std::string> files;  ///< weight files found in the subfolder
  uint64_t bytes = 0;
};
struct DiffusersFolder {
  std::string path;
  std::string pipeline;  ///< _class_name: StableDiffusionXLPipeline, FluxPipeline, …
  std::string diffusers_version;
  std::string architecture;  ///< family guessed from the pipeline class, "" if unknown
  std::vector<DiffusersPart> parts;
};

/// Reads `dir`/model_index.json (the only file parsed; weight files are listed, not read).
Result<DiffusersFolder> read_diffusers_folder(const std::string& dir);

}  // namespace ckptkit
