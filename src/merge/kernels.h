// The arithmetic of the merge methods (docs/merge.md gives every formula and its order of
// operations). Compiled with -ffp-contract=off: no multiply-add is fused, so the results are
// the same bits on every CPU.
//
// A tensor is merged in three steps: its parameters (TensorParams) are fixed when the merge is
// planned; slerp and ties then need whole-tensor statistics, gathered by feeding every chunk of
// the inputs to a StatsPass (ties: two passes); finally merge_chunk computes any chunk alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "ckptkit/merge.h"

namespace ckptkit::merge {

/// What one tensor's merge needs besides the inputs' values. Scalars are F32, each rounded
/// once from the double the user gave.
struct TensorParams {
  MergeMethod method = MergeMethod::kWeightedSum;
  size_t inputs = 2;  ///< values per element: A first
  float alpha = 0.5f;
  /// weighted-sum: one per input (A first); ties, dare, dare-ties: one per input after A.
  std::vector<float> weights;
  float train_scale = 0;        ///< train-difference: f32(1.8·α)
  double slerp_t = 0.5;         ///< slerp: t (α) in double, for the angle formula
  float dare_rescale = 1;       ///< f32(1/(1−p))
  uint32_t dare_threshold = 0;  ///< round(p·2²⁴): element dropped when (z ≫ 40) < this
  uint64_t dare_key = 0;        ///< seed ⊕ FNV-1a-64(tensor name)
  double density = 0.2;         ///< ties
};

/// Statistics a tensor needs before any chunk can be computed.
struct TensorStats {
  // slerp: the two F32 coefficients (a linear interpolation when the tensors are parallel).
  float s0 = 0, s1 = 0;
  bool lerp = false;
  // ties: per input after A, the bit pattern of the k-th largest |τ| (0xffffffff: keep none).
  std::vector<uint32_t> threshold;
  // ties, between its two passes: the top 16 bits of each threshold, and the rank (from the
  // largest) of the threshold among the elements in that bin.
  std::vector<uint32_t> ties_bin;
  std::vector<uint64_t> ties_rank;
};

/// Inputs a merge takes at most (the per-element kernels keep one value per input on the stack).
inline constexpr size_t kMaxMergeInputs = 64;

bool needs_stats(MergeMethod m);
/// Read passes over the tensor needed for its statistics (slerp 1, ties 2, others 0).
int stats_passes(MergeMethod m);

/// Accumulates one pass of statistics. Feed the chunks in order (first = 0, then contiguous).
class StatsPass {
 public:
  StatsPass(const TensorParams& p, int pass, uint64_t numel, const TensorStats& so_far);
  ~StatsPass();
  void add(const float* const* x, uint64_t first, size_t count);
  /// Completes the pass into `stats`.
  void finish(TensorStats& stats);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Elements [first, first + count) of the merged tensor into `out` (F32; may be x[0]).
/// `x[i]` holds input i's elements [first, first + count).
void merge_chunk(const TensorParams& p, const TensorStats& s, const float* const* x, uint64_t first,
                 size_t count, float* out);

/// FNV-1a 64 of a tensor name (the DARE stream key).
uint64_t fnv1a64(std::string_view s);

/// DARE's keep decision for element j of input i (1-based among the inputs after A... i is the
/// input's index with A = 0) — exposed for tests.
bool dare_keep(const TensorParams& p, size_t i, uint64_t j);

}  // namespace ckptkit::merge
