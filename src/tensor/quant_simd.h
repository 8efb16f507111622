// SIMD kernels behind quant.cc (internal): the group steps of the reference K-quants, which take
// nearly all of their time, one group per lane. They compute exactly what quant.cc's scalar code
// computes, bit for bit, on every target; tests compare every target this CPU has against
// "scalar". The target is chosen once from the CPU's features (tensor/dispatch.h); select it for
// tests and benchmarks before any other thread quantizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit::detail {

/// For `ngroups` contiguous groups of 32 floats at `x`: the reference Q4_K/Q5_K group step —
/// weights av_x + |x| and ggml's make_qkx2_quants(32, nmax, …, rmin, rdelta, nstep, false) —
/// writing scales[g], mins[g] (the positive minimum, ggml's *the_min) and 32 levels per group to
/// L (L null: the levels are not written; the reference requantizes every group whose scale
/// does not round to zero, so callers need the levels of those groups alone). Returns false,
/// writing nothing, when the "scalar" target is selected.
bool qkx2_groups32_simd(const float* x, size_t ngroups, int nmax, float rmin, float rdelta,
                        int nstep, float* scales, float* mins, uint8_t* L);

/// The reference Q2_K group step: weights |x| and make_qkx2_quants(16, 3, …, -0.5, 0.1, 15,
/// use_mad = true) on `ngroups` contiguous groups of 16.
bool qkx2_groups16_q2_simd(const float* x, size_t ngroups, float* scales, float* mins, uint8_t* L);

/// The reference Q6_K group step: make_qx_quants(16, 32, …, rmse_type = 1, NULL) on `ngroups`
/// contiguous groups of 16, levels stored with their +32 offset.
bool qx32_groups16_simd(const float* x, size_t ngroups, float* scales, uint8_t* L);

/// The reference Q3_K group step: make_q3_quants(16, 4, …, do_rmse = true) on `ngroups`
/// contiguous groups of 16, levels stored with their +4 offset (0 for a group below ggml's
/// GROUP_MAX_EPS).
bool q3_groups16_simd(const float* x, size_t ngroups, float* scales, uint8_t* L);

/// For each of `ngroups` groups of `group` floats with d[j] != 0:
/// L = MAX(lo, MIN(hi, nearest_int((x + dm[j]) / d[j]))) + offset (x / d[j] when dm is null).
bool requantize_groups_simd(const float* x, size_t ngroups, size_t group, const float* d,
                            const float* dm, int lo, int hi, int offset, uint8_t* L);

/// Q8_0 (both of ggml's paths give the same bytes) on `blocks` contiguous blocks of 32 floats,
/// writing 34 bytes per block. Stops at the first block holding a NaN or an infinity (the
/// scalar code does those) and returns how many blocks it wrote; 0 on the "scalar" target.
size_t q8_0_blocks_simd(const float* x, size_t blocks, uint8_t* y);

/// Targets this CPU can run, best first, ending with "baseline" and "scalar".
std::vector<std::string> quant_simd_targets();
/// Forces a target; false when unknown or unsupported here.
bool select_quant_simd_target(std::string_view name);

}  // namespace ckptkit::detail
