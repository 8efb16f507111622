// ggml block (de)quantization, scalar. ggml's reference C code is the specification: each function
// below follows its order of floating-point operations and its integer conversions exactly, which
// is what makes the bytes identical. Things that look odd are deliberate:
// - Every float expression keeps ggml's association and operand types (`w*x*l` is (w*x)*(float)l,
//   `w*l*x` is (w*(float)l)*x); this file is compiled with -ffp-contract=off so that no a*b+c
//   becomes a fused multiply-add (ggml's x86-64 builds have none in these functions).
// - Conversions that C leaves undefined for out-of-range values (a float cast to int8_t/uint8_t)
//   are reproduced as x86-64 executes them: truncation to int32 (cvttss2si/cvttps2dq; NaN and
//   out-of-range give INT32_MIN), then the low byte. They only matter for NaN/Inf inputs.
// - Integer values stored into uint8_t/int8_t wrap modulo 256 as in ggml.
// - MIN/MAX are ggml's macros `a < b ? a : b` / `a > b ? a : b`, argument order kept, because with
//   NaN the order decides the result.
// - nearest_int() is ggml's "add 1.5*2^23 and take the mantissa" rounding; its debug assert
//   (|x| <= 4194303) is absent from release builds, so out-of-range and NaN arguments give the
//   same wrapped values here as in real files.
#include "tensor/quant.h"

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "io/errors.h"
#include "tensor/quant_simd.h"

