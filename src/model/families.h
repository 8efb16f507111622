// Architecture knowledge shared by detection (src/model/anatomy.cc) and the ops that reshape
// files (split, assemble, swap, prune): where each part sits in each family's monolithic layout.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/tensor.h"

namespace ckptkit::detail {

/// Where one part sits in a monolithic file.
struct FamilySlot {
  PartKind kind;
  std::string_view prefix;  ///< "cond_stage_model.transformer.", "text_encoders.clip_l.", …
  /// Inside `prefix`, the part's own names sit under this (SD3/FLUX text encoders:
  /// "transformer."), except `logit_scale`, which sits directly under `prefix`.
  std::string_view inner;
  Naming naming;  ///< how the part is spelled there (OpenCLIP for SD2's and SDXL's G/H)
  bool required;  ///< a monolithic file of the family normally has it
};

struct FamilyLayout {
  std::string_view family;          ///< sd1, sd2, sdxl, sdxl-refiner, sd3, flux
  std::string_view display;         ///< "SDXL"
  std::string_view implementation;  ///< modelspec.implementation
  uint64_t latent_channels;
  std::vector<FamilySlot> slots;  ///< the diffusion model first
};

/// nullptr for an unknown family.
const FamilyLayout* family_layout(std::string_view family);
const std::vector<FamilyLayout>& family_layouts();

/// Keys that markers loaders read, kept with the diffusion model (v_pred, ztsnr, edm_*).
bool is_model_config_key(std::string_view name);

/// The name a tensor of the component has in the part's standalone naming, from its full name
/// in the file: the prefix (and inner prefix) removed. OpenCLIP conversion is separate.
std::string strip_component_prefix(std::string_view name, std::string_view prefix,
                                   std::string_view inner);

/// The full name in a monolithic file for a part tensor named `part_name`.
std::string add_component_prefix(std::string_view part_name, const FamilySlot& slot);

/// `model_ema.` key of a UNet tensor named `unet_name` (without `model.diffusion_model.`):
/// "model_ema." + "diffusion_model.<unet_name>" with every dot removed.
std::string ema_key_for(std::string_view unet_name);

}  // namespace ckptkit::detail

namespace ckptkit::detail {
/// Detection from names, shapes and metadata only (the public analyze() adds value checks).
Anatomy analyze_layout(const Checkpoint& ck);
}  // namespace ckptkit::detail
