// The diffusion transformers' two namings: the single files' (FLUX: Black Forest Labs'
// `double_blocks.I.img_attn.qkv`, `single_blocks.I.linear1`; SD3: Stability's
// `joint_blocks.I.x_block.attn.qkv`) and diffusers' (`transformer_blocks.I.attn.to_q`, …). The
// rules are a table of module paths matched part by part (a block number is a whole part),
// never substring replacement; docs/models.md lists them with their sources.
//
// Some rules cut or join rows, and nothing else: a fused q/k/v projection is three row ranges
// of one tensor in the single file and three tensors in diffusers (FLUX's single-block
// `linear1` is q, k, v and the MLP's input, four ranges), and the final layer's modulation
// holds (shift, scale) in the single file and (scale, shift) in diffusers: the same two halves
// in the other order. A mapping is therefore a list of row ranges of source tensors per
// output tensor; rows of a C-order tensor are one byte range, so every mapping is exact and
// streams (the caller turns ranges into slices and concatenations, see ops/parts.h).
//
// Thread safety: the tables are immutable.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/status.h"
#include "model/diffusers_config.h"

namespace ckptkit::detail {

/// Rows [begin, begin + rows) of the tensor `source`.
struct RowRange {
  std::string source;
  uint64_t begin = 0;
  uint64_t rows = 0;
};

/// One output tensor: its name and its rows, the ranges concatenated in order.
struct MappedTensor {
  std::string name;
  std::vector<RowRange> from;
};

/// The families with a transformer table: "flux", "sd3".
bool has_dit_names(std::string_view family);

/// Single-file names (the part's own, without model.diffusion_model.) → diffusers names.
/// `shapes` holds every tensor of the part; a tensor no rule names, or one whose rows do not
/// divide as its rule says, is an error naming it (`where`: the path messages name).
Result<std::vector<MappedTensor>> dit_to_diffusers(std::string_view family, const ShapeMap& shapes,
                                                   const std::string& where);
/// diffusers names → single-file names; every part of a fused tensor must be present, with
/// the same trailing dimensions.
Result<std::vector<MappedTensor>> dit_from_diffusers(std::string_view family,
                                                     const ShapeMap& shapes,
                                                     const std::string& where);

}  // namespace ckptkit::detail
