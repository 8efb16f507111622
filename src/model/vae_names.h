// The SD/SDXL VAE's two namings: LDM (`encoder.down.I.block.J.…`, `decoder.up.I.…`,
// `mid.attn_1.q`; single files, ComfyUI's vae/ files) and diffusers (`encoder.down_blocks.I.
// resnets.J.…`, `decoder.up_blocks.I.…`, `mid_block.attentions.0.to_q`; a diffusers folder's
// vae/). The rules are a table of module paths matched part by part (a number is a whole part),
// never substring replacement; docs/models.md lists them with their sources.
//
// Two rules change more than the name:
//  * the decoder's levels are numbered in opposite directions: LDM `up.I` is diffusers
//    `up_blocks.(N-1-I)` for a decoder of N levels;
//  * the mid-block attention's q, k, v and output projections are 1×1 convolutions in LDM
//    ([C, C, 1, 1]) and linear layers in diffusers ([C, C]): the same bytes, another shape
//    (weights only; biases keep their shape).
//
// Thread safety: immutable after construction.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit::detail {

struct VaeName {
  std::string name;
  /// A mid-block attention projection weight: [C, C, 1, 1] in LDM, [C, C] in diffusers.
  bool conv_as_linear = false;
};

class VaeNames {
 public:
  /// Learns the decoder's number of levels from names of either naming (without the
  /// first_stage_model./vae. prefix).
  explicit VaeNames(const std::vector<std::string>& names);

  /// The diffusers name of an LDM name; nullopt for a name with no counterpart.
  std::optional<VaeName> to_diffusers(std::string_view ldm) const;
  /// The LDM name of a diffusers name. The names older diffusers wrote for the attention
  /// (query, key, value, proj_attn) are accepted too.
  std::optional<VaeName> to_ldm(std::string_view diffusers) const;

  int decoder_levels() const { return decoder_levels_; }

 private:
  int decoder_levels_ = 0;
};

}  // namespace ckptkit::detail
