// The SD1/SD2/SDXL UNet's two namings: LDM/SGM (`input_blocks.N.M.…`, single files, kohya's
// SDXL LoRAs) and diffusers (`down_blocks.I.resnets.J.…`, diffusers folders, kohya's SD1/SD2
// LoRAs, PEFT). The correspondence follows from the block structure, which the LDM names of a
// file determine: level i of the encoder is input_blocks 3i+1 … 3i+3 (two layers and a
// downsampler), the decoder's level i is output_blocks 3i … 3i+2 (three layers, the last
// carrying the upsampler after its attention when it has one).
//
// Thread safety: immutable after construction.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit::detail {

class UNetNames {
 public:
  /// Learns the structure from a UNet's LDM names (without the model.diffusion_model. prefix):
  /// the number of levels and which blocks hold attention.
  explicit UNetNames(const std::vector<std::string>& ldm_names);

  /// Learns the same structure from a UNet's diffusers names (a diffusers folder's unet/):
  /// the number of down blocks and which up blocks hold attention.
  static UNetNames from_diffusers(const std::vector<std::string>& diffusers_names);

  /// The diffusers name of an LDM name; nullopt for a name with no diffusers counterpart.
  std::optional<std::string> to_diffusers(std::string_view ldm) const;

  /// The inverse of to_diffusers: the LDM name of a diffusers name, nullopt for a name with no
  /// LDM counterpart.
  std::optional<std::string> to_ldm(std::string_view diffusers) const;

 private:
  UNetNames() = default;
  int levels_ = 0;                  // encoder levels (4 in SD1/SD2, 3 in SDXL)
  std::vector<bool> out_has_attn_;  // output block index -> has a transformer at .1
};

}  // namespace ckptkit::detail
