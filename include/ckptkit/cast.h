// ckptkit/cast.h — element type conversion kernels (SIMD, runtime-dispatched with Highway).
//
// Semantics are those of PyTorch's `tensor.to(dtype)` on CPU, bit for bit:
//   * round to nearest, ties to even, subnormals kept (no flush to zero);
//   * F32→F16: overflow to ±Inf from 65520 up; NaN → 0x7E00 with the input's sign;
//   * F32→BF16: every NaN → 0xFFFF; F16→BF16: every NaN → 0x7FC0 (PyTorch's CPU kernels
//     differ by source type; F64→BF16 NaNs follow the F32 rule, while PyTorch writes 0xFFFF
//     or 0x7FC0 depending on the element's position in the tensor);
//   * F16→F32: exact; a signalling NaN comes out quiet (payload kept);
//   * F32→F8_E4M3 (the "fn" variant: no Inf, 0x7F/0xFF is NaN): anything that rounds past 448,
//     ±Inf and NaN → NaN with the input's sign — PyTorch does not saturate;
//   * F32→F8_E5M2: rounds to ±Inf from 61440 up; NaN → 0x7F with sign;
//   * F64→X goes through F32 (PyTorch converts double to half via float too).
// Integer, bool and not-computable types are never cast: can_cast() is false for them.
// All functions are thread-safe and allocation-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/dtype.h"
#include "ckptkit/status.h"

namespace ckptkit {

/// True when both types are computable floating-point types.
bool can_cast(DType from, DType to);

/// Converts `count` elements. `in` and `out` must not overlap (unless from == to).
Status cast_elements(DType from, DType to, const void* in, void* out, size_t count);

/// The individual kernels, exposed for tests and benchmarks.
void f32_to_f16(const float* in, uint16_t* out, size_t n);
void f16_to_f32(const uint16_t* in, float* out, size_t n);
void f32_to_bf16(const float* in, uint16_t* out, size_t n);
void f16_to_bf16(const uint16_t* in, uint16_t* out, size_t n);
void bf16_to_f32(const uint16_t* in, float* out, size_t n);
void f64_to_f32(const double* in, float* out, size_t n);
void f32_to_f64(const float* in, double* out, size_t n);
void f32_to_f8_e4m3(const float* in, uint8_t* out, size_t n);
void f32_to_f8_e5m2(const float* in, uint8_t* out, size_t n);
void f8_e4m3_to_f32(const uint8_t* in, float* out, size_t n);
void f8_e5m2_to_f32(const uint8_t* in, float* out, size_t n);

/// Adds to out[0..2] the NaN, Inf and zero counts of `n` F32 values and raises out[3] to the
/// largest finite |x| seen, as its bit pattern (IEEE order is value order for |x|).
void f32_stats(const float* in, size_t n, uint64_t* out);

/// Name of the SIMD target in use on this CPU ("AVX3", "AVX2", "SSE4", "SSSE3", "baseline").
const char* simd_target_name();

/// The SIMD targets compiled in that this CPU can run, best first (tests and benchmarks).
std::vector<std::string> simd_targets();

/// Uses the named target from now on, for every thread; false if it cannot run here.
bool select_simd_target(std::string_view name);

}  // namespace ckptkit