namespace ckptkit {

static_assert(std::endian::native == std::endian::little, "GGUF block layouts are little-endian");

namespace detail {

namespace {
inline uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
inline float float_of(uint32_t u) { return std::bit_cast<float>(u); }
}  // namespace

// The FP16 algorithm of ggml-impl.h (Maratyszcza's FP16 library): the addition of `base` to a
// power of two makes the FPU round the mantissa to 10 bits (to nearest even).
uint16_t ggml_fp32_to_fp16(float f) {
  const float scale_to_inf = float_of(0x77800000u);   // 2^112
  const float scale_to_zero = float_of(0x08800000u);  // 2^-110
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = bits_of(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = float_of((bias >> 1) + 0x07800000u) + base;
  const uint32_t b = bits_of(base);
  const uint32_t exp_bits = (b >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = b & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

float ggml_fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = h & 0x7C00u;
  const uint32_t m = h & 0x03FFu;
  uint32_t f;
  if (e == 0x7C00u) {
    f = 0x7F800000u | (m << 13) | (m != 0 ? 0x00400000u : 0u);
  } else if (e == 0) {
    const float v = std::ldexp(static_cast<float>(m), -24);  // m * 2^-24, exact
    return sign != 0 ? -v : v;
  } else {
    f = ((static_cast<uint32_t>(h) & 0x7FFFu) << 13) + 0x38000000u;
  }
  return float_of(sign | f);
}

}  // namespace detail

namespace {

using detail::ggml_fp16_to_fp32;
using detail::ggml_fp32_to_fp16;

constexpr int kQK = 32;    // elements of the 32-element types (Q4_0 … Q8_0, IQ4_NL)
constexpr int kQKK = 256;  // elements of a K-quant super-block (QK_K)
constexpr float kGroupMaxEps = 1e-15f;

// ggml's MIN/MAX macros, argument order kept.
template <typename T>
inline T gmin(T a, T b) {
  return a < b ? a : b;
}
template <typename T>
inline T gmax(T a, T b) {
  return a > b ? a : b;
}

inline int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  const int32_t i = std::bit_cast<int32_t>(val);
  return (i & 0x007fffff) - 0x00400000;
}

// The low byte of a float converted to an integer as x86-64 does it (cvttss2si): truncation,
// INT32_MIN for NaN and out-of-range. A float >= 2^31 in magnitude is a multiple of 256, so its
// low byte is 0 whatever the width of the conversion.
inline uint8_t trunc_byte(float f) {
  if (!(std::fabs(f) < 2147483648.f)) return 0;
  return static_cast<uint8_t>(static_cast<int32_t>(f));
}
// `(int8_t)(f)` in ggml.
inline int8_t trunc_i8(float f) { return static_cast<int8_t>(trunc_byte(f)); }

inline float f(int v) { return static_cast<float>(v); }

inline void put_half(uint8_t* p, uint16_t h) { std::memcpy(p, &h, 2); }
inline uint16_t get_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}
inline float get_f16(const uint8_t* p) { return ggml_fp16_to_fp32(get_half(p)); }

// --- block layouts (byte offsets) ------------------------------------------------------------
// Blocks are written and read through byte pointers: GGUF data need not be 2-byte aligned in
// memory, and the packing is explicit this way.
struct Layout {
  int block;
  int bytes;
};

// ===================== helpers of the K-quants (ggml-quants.c, same names) =====================

// Symmetric quantization of n values to [-nmax, nmax-1] (stored +nmax); returns the scale.
// rmse_type is 1 in every caller: weights are qw, or x^2 when qw is null.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = f(-nmax) / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = gmax(-nmax, gmin(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * f(l);
    suml2 += w * f(l) * f(l);
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(f(nmax) + 0.1f * f(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = gmax(-nmax, gmin(nmax - 1, l));
      const float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * f(l);
      suml2 += w * f(l) * f(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + gmax(-nmax, gmin(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q3_K reference: symmetric to [-nmax, nmax-1] with x^2 weights and coordinate-descent refinement.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = f(-nmax) / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = gmax(-nmax, gmin(nmax - 1, l));
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * f(l);
    suml2 += w * f(l) * f(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * f(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * f(L[i]) * f(L[i]);
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = gmax(-nmax, gmin(nmax - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * f(new_l);
          sl2 += w * f(new_l) * f(new_l);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Asymmetric quantization to [0, nmax] with a (non-positive) minimum; reference K-quants.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = f(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(gmax(0, gmin(nmax, l)));
    float diff = scale * f(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    const float w = weights[i];
    best_error += w * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * f(is) + f(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = gmax(0, gmin(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * f(l);
      sum_l2 += w * f(l) * f(l);
      sum_xl += w * f(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * f(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        const float w = weights[i];
        cur_error += w * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// The importance-matrix variant of make_qkx2_quants (weights always given here).
float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max <= min) {
    std::memset(L, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.f;
  }
  float iscale = f(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_mad = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(gmax(0, gmin(nmax, l)));
    float diff = scale * f(L[i]) + min - x[i];
    diff = diff * diff;
    const float w = weights[i];
    best_mad += w * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * f(is) + f(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = gmax(0, gmin(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * f(l);
      sum_l2 += w * f(l) * f(l);
      sum_xl += w * f(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float mad = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * f(Laux[i]) + this_min - x[i];
        diff = diff * diff;
        const float w = weights[i];
        mad += w * diff;
      }
      if (mad < best_mad) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_mad = mad;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Quantizes the (non-negative) sub-block scales of the importance path to [0, nmax].
// L is uint8_t as in ggml: a negative level wraps, and the refinement loop reads it wrapped.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = gmax(max, x[i]);
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = f(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * f(L[i]);
    const float w = quant_weights[i];
    best_mse += w * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * f(is) + f(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale_is * x[i]);
      l = gmin(nmax, l);
      const float diff = x[i] - scale_is * f(l);
      const float w = quant_weights[i];
      mse += w * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = gmin(nmax, l);
    L[i] = static_cast<uint8_t>(l);
    const float w = quant_weights[i];
    sumlx += w * x[i] * f(l);
    suml2 += w * f(l) * f(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      float slx = sumlx - w * x[i] * f(L[i]);
      float sl2 = suml2 - w * f(L[i]) * f(L[i]);
      if (slx > 0 && sl2 > 0) {
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = gmin(nmax, new_l);
        if (new_l != L[i]) {
          slx += w * x[i] * f(new_l);
          sl2 += w * f(new_l) * f(new_l);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// 6-bit scale j and min j of Q4_K/Q5_K's 12 packed bytes.
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// Packs 8 six-bit scales and mins (Q4_K/Q5_K layout).
inline void pack_scale_min_k4(int j, uint8_t ls, uint8_t lm, uint8_t* scales) {
  if (j < 4) {
    scales[j] = ls;
    scales[j + 4] = lm;
  } else {
    scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
    scales[j - 4] = static_cast<uint8_t>(scales[j - 4] | ((ls >> 4) << 6));
    scales[j - 0] = static_cast<uint8_t>(scales[j - 0] | ((lm >> 4) << 6));
  }
}

// Q3_K's signed 6-bit scale j (offset 32 removed).
inline int8_t q3k_scale(const uint8_t* scales, int j) {
  int8_t sc = static_cast<int8_t>(j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4);
  sc = static_cast<int8_t>((sc | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
  return sc;
}

// ============================ 32-element types (reference) ===================================

// Q4_0: d = -max/8 where max is the value of largest magnitude; levels truncate x/d + 8.5.
void q4_0_ref(const float* x, uint8_t* y) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < kQK; j++) {
    const float v = x[j];
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(y, ggml_fp32_to_fp16(d));
  for (int j = 0; j < kQK / 2; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[kQK / 2 + j] * id;
    const auto xi0 = static_cast<uint8_t>(gmin(int8_t{15}, trunc_i8(x0 + 8.5f)));
    const auto xi1 = static_cast<uint8_t>(gmin(int8_t{15}, trunc_i8(x1 + 8.5f)));
    y[2 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
  }
}

void q4_1_ref(const float* x, uint8_t* y) {
  float min = FLT_MAX;
  float max = -FLT_MAX;
  for (int j = 0; j < kQK; j++) {
    const float v = x[j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const float d = (max - min) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(y, ggml_fp32_to_fp16(d));
  put_half(y + 2, ggml_fp32_to_fp16(min));
  for (int j = 0; j < kQK / 2; ++j) {
    const float x0 = (x[j] - min) * id;
    const float x1 = (x[kQK / 2 + j] - min) * id;
    const auto xi0 = static_cast<uint8_t>(gmin(int8_t{15}, trunc_i8(x0 + 0.5f)));
    const auto xi1 = static_cast<uint8_t>(gmin(int8_t{15}, trunc_i8(x1 + 0.5f)));
    y[4 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
  }
}

// Packs 32 five-bit levels: low nibbles in qs, 5th bits in the u32 qh.
void pack_q5(const uint8_t* xi, uint8_t* qh_out, uint8_t* qs) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const uint8_t xi0 = xi[j];
    const uint8_t xi1 = xi[j + kQK / 2];
    qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
    qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
  }
  std::memcpy(qh_out, &qh, 4);
}

void q5_0_ref(const float* x, uint8_t* y) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < kQK; j++) {
    const float v = x[j];
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  const float d = max / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(y, ggml_fp32_to_fp16(d));
  uint8_t xi[kQK];
  for (int j = 0; j < kQK; ++j)
    xi[j] = static_cast<uint8_t>(gmin(int8_t{31}, trunc_i8(x[j] * id + 16.5f)));
  pack_q5(xi, y + 2, y + 6);
}

void q5_1_ref(const float* x, uint8_t* y) {
  float min = FLT_MAX;
  float max = -FLT_MAX;
  for (int j = 0; j < kQK; j++) {
    const float v = x[j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const float d = (max - min) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(y, ggml_fp32_to_fp16(d));
  put_half(y + 2, ggml_fp32_to_fp16(min));
  uint8_t xi[kQK];
  for (int j = 0; j < kQK; ++j) xi[j] = trunc_byte((x[j] - min) * id + 0.5f);
  pack_q5(xi, y + 4, y + 8);
}

void q8_0_ref(const float* x, uint8_t* y) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; j++) amax = gmax(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(y, ggml_fp32_to_fp16(d));
  for (int j = 0; j < kQK; ++j) y[2 + j] = trunc_byte(std::round(x[j] * id));
}

// ==================== 32-element types, importance path (one row at a time) ==================

// sigma2 of the importance weights: the mean square of the whole row.
float row_sigma2(const float* x, uint64_t n) {
  float sum_x2 = 0;
  for (uint64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / static_cast<float>(n);
}

void importance_weights(const float* x, const float* qw, float sigma2, int n, float* weight) {
  for (int j = 0; j < n; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
}

void q4_0_impl_row(const float* x, uint8_t* y, uint64_t n, const float* quant_weights) {
  const float sigma2 = row_sigma2(x, n);
  float weight[kQK];
  int8_t L[kQK];
  for (uint64_t ib = 0; ib < n / kQK; ++ib, y += 18) {
    const float* xb = x + kQK * ib;
    importance_weights(xb, quant_weights + kQK * ib, sigma2, kQK, weight);
    const float d = make_qx_quants(kQK, 8, xb, L, weight);
    put_half(y, ggml_fp32_to_fp16(d));
    for (int j = 0; j < 16; ++j) y[2 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void q4_1_impl_row(const float* x, uint8_t* y, uint64_t n, const float* quant_weights) {
  const float sigma2 = row_sigma2(x, n);
  float weight[kQK];
  uint8_t L[kQK], Laux[kQK];
  for (uint64_t ib = 0; ib < n / kQK; ++ib, y += 20) {
    const float* xb = x + kQK * ib;
    importance_weights(xb, quant_weights + kQK * ib, sigma2, kQK, weight);
    float min;
    const float d = make_qkx3_quants(kQK, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
    put_half(y, ggml_fp32_to_fp16(d));
    put_half(y + 2, ggml_fp32_to_fp16(-min));
    for (int j = 0; j < 16; ++j) y[4 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void q5_0_impl_row(const float* x, uint8_t* y, uint64_t n, const float* quant_weights) {
  const float sigma2 = row_sigma2(x, n);
  float weight[kQK];
  int8_t L[kQK];
  for (uint64_t ib = 0; ib < n / kQK; ++ib, y += 22) {
    const float* xb = x + kQK * ib;
    importance_weights(xb, quant_weights + kQK * ib, sigma2, kQK, weight);
    const float d = make_qx_quants(kQK, 16, xb, L, weight);
    put_half(y, ggml_fp32_to_fp16(d));
    uint8_t xi[kQK];
    for (int j = 0; j < kQK; ++j) xi[j] = static_cast<uint8_t>(L[j]);
    pack_q5(xi, y + 2, y + 6);
  }
}

void q5_1_impl_row(const float* x, uint8_t* y, uint64_t n, const float* quant_weights) {
  const float sigma2 = row_sigma2(x, n);
  float weight[kQK];
  uint8_t L[kQK], Laux[kQK];
  for (uint64_t ib = 0; ib < n / kQK; ++ib, y += 24) {
    const float* xb = x + kQK * ib;
    importance_weights(xb, quant_weights + kQK * ib, sigma2, kQK, weight);
    float min;
    const float d = make_qkx3_quants(kQK, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
    put_half(y, ggml_fp32_to_fp16(d));
    put_half(y + 2, ggml_fp32_to_fp16(-min));
    pack_q5(L, y + 4, y + 8);
  }
}

// ================================ K-quants: packing ==========================================

// Q2_K/Q3_K: four 2-bit levels per byte, elements l, l+32, l+64, l+96 of each 128.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQKK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                           (L[j + l + 96] << 6));
}

// ==================================== Q2_K ====================================================
// Layout offsets: scales 0, qs 16, d 80, dmin 82.

// Requantizes every 16-group against the fp16-rounded d/dmin and packs the levels.
void q2k_finish(const float* x, uint8_t* y, uint8_t* L) {
  const float d_all = get_f16(y + 80);
  const float dmin_all = get_f16(y + 82);
  float d[kQKK / 16], dm[kQKK / 16];
  for (int j = 0; j < kQKK / 16; ++j) {
    d[j] = d_all * f(y[j] & 0xF);
    dm[j] = dmin_all * f(y[j] >> 4);
  }
  if (!detail::requantize_groups_simd(x, kQKK / 16, 16, d, dm, 0, 3, 0, L)) {
    for (int j = 0; j < kQKK / 16; ++j) {
      if (d[j] == 0.0f) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int((x[16 * j + ii] + dm[j]) / d[j]);
        l = gmax(0, gmin(3, l));
        L[16 * j + ii] = static_cast<uint8_t>(l);
      }
    }
  }
  pack_2bit(L, y + 16);
}

// The reference Q2_K group step for one block (quant_simd.cc runs the same on SIMD lanes).
void q2k_ref_groups(const float* x, float* scales, float* mins, uint8_t* L) {
  uint8_t Laux[16];
  float weights[16];
  for (int j = 0; j < kQKK / 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f,
                                 0.1f, 15, true);
  }
}

void q2k_ref_finish(const float* x, const float* scales, const float* mins, uint8_t* L,
                    uint8_t* y) {
  const float q4scale = 15.f;
  float max_scale = 0;
  float max_min = 0;
  for (int j = 0; j < kQKK / 16; ++j) {
    const float scale = scales[j];
    if (scale > max_scale) max_scale = scale;
    const float min = mins[j];
    if (min > max_min) max_min = min;
  }
  if (max_scale > 0) {
    const float iscale = q4scale / max_scale;
    for (int j = 0; j < kQKK / 16; ++j)
      y[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
    put_half(y + 80, ggml_fp32_to_fp16(max_scale / q4scale));
  } else {
    for (int j = 0; j < kQKK / 16; ++j) y[j] = 0;
    put_half(y + 80, ggml_fp32_to_fp16(0.f));
  }
  if (max_min > 0) {
    const float iscale = q4scale / max_min;
    for (int j = 0; j < kQKK / 16; ++j)
      y[j] = static_cast<uint8_t>(y[j] | (nearest_int(iscale * mins[j]) << 4));
    put_half(y + 82, ggml_fp32_to_fp16(max_min / q4scale));
  } else {
    put_half(y + 82, ggml_fp32_to_fp16(0.f));
  }
  q2k_finish(x, y, L);
}

void q2k_ref(const float* x, uint8_t* y) {
  uint8_t L[kQKK];
  float scales[kQKK / 16], mins[kQKK / 16];
  q2k_ref_groups(x, scales, mins, L);
  q2k_ref_finish(x, scales, mins, L, y);
}

// Sum of squares of a super-block (importance paths).
float block_sum_x2(const float* x) {
  float s = 0;
  for (int j = 0; j < kQKK; ++j) s += x[j] * x[j];
  return s;
}

void q2k_impl(const float* x, uint8_t* y, const float* qw_block) {
  uint8_t L[kQKK];
  uint8_t Laux[16];
  float mins[kQKK / 16];
  float scales[kQKK / 16];
  float sw[kQKK / 16] = {};
  float weight[16];
  uint8_t Ls[kQKK / 16], Lm[kQKK / 16];
  const float sigma2 = block_sum_x2(x) / f(kQKK);
  for (int j = 0; j < kQKK / 16; ++j) {
    importance_weights(x + 16 * j, qw_block + 16 * j, sigma2, 16, weight);
    for (int l = 0; l < 16; ++l) sw[j] += weight[l];
    scales[j] =
        make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36);
  }
  const float dm = make_qp_quants(kQKK / 16, 15, scales, Ls, sw);
  const float mm = make_qp_quants(kQKK / 16, 15, mins, Lm, sw);
  put_half(y + 80, ggml_fp32_to_fp16(dm));
  put_half(y + 82, ggml_fp32_to_fp16(mm));
  for (int j = 0; j < kQKK / 16; ++j) y[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
  q2k_finish(x, y, L);
}

// ==================================== Q3_K ====================================================
// Layout offsets: hmask 0, qs 32, scales 96, d 108.

void q3k_pack_scale(int j, int l, uint8_t* scales) {
  if (j < 8) {
    scales[j] = static_cast<uint8_t>(l & 0xF);
  } else {
    scales[j - 8] = static_cast<uint8_t>(scales[j - 8] | ((l & 0xF) << 4));
  }
  l >>= 4;
  scales[j % 4 + 8] = static_cast<uint8_t>(scales[j % 4 + 8] | (l << (2 * (j / 4))));
}

// Q3_K's and Q6_K's last step: the 16 groups of 16 requantized against d_all * sc[j], levels
// clamped to [lo, hi] and stored with the offset -lo; groups whose d is 0 keep their levels.
template <typename Scale>
void requantize16_signed(const float* x, float d_all, const Scale* sc, int lo, int hi,
                         int8_t* L) {
  float d[kQKK / 16];
  for (int j = 0; j < kQKK / 16; ++j) d[j] = d_all * f(sc[j]);
  if (detail::requantize_groups_simd(x, kQKK / 16, 16, d, nullptr, lo, hi, -lo,
                                     reinterpret_cast<uint8_t*>(L)))
    return;
  for (int j = 0; j < kQKK / 16; ++j) {
    if (d[j] == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int(x[16 * j + ii] / d[j]);
      l = gmax(lo, gmin(hi, l));
      L[16 * j + ii] = static_cast<int8_t>(l - lo);
    }
  }
}

// Requantizes against the signed 6-bit scales sc[j] (as packed at y + 96) and the fp16 d, and
// packs the levels.
void q3k_finish(const float* x, const int* sc, uint8_t* y, int8_t* L) {
  requantize16_signed(x, get_f16(y + 108), sc, -4, 3, L);
  // The high bit of elements 0..31 goes to bit 0 of hmask[0..31], of 32..63 to bit 1, etc.
  // Every level is in 0..7 here (the group steps give l + 4 with l in [-4, 3], or 0), so
  // ggml's "if (L > 3) { set the bit; L -= 4 }" is bit 2 and the low two bits, without the
  // branch (which mispredicts on every other element of real weights).
  uint8_t* hmask = y;
  std::memset(hmask, 0, kQKK / 8);
  for (int k = 0; k < 8; ++k)
    for (int m = 0; m < kQKK / 8; ++m)
      hmask[m] = static_cast<uint8_t>(hmask[m] | (((L[32 * k + m] >> 2) & 1) << k));
  uint8_t* qs = y + 32;
  for (int j = 0; j < kQKK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>((L[j + l] & 3) | ((L[j + l + 32] & 3) << 2) |
                                           ((L[j + l + 64] & 3) << 4) | ((L[j + l + 96] & 3) << 6));
}

// Packs the 16 scales l + 32 (0..63) as q3k_pack_scale does one at a time: the low nibbles of
// scales 0..7 and 8..15 share bytes 0..7, the high two bits of scales m, m+4, m+8, m+12 form
// byte 8 + m.
void q3k_pack_scales(const int* l, uint8_t* scales) {
  for (int k = 0; k < 8; ++k)
    scales[k] = static_cast<uint8_t>((l[k] & 0xF) | ((l[k + 8] & 0xF) << 4));
  for (int m = 0; m < 4; ++m)
    scales[8 + m] = static_cast<uint8_t>((l[m] >> 4) | ((l[m + 4] >> 4) << 2) |
                                         ((l[m + 8] >> 4) << 4) | ((l[m + 12] >> 4) << 6));
}

// The reference Q3_K group step for one block (quant_simd.cc runs the same on SIMD lanes).
void q3k_ref_groups(const float* x, float* scales, int8_t* L) {
  for (int j = 0; j < kQKK / 16; ++j) scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
}

void q3k_ref_finish(const float* x, const float* scales, int8_t* L, uint8_t* y) {
  float max_scale = 0;
  float amax = 0;
  for (int j = 0; j < kQKK / 16; ++j) {
    // ggml's `if (scale > amax)` as selects: the running maximum changes at random places.
    const float scale = std::fabs(scales[j]);
    const bool bigger = scale > amax;
    max_scale = bigger ? scales[j] : max_scale;
    amax = bigger ? scale : amax;
  }
  int sc[kQKK / 16];  // the signed scales as ggml unpacks them: -32 from zero bytes
  for (int& v : sc) v = -32;
  if (max_scale != 0.0f) {
    const float iscale = -32.f / max_scale;
    int l[kQKK / 16];
    for (int j = 0; j < kQKK / 16; ++j) {
      const auto lj = static_cast<int8_t>(nearest_int(iscale * scales[j]));
      l[j] = gmax(-32, gmin(31, static_cast<int>(lj))) + 32;
      sc[j] = l[j] - 32;
    }
    q3k_pack_scales(l, y + 96);
    put_half(y + 108, ggml_fp32_to_fp16(1 / iscale));
  } else {
    std::memset(y + 96, 0, 12);
    put_half(y + 108, ggml_fp32_to_fp16(0.f));
  }
  q3k_finish(x, sc, y, L);
}

void q3k_ref(const float* x, uint8_t* y) {
  int8_t L[kQKK];
  float scales[kQKK / 16];
  q3k_ref_groups(x, scales, L);
  q3k_ref_finish(x, scales, L, y);
}

void q3k_impl(const float* x, uint8_t* y, const float* qw_block) {
  int8_t L[kQKK];
  float scales[kQKK / 16];
  float weight[16];
  float sw[kQKK / 16];
  int8_t Ls[kQKK / 16];
  const float sigma2 = 2 * block_sum_x2(x) / f(kQKK);
  for (int j = 0; j < kQKK / 16; ++j) {
    importance_weights(x + 16 * j, qw_block + 16 * j, sigma2, 16, weight);
    float sumw = 0;
    for (int l = 0; l < 16; ++l) sumw += weight[l];
    sw[j] = sumw;
    scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
  }
  uint8_t* sc = y + 96;
  std::memset(sc, 0, 12);
  const float d_block = make_qx_quants(kQKK / 16, 32, scales, Ls, sw);
  for (int j = 0; j < kQKK / 16; ++j) q3k_pack_scale(j, Ls[j], sc);
  put_half(y + 108, ggml_fp32_to_fp16(d_block));
  int scs[kQKK / 16];
  for (int j = 0; j < kQKK / 16; ++j) scs[j] = q3k_scale(sc, j);
  q3k_finish(x, scs, y, L);
}

// =============================== Q4_K and Q5_K ================================================
// Layout offsets: d 0, dmin 2, scales 4 (12 bytes); Q4_K qs 16; Q5_K qh 16, qs 48.

// The reference path's group step on one group of 32: weights av_x + |x| and
// make_qkx2_quants; returns the scale, `*min` the (positive) minimum.
float qk45_ref_group(const float* x, int nmax, float rmin, int nstep, uint8_t* L,
                     float* min = nullptr) {
  uint8_t Laux[32];
  float weights[32];
  float sum_x2 = 0;
  for (int l = 0; l < 32; ++l) sum_x2 += x[l] * x[l];
  const float av_x = std::sqrt(sum_x2 / 32.0f);
  for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[l]);
  float the_min = 0;
  const float scale =
      make_qkx2_quants(32, nmax, x, weights, L, &the_min, Laux, rmin, 0.1f, nstep, false);
  if (min != nullptr) *min = the_min;
  return scale;
}

// The group step for one block, on each of its 8 groups (quant_simd.cc runs the same on SIMD
// lanes).
void qk45_ref_groups(const float* x, int nmax, float rmin, int nstep, float* scales, float* mins,
                     uint8_t* L) {
  for (int j = 0; j < kQKK / 32; ++j)
    scales[j] = qk45_ref_group(x + 32 * j, nmax, rmin, nstep, L + 32 * j, &mins[j]);
}

// The reference path's 6-bit quantization of the 8 group scales and mins, and d/dmin.
void qk45_ref_scales(const float* scales, const float* mins, uint8_t* y) {
  float max_scale = 0;
  float max_min = 0;
  for (int j = 0; j < kQKK / 32; ++j) {
    const float scale = scales[j];
    if (scale > max_scale) max_scale = scale;
    const float min = mins[j];
    if (min > max_min) max_min = min;
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < kQKK / 32; ++j) {
    auto ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
    auto lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
    ls = gmin(uint8_t{63}, ls);
    lm = gmin(uint8_t{63}, lm);
    pack_scale_min_k4(j, ls, lm, y + 4);
  }
  put_half(y, ggml_fp32_to_fp16(max_scale / 63.f));
  put_half(y + 2, ggml_fp32_to_fp16(max_min / 63.f));
}

// The importance path's choice (clamp63: Q5_K clamps the levels to 63, Q4_K does not).
void qk45_impl_scales(const float* x, const float* qw_block, int nmax, bool clamp63, uint8_t* L,
                      uint8_t* y) {
  uint8_t Laux[32];
  uint8_t Ls[kQKK / 32];
  uint8_t Lm[kQKK / 32];
  float weights[32];
  float sw[kQKK / 32];
  float mins[kQKK / 32];
  float scales[kQKK / 32];
  const float sigma2 = 2 * block_sum_x2(x) / f(kQKK);
  for (int j = 0; j < kQKK / 32; ++j) {
    importance_weights(x + 32 * j, qw_block + 32 * j, sigma2, 32, weights);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    sw[j] = sumw;
    scales[j] = make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f,
                                 0.05f, 36);
  }
  const float d_block = make_qp_quants(kQKK / 32, 63, scales, Ls, sw);
  const float m_block = make_qp_quants(kQKK / 32, 63, mins, Lm, sw);
  for (int j = 0; j < kQKK / 32; ++j) {
    uint8_t ls = Ls[j];
    uint8_t lm = Lm[j];
    if (clamp63) {
      ls = gmin(uint8_t{63}, ls);
      lm = gmin(uint8_t{63}, lm);
    }
    pack_scale_min_k4(j, ls, lm, y + 4);
  }
  put_half(y, ggml_fp32_to_fp16(d_block));
  put_half(y + 2, ggml_fp32_to_fp16(m_block));
}

// Requantizes against the packed 6-bit scales/mins and fp16-rounded d/dmin.
void qk45_requantize(const float* x, const uint8_t* y, int nmax, uint8_t* L) {
  const float d_all = get_f16(y);
  const float dmin_all = get_f16(y + 2);
  float d[kQKK / 32], dm[kQKK / 32];
  for (int j = 0; j < kQKK / 32; ++j) {
    uint8_t sc, m;
    get_scale_min_k4(j, y + 4, &sc, &m);
    d[j] = d_all * f(sc);
    dm[j] = dmin_all * f(m);
  }
  if (detail::requantize_groups_simd(x, kQKK / 32, 32, d, dm, 0, nmax, 0, L)) return;
  for (int j = 0; j < kQKK / 32; ++j) {
    if (d[j] == 0.0f) continue;
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dm[j]) / d[j]);
      l = gmax(0, gmin(nmax, l));
      L[32 * j + ii] = static_cast<uint8_t>(l);
    }
  }
}

void q4k_pack(const uint8_t* L, uint8_t* y) {
  uint8_t* q = y + 16;
  for (int j = 0; j < kQKK; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

// Levels 0..31 (every path clamps to nmax = 31), so ggml's "if (l > 15) { l -= 16; set bit }"
// equals taking the low nibble and the bit 4 without branches (which mispredict on noise).
void q5k_pack(const uint8_t* L, uint8_t* y) {
  uint8_t* qh = y + 16;
  uint8_t* ql = y + 48;
  std::memset(qh, 0, kQKK / 8);
  for (int n = 0, shift = 0; n < kQKK; n += 64, shift += 2) {
    for (int j = 0; j < 32; ++j) {
      const int l1 = L[n + j];
      const int l2 = L[n + j + 32];
      qh[j] = static_cast<uint8_t>(qh[j] | (((l1 >> 4) & 1) << shift) |
                                   (((l2 >> 4) & 1) << (shift + 1)));
      ql[n / 2 + j] = static_cast<uint8_t>((l1 & 0xF) | ((l2 & 0xF) << 4));
    }
  }
}

void q4k_ref(const float* x, uint8_t* y) {
  uint8_t L[kQKK];
  float scales[kQKK / 32], mins[kQKK / 32];
  qk45_ref_groups(x, 15, -1.f, 20, scales, mins, L);
  qk45_ref_scales(scales, mins, y);
  qk45_requantize(x, y, 15, L);
  q4k_pack(L, y);
}

void q4k_impl(const float* x, uint8_t* y, const float* qw_block) {
  uint8_t L[kQKK];
  qk45_impl_scales(x, qw_block, 15, false, L, y);
  qk45_requantize(x, y, 15, L);
  q4k_pack(L, y);
}

void q5k_ref(const float* x, uint8_t* y) {
  uint8_t L[kQKK];
  float scales[kQKK / 32], mins[kQKK / 32];
  qk45_ref_groups(x, 31, -0.5f, 15, scales, mins, L);
  qk45_ref_scales(scales, mins, y);
  qk45_requantize(x, y, 31, L);
  q5k_pack(L, y);
}

// Q4_K/Q5_K reference on many blocks: the group step, nearly all of the time, runs on SIMD lanes
// across groups (quant_simd.cc; bit-identical to qk45_ref_groups), the rest per block.
void qk45_ref_blocks(const float* x, uint64_t blocks, bool q5, uint8_t* y) {
  const int nmax = q5 ? 31 : 15;
  const float rmin = q5 ? -0.5f : -1.f;
  const int nstep = q5 ? 15 : 20;
  const int block_bytes = q5 ? 176 : 144;
  constexpr uint64_t kChunk = 16;  // blocks per SIMD call
  float scales[kChunk * 8], mins[kChunk * 8];
  uint8_t L[kChunk * kQKK];
  for (uint64_t b0 = 0; b0 < blocks; b0 += kChunk) {
    const uint64_t nb = blocks - b0 < kChunk ? blocks - b0 : kChunk;
    const float* xc = x + b0 * kQKK;
    // The SIMD group step leaves the levels out: requantization replaces them in every group
    // whose scale does not round to zero, and the few others are redone below.
    const bool simd = detail::qkx2_groups32_simd(xc, nb * 8, nmax, rmin, 0.1f, nstep, scales,
                                                 mins, nullptr);
    if (!simd) {
      for (uint64_t b = 0; b < nb; ++b)
        qk45_ref_groups(xc + b * kQKK, nmax, rmin, nstep, scales + 8 * b, mins + 8 * b,
                        L + kQKK * b);
    }
    for (uint64_t b = 0; b < nb; ++b) {
      uint8_t* yb = y + (b0 + b) * static_cast<uint64_t>(block_bytes);
      qk45_ref_scales(scales + 8 * b, mins + 8 * b, yb);
      if (simd) {
        const float d_all = get_f16(yb);
        for (int j = 0; j < kQKK / 32; ++j) {
          uint8_t sc, m;
          get_scale_min_k4(j, yb + 4, &sc, &m);
          if (d_all * f(sc) == 0.0f)
            qk45_ref_group(xc + b * kQKK + 32 * j, nmax, rmin, nstep, L + kQKK * b + 32 * j);
        }
      }
      qk45_requantize(xc + b * kQKK, yb, nmax, L + kQKK * b);
      if (q5) {
        q5k_pack(L + kQKK * b, yb);
      } else {
        q4k_pack(L + kQKK * b, yb);
      }
    }
  }
}

void q5k_impl(const float* x, uint8_t* y, const float* qw_block) {
  uint8_t L[kQKK];
  qk45_impl_scales(x, qw_block, 31, true, L, y);
  qk45_requantize(x, y, 31, L);
  q5k_pack(L, y);
}

// ==================================== Q6_K ====================================================
// Layout offsets: ql 0, qh 128, scales 192, d 208.

// The group step: make_qx_quants on the 16 groups (qw_block null: reference path, x^2 weights).
void q6k_groups(const float* x, const float* qw_block, float* scales, int8_t* L) {
  for (int ib = 0; ib < kQKK / 16; ++ib)
    scales[ib] =
        make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw_block ? qw_block + 16 * ib : nullptr);
}

void q6k_finish(const float* x, const float* scales, int8_t* L, uint8_t* y) {
  float max_scale = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < kQKK / 16; ++ib) {
    // ggml's `if (abs_scale > max_abs_scale)` as selects (the maximum changes at random places).
    const float scale = scales[ib];
    const float abs_scale = std::fabs(scale);
    const bool bigger = abs_scale > max_abs_scale;
    max_scale = bigger ? scale : max_scale;
    max_abs_scale = bigger ? abs_scale : max_abs_scale;
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(y, 0, 210);
    put_half(y + 208, ggml_fp32_to_fp16(0.f));
    return;
  }
  auto* sc = reinterpret_cast<int8_t*>(y + 192);
  const float iscale = -128.f / max_scale;
  put_half(y + 208, ggml_fp32_to_fp16(1 / iscale));
  for (int ib = 0; ib < kQKK / 16; ++ib)
    sc[ib] = static_cast<int8_t>(gmin(127, nearest_int(iscale * scales[ib])));
  requantize16_signed(x, get_f16(y + 208), sc, -32, 31, L);
  uint8_t* ql = y;
  uint8_t* qh = y + 128;
  for (int j = 0; j < kQKK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l + 0] & 0xF;
      const int q2 = L[j + l + 32] & 0xF;
      const int q3 = L[j + l + 64] & 0xF;
      const int q4 = L[j + l + 96] & 0xF;
      ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                   ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

void q6k(const float* x, uint8_t* y, const float* qw_block) {
  int8_t L[kQKK];
  float scales[kQKK / 16];
  q6k_groups(x, qw_block, scales, L);
  q6k_finish(x, scales, L, y);
}

// Q2_K reference on many blocks, the group step on SIMD lanes (see qk45_ref_blocks).
void q2k_ref_blocks(const float* x, uint64_t blocks, uint8_t* y) {
  constexpr uint64_t kChunk = 16;
  float scales[kChunk * 16], mins[kChunk * 16];
  uint8_t L[kChunk * kQKK];
  for (uint64_t b0 = 0; b0 < blocks; b0 += kChunk) {
    const uint64_t nb = blocks - b0 < kChunk ? blocks - b0 : kChunk;
    const float* xc = x + b0 * kQKK;
    if (!detail::qkx2_groups16_q2_simd(xc, nb * 16, scales, mins, L))
      for (uint64_t b = 0; b < nb; ++b)
        q2k_ref_groups(xc + b * kQKK, scales + 16 * b, mins + 16 * b, L + kQKK * b);
    for (uint64_t b = 0; b < nb; ++b)
      q2k_ref_finish(xc + b * kQKK, scales + 16 * b, mins + 16 * b, L + kQKK * b,
                     y + (b0 + b) * 84);
  }
}

// Q3_K reference on many blocks, the group step on SIMD lanes (see qk45_ref_blocks).
void q3k_ref_blocks(const float* x, uint64_t blocks, uint8_t* y) {
  constexpr uint64_t kChunk = 16;
  float scales[kChunk * 16];
  uint8_t L[kChunk * kQKK];
  for (uint64_t b0 = 0; b0 < blocks; b0 += kChunk) {
    const uint64_t nb = blocks - b0 < kChunk ? blocks - b0 : kChunk;
    const float* xc = x + b0 * kQKK;
    auto* Ls = reinterpret_cast<int8_t*>(L);  // levels 0..7: the same bytes either way
    if (!detail::q3_groups16_simd(xc, nb * 16, scales, L))
      for (uint64_t b = 0; b < nb; ++b)
        q3k_ref_groups(xc + b * kQKK, scales + 16 * b, Ls + kQKK * b);
    for (uint64_t b = 0; b < nb; ++b)
      q3k_ref_finish(xc + b * kQKK, scales + 16 * b, Ls + kQKK * b, y + (b0 + b) * 110);
  }
}

// Q6_K reference on many blocks, the group step on SIMD lanes.
void q6k_ref_blocks(const float* x, uint64_t blocks, uint8_t* y) {
  constexpr uint64_t kChunk = 16;
  float scales[kChunk * 16];
  uint8_t L[kChunk * kQKK];
  for (uint64_t b0 = 0; b0 < blocks; b0 += kChunk) {
    const uint64_t nb = blocks - b0 < kChunk ? blocks - b0 : kChunk;
    const float* xc = x + b0 * kQKK;
    auto* Ls = reinterpret_cast<int8_t*>(L);  // levels 0..63: the same bytes either way
    if (!detail::qx32_groups16_simd(xc, nb * 16, scales, L))
      for (uint64_t b = 0; b < nb; ++b)
        q6k_groups(xc + b * kQKK, nullptr, scales + 16 * b, Ls + kQKK * b);
    for (uint64_t b = 0; b < nb; ++b)
      q6k_finish(xc + b * kQKK, scales + 16 * b, Ls + kQKK * b, y + (b0 + b) * 210);
  }
}

// ================================ dequantization ==============================================

void dq_q4_0(const uint8_t* x, float* y) {
  const float d = get_f16(x);
  for (int j = 0; j < kQK / 2; ++j) {
    const int x0 = (x[2 + j] & 0x0F) - 8;
    const int x1 = (x[2 + j] >> 4) - 8;
    y[j] = f(x0) * d;
    y[j + kQK / 2] = f(x1) * d;
  }
}

void dq_q4_1(const uint8_t* x, float* y) {
  const float d = get_f16(x);
  const float m = get_f16(x + 2);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = f(x[4 + j] & 0x0F) * d + m;
    y[j + kQK / 2] = f(x[4 + j] >> 4) * d + m;
  }
}

void dq_q5(const uint8_t* qhp, const uint8_t* qs, int offset, float d, bool has_min, float m,
           float* y) {
  uint32_t qh;
  std::memcpy(&qh, qhp, 4);
  for (int j = 0; j < kQK / 2; ++j) {
    const uint32_t xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
    const uint32_t xh_1 = ((qh >> (j + 12))) & 0x10;
    const int x0 = static_cast<int>((qs[j] & 0x0Fu) | xh_0) - offset;
    const int x1 = static_cast<int>((qs[j] >> 4u) | xh_1) - offset;
    if (has_min) {
      y[j] = f(x0) * d + m;
      y[j + kQK / 2] = f(x1) * d + m;
    } else {
      y[j] = f(x0) * d;
      y[j + kQK / 2] = f(x1) * d;
    }
  }
}

void dq_q5_0(const uint8_t* x, float* y) { dq_q5(x + 2, x + 6, 16, get_f16(x), false, 0, y); }
void dq_q5_1(const uint8_t* x, float* y) {
  dq_q5(x + 4, x + 8, 0, get_f16(x), true, get_f16(x + 2), y);
}

void dq_q8_0(const uint8_t* x, float* y) {
  const float d = get_f16(x);
  for (int j = 0; j < kQK; ++j) y[j] = f(static_cast<int8_t>(x[2 + j])) * d;
}

void dq_q2_k(const uint8_t* x, float* y) {
  const float d = get_f16(x + 80);
  const float min = get_f16(x + 82);
  const uint8_t* q = x + 16;
  int is = 0;
  for (int n = 0; n < kQKK; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const uint8_t sc = x[is++];
        const float dl = d * f(sc & 0xF);
        const float ml = min * f(sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * f((q[l + 16 * half] >> shift) & 3) - ml;
      }
      shift += 2;
    }
    q += 32;
  }
}

void dq_q3_k(const uint8_t* x, float* y) {
  const float d_all = get_f16(x + 108);
  const uint8_t* q = x + 32;
  const uint8_t* hm = x;
  uint8_t m = 1;
  int is = 0;
  for (int n = 0; n < kQKK; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * f(q3k_scale(x + 96, is++));
        for (int l = 0; l < 16; ++l) {
          const int k = l + 16 * half;
          *y++ = dl * f(((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
        }
      }
      shift += 2;
      m = static_cast<uint8_t>(m << 1);
    }
    q += 32;
  }
}

void dq_q4_k(const uint8_t* x, float* y) {
  const float d = get_f16(x);
  const float min = get_f16(x + 2);
  const uint8_t* q = x + 16;
  int is = 0;
  uint8_t sc, m;
  for (int j = 0; j < kQKK; j += 64) {
    get_scale_min_k4(is + 0, x + 4, &sc, &m);
    const float d1 = d * f(sc);
    const float m1 = min * f(m);
    get_scale_min_k4(is + 1, x + 4, &sc, &m);
    const float d2 = d * f(sc);
    const float m2 = min * f(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * f(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * f(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

void dq_q5_k(const uint8_t* x, float* y) {
  const float d = get_f16(x);
  const float min = get_f16(x + 2);
  const uint8_t* qh = x + 16;
  const uint8_t* ql = x + 48;
  int is = 0;
  uint8_t sc, m;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < kQKK; j += 64) {
    get_scale_min_k4(is + 0, x + 4, &sc, &m);
    const float d1 = d * f(sc);
    const float m1 = min * f(m);
    get_scale_min_k4(is + 1, x + 4, &sc, &m);
    const float d2 = d * f(sc);
    const float m2 = min * f(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * f((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * f((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

void dq_q6_k(const uint8_t* x, float* y) {
  const float d = get_f16(x + 208);
  const uint8_t* ql = x;
  const uint8_t* qh = x + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(x + 192);
  for (int n = 0; n < kQKK; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * f(sc[is + 0]) * f(q1);
      y[l + 32] = d * f(sc[is + 2]) * f(q2);
      y[l + 64] = d * f(sc[is + 4]) * f(q3);
      y[l + 96] = d * f(sc[is + 6]) * f(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// IQ4_NL's non-linear levels (ggml-common.h kvalues_iq4nl).
constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

void dq_iq4_nl(const uint8_t* x, float* y) {
  const float d = get_f16(x);
  const uint8_t* qs = x + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * f(kIq4nlValues[qs[j] & 0xf]);
    y[j + kQK / 2] = d * f(kIq4nlValues[qs[j] >> 4]);
  }
}

void dq_iq4_xs(const uint8_t* x, float* y) {
  const float d = get_f16(x);
  const uint16_t scales_h = get_half(x + 2);
  const uint8_t* scales_l = x + 4;
  const uint8_t* qs = x + 8;
  for (int ib = 0; ib < kQKK / 32; ++ib) {
    const int ls = ((scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4);
    const float dl = d * f(ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j + 0] = dl * f(kIq4nlValues[qs[j] & 0xf]);
      y[j + 16] = dl * f(kIq4nlValues[qs[j] >> 4]);
    }
    y += 32;
    qs += 16;
  }
}

// ================================== dispatch ==================================================

struct Kernel {
  DType type;
  void (*ref)(const float* x, uint8_t* y);                                    // one block
  void (*impl_block)(const float* x, uint8_t* y, const float* qw);            // K-quants: one block
  void (*impl_row)(const float* x, uint8_t* y, uint64_t n, const float* qw);  // 32-el types
  void (*dequant)(const uint8_t* x, float* y);                                // one block
};

void q6k_ref(const float* x, uint8_t* y) { q6k(x, y, nullptr); }
void q6k_impl(const float* x, uint8_t* y, const float* qw) { q6k(x, y, qw); }

constexpr Kernel kKernels[] = {
    {DType::Q4_0, q4_0_ref, nullptr, q4_0_impl_row, dq_q4_0},
    {DType::Q4_1, q4_1_ref, nullptr, q4_1_impl_row, dq_q4_1},
    {DType::Q5_0, q5_0_ref, nullptr, q5_0_impl_row, dq_q5_0},
    {DType::Q5_1, q5_1_ref, nullptr, q5_1_impl_row, dq_q5_1},
    {DType::Q8_0, q8_0_ref, nullptr, nullptr, dq_q8_0},  // one algorithm for both paths
    {DType::Q2_K, q2k_ref, q2k_impl, nullptr, dq_q2_k},
    {DType::Q3_K, q3k_ref, q3k_impl, nullptr, dq_q3_k},
    {DType::Q4_K, q4k_ref, q4k_impl, nullptr, dq_q4_k},
    {DType::Q5_K, q5k_ref, q5k_impl, nullptr, dq_q5_k},
    {DType::Q6_K, q6k_ref, q6k_impl, nullptr, dq_q6_k},
    {DType::IQ4_NL, nullptr, nullptr, nullptr, dq_iq4_nl},
    {DType::IQ4_XS, nullptr, nullptr, nullptr, dq_iq4_xs},
};

const Kernel* find_kernel(DType t) {
  for (const Kernel& k : kKernels)
    if (k.type == t) return &k;
  return nullptr;
}

}  // namespace

void detail::q3k_reference_groups(const float* x, uint64_t blocks, float* scales, uint8_t* L) {
  if (!q3_groups16_simd(x, blocks * 16, scales, L))
    for (uint64_t b = 0; b < blocks; ++b)
      q3k_ref_groups(x + b * kQKK, scales + 16 * b, reinterpret_cast<int8_t*>(L) + kQKK * b);
}

void detail::q6k_reference_groups(const float* x, uint64_t blocks, float* scales, uint8_t* L) {
  if (!qx32_groups16_simd(x, blocks * 16, scales, L))
    for (uint64_t b = 0; b < blocks; ++b)
      q6k_groups(x + b * kQKK, nullptr, scales + 16 * b, reinterpret_cast<int8_t*>(L) + kQKK * b);
}

bool can_quantize(DType t) {
  const Kernel* k = find_kernel(t);
  return k != nullptr && k->ref != nullptr;
}

bool can_dequantize(DType t) { return find_kernel(t) != nullptr; }

Status quantize_rows(DType type, QuantPath path, const float* src, uint64_t rows,
                     uint64_t row_elems, uint8_t* dst) {
  const Kernel* k = find_kernel(type);
  if (k == nullptr || k->ref == nullptr)
    return error(ErrorCode::kInvalidArgument, "cannot quantize to {}", dtype_name(type));
  const DTypeInfo& info = dtype_info(type);
  if (row_elems % info.block != 0)
    return error(ErrorCode::kInvalidArgument,
                 "{} rows of {} elements: the row length must be a multiple of {}",
                 dtype_name(type), row_elems, info.block);
  if (rows != 0 && row_elems > std::numeric_limits<uint64_t>::max() / rows)
    return error(ErrorCode::kInvalidArgument, "{} x {} elements overflow", rows, row_elems);
  const uint64_t blocks_per_row = row_elems / info.block;
  const uint64_t row_bytes = blocks_per_row * info.block_bytes;

  if (path == QuantPath::kReference || (k->impl_block == nullptr && k->impl_row == nullptr)) {
    // The reference algorithm never looks across blocks, so rows do not matter.
    const uint64_t blocks = rows * blocks_per_row;
    if (type == DType::Q4_K || type == DType::Q5_K) {
      qk45_ref_blocks(src, blocks, type == DType::Q5_K, dst);
      return Status::ok();
    }
    if (type == DType::Q2_K) {
      q2k_ref_blocks(src, blocks, dst);
      return Status::ok();
    }
    if (type == DType::Q3_K) {
      q3k_ref_blocks(src, blocks, dst);
      return Status::ok();
    }
    if (type == DType::Q6_K) {
      q6k_ref_blocks(src, blocks, dst);
      return Status::ok();
    }
    if (type == DType::Q8_0) {
      // SIMD up to each block with a NaN or an infinity, that block in scalar code, and on.
      for (uint64_t b = 0; b < blocks;) {
        b += detail::q8_0_blocks_simd(src + b * info.block, blocks - b, dst + b * info.block_bytes);
        if (b < blocks) {
          q8_0_ref(src + b * info.block, dst + b * info.block_bytes);
          ++b;
        }
      }
      return Status::ok();
    }
    for (uint64_t b = 0; b < blocks; ++b) k->ref(src + b * info.block, dst + b * info.block_bytes);
    return Status::ok();
  }

  // ggml multiplies by the importance values even when they are ones (x * 1.0f is exact, NaN
  // included), so a real row of ones keeps the code identical to the general case.
  const std::vector<float> ones(row_elems, 1.0f);
  for (uint64_t r = 0; r < rows; ++r) {
    const float* x = src + r * row_elems;
    uint8_t* y = dst + r * row_bytes;
    if (k->impl_row != nullptr) {
      if (row_elems != 0) k->impl_row(x, y, row_elems, ones.data());
    } else {
      for (uint64_t b = 0; b < blocks_per_row; ++b)
        k->impl_block(x + b * info.block, y + b * info.block_bytes, ones.data() + b * info.block);
    }
  }
  return Status::ok();
}

Status dequantize_blocks(DType type, const uint8_t* src, uint64_t count, float* dst) {
  const Kernel* k = find_kernel(type);
  if (k == nullptr)
    return error(ErrorCode::kInvalidArgument, "cannot dequantize {}", dtype_name(type));
  const DTypeInfo& info = dtype_info(type);
  if (count % info.block != 0)
    return error(ErrorCode::kInvalidArgument, "{} elements of {}: not a multiple of the block ({})",
                 count, dtype_name(type), info.block);
  const uint64_t blocks = count / info.block;
  for (uint64_t b = 0; b < blocks; ++b)
    k->dequant(src + b * info.block_bytes, dst + b * info.block);
  return Status::ok();
}

}  // namespace ckptkit
