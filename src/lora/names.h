// Internal: the names every LoRA convention gives the weights of a base model.
//
// One table serves matching (a LoRA's module name -> the base tensor it changes), extraction
// (a base tensor -> the name to write) and conversion (a module in one convention -> the same
// module in another). Built from the base itself, the way loaders build their key maps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/safetensors.h"

namespace ckptkit::detail {

/// The naming conventions of LoRA modules.
enum class LoraNaming : uint8_t {
  kKohya,       ///< lora_unet_ / lora_te[N]_ + module path with '.' -> '_'
  kDiffusers,   ///< unet. / text_encoder[_N]. / transformer. + diffusers module path
  kComfy,       ///< the base's own tensor name without ".weight"
  kOneTrainer,  ///< FLUX: lora_transformer_ + diffusers path with '_'
  kLycoris,     ///< FLUX (SimpleTuner): lycoris_ + diffusers path with '_'
  kXlabs,       ///< FLUX (XLabs x-flux): double_blocks.N.processor.{qkv,proj}_lora{1,2}
};

/// Where a module name lands: a base tensor, or a slice of its rows.
struct LoraTarget {
  const TensorInfo* tensor = nullptr;
  uint64_t row0 = 0, rows = 0;  ///< rows = 0: the whole tensor
  std::string reason;           ///< set: the module is known but not applied (why)
};

struct LoraName {
  std::string key;  ///< the module name (no factor suffix)
  LoraNaming naming;
  LoraTarget target;
};

/// Every module name of every convention for the 2-D and 4-D weights of the base's diffusion
/// model and text encoders. Within one convention the first name of a target is the one its
/// own tools write (kohya: lora_te_ for SD1/SD2's encoder, lora_te1_ elsewhere).
std::vector<LoraName> lora_names(const Checkpoint& base, const Anatomy& a);

/// The file formats LoRA tools write: the naming convention of the modules and the keys of
/// their factors.
enum class LoraFormat : uint8_t { kKohya, kDiffusers, kPeft };

/// The names `lora_names` gives a module in this format.
LoraNaming naming_of(LoraFormat f);

/// The keys of a low-rank module's factors in this format; `alpha` empty: the format stores no
/// alpha tensor, and its loaders (diffusers without adapter metadata, PEFT without its
/// adapter_config.json, ComfyUI) apply scale 1: a writer folds alpha/rank into the factors.
/// kohya: lora_down/lora_up/alpha; peft: lora_A/lora_B; diffusers: what its pipelines'
/// save_lora_weights writes (lora.down/up for attention to_q/k/v/out.0 and
/// lora_linear_layer.down/up for text-encoder q/k/v/out_proj outside `transformer.`, lora_A/B
/// otherwise).
struct LoraFactorKeys {
  std::string down, up, alpha;
};
LoraFactorKeys lora_factor_keys(LoraFormat f, const std::string& module);

/// diffusers' lora_adapter_metadata header for a diffusers or PEFT file whose scales are all 1:
/// per component (the module names' first part) r = lora_alpha = the most common rank, the
/// others in rank_pattern and alpha_pattern, every module in target_modules. `modules`: (module
/// name, rank).
std::string lora_adapter_metadata(const std::vector<std::pair<std::string, uint64_t>>& modules);

}  // namespace ckptkit::detail
