// Dtype conversion kernels. Compiled once per SIMD target by Highway (foreach_target) and
// dispatched at run time. The float formats are converted with integer arithmetic on the bit
// patterns, so every target — with or without F16C — produces the same bits; the only float
// operation is one addition that rounds subnormal results (its unit in the last place is chosen
// to equal the target format's subnormal step, so the FPU's own round-to-nearest-even does it).
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/tensor/cast.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "ckptkit/cast.h"

HWY_BEFORE_NAMESPACE();
namespace ckptkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Runs `body(src, dst)` on full vectors of `lanes` elements, then once more on a zero-padded
// copy of the tail so that no scalar twin of the algorithm is needed.
template <typename In, typename Out, typename Body>
HWY_INLINE void for_each_block(const In* in, Out* out, size_t n, size_t lanes, Body body) {
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) body(in + i, out + i);
  if (i < n) {
    alignas(64) In tin[HWY_MAX_BYTES / sizeof(In) + 16] = {};
    alignas(64) Out tout[HWY_MAX_BYTES / sizeof(In) + 16];
    std::memcpy(tin, in + i, (n - i) * sizeof(In));
    body(tin, tout);
    std::memcpy(out + i, tout, (n - i) * sizeof(Out));
  }
}

// |f| < 2^-14 as an F16 subnormal: bits(|f| + 0.5f) - bits(0.5f). The ulp of 0.5f is 2^-24,
// the F16 subnormal step, so the addition rounds to nearest even exactly where F16 must.
void F32ToF16(const float* HWY_RESTRICT in, uint16_t* HWY_RESTRICT out, size_t n) {
  const hn::ScalableTag<int32_t> di;
  const hn::Rebind<float, decltype(di)> df;
  const hn::Rebind<uint16_t, decltype(di)> d16;
  for_each_block(in, out, n, hn::Lanes(di), [&](const float* src, uint16_t* dst) {
    const auto bits = hn::BitCast(di, hn::LoadU(df, src));
    const auto sign = hn::And(hn::ShiftRight<16>(bits), hn::Set(di, 0x8000));
    const auto x = hn::And(bits, hn::Set(di, 0x7FFFFFFF));
    const auto r = hn::Sub(x, hn::Set(di, 0x38000000));  // rebias 127 -> 15
    const auto odd = hn::And(hn::ShiftRight<13>(r), hn::Set(di, 1));
    const auto normal = hn::ShiftRight<13>(hn::Add(hn::Add(r, hn::Set(di, 0xFFF)), odd));
    const auto sub = hn::Sub(hn::BitCast(di, hn::Add(hn::BitCast(df, x), hn::Set(df, 0.5f))),
                             hn::Set(di, 0x3F000000));
    auto h = hn::IfThenElse(hn::Lt(x, hn::Set(di, 0x38800000)), sub, normal);
    h = hn::IfThenElse(hn::Lt(x, hn::Set(di, 0x477FF000)), h, hn::Set(di, 0x7C00));
    h = hn::IfThenElse(hn::Gt(x, hn::Set(di, 0x7F800000)), hn::Set(di, 0x7E00), h);
    hn::StoreU(hn::DemoteTo(d16, hn::Or(h, sign)), d16, dst);
  });
}

void F16ToF32(const uint16_t* HWY_RESTRICT in, float* HWY_RESTRICT out, size_t n) {
  const hn::ScalableTag<int32_t> di;
  const hn::Rebind<uint32_t, decltype(di)> du;
  const hn::Rebind<float, decltype(di)> df;
  const hn::Rebind<uint16_t, decltype(di)> d16;
  for_each_block(in, out, n, hn::Lanes(di), [&](const uint16_t* src, float* dst) {
    const auto h = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d16, src)));
    const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(di, 0x8000)));
    const auto e = hn::And(h, hn::Set(di, 0x7C00));
    const auto m = hn::And(h, hn::Set(di, 0x3FF));
    const auto normal =
        hn::Add(hn::ShiftLeft<13>(hn::And(h, hn::Set(di, 0x7FFF))), hn::Set(di, 0x38000000));
    // m * 2^-24, exactly: the float 0.5 + m*2^-24 minus 0.5.
    const auto sub = hn::BitCast(
        di, hn::Sub(hn::BitCast(df, hn::Or(m, hn::Set(di, 0x3F000000))), hn::Set(df, 0.5f)));
    const auto quiet = hn::IfThenElseZero(hn::Ne(m, hn::Zero(di)), hn::Set(di, 0x00400000));
    const auto special = hn::Or(hn::Or(hn::Set(di, 0x7F800000), hn::ShiftLeft<13>(m)), quiet);
    auto f = hn::IfThenElse(hn::Eq(e, hn::Zero(di)), sub, normal);
    f = hn::IfThenElse(hn::Eq(e, hn::Set(di, 0x7C00)), special, f);
    hn::StoreU(hn::BitCast(df, hn::Or(f, sign)), df, dst);
  });
}

// `nan_bits` is what every NaN becomes: PyTorch writes 0xFFFF when the source is F32 (its
// vectorized kernel) and 0x7FC0 when it is F16 (a scalar conversion through float).
void F32ToBF16Nan(const float* HWY_RESTRICT in, uint16_t* HWY_RESTRICT out, size_t n,
                  uint16_t nan_bits) {
  const hn::ScalableTag<uint32_t> du;
  const hn::Rebind<int32_t, decltype(du)> di;
  const hn::Rebind<float, decltype(du)> df;
  const hn::Rebind<uint16_t, decltype(du)> d16;
  for_each_block(in, out, n, hn::Lanes(du), [&](const float* src, uint16_t* dst) {
    const auto v = hn::LoadU(df, src);
    const auto u = hn::BitCast(du, v);
    const auto odd = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
    auto r = hn::ShiftRight<16>(hn::Add(hn::Add(u, hn::Set(du, 0x7FFFu)), odd));
    // IsNaN, not v != v: the ordered compare Highway uses for != is false for NaN.
    r = hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)), hn::Set(du, uint32_t{nan_bits}), r);
    hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, r)), d16, dst);
  });
}

void F32ToBF16(const float* HWY_RESTRICT in, uint16_t* HWY_RESTRICT out, size_t n) {
  F32ToBF16Nan(in, out, n, 0xFFFF);
}

void F16ToBF16(const uint16_t* HWY_RESTRICT in, uint16_t* HWY_RESTRICT out, size_t n) {
  constexpr size_t kBlock = 1024;
  alignas(64) float tmp[kBlock];
  for (size_t i = 0; i < n; i += kBlock) {
    const size_t k = n - i < kBlock ? n - i : kBlock;
    F16ToF32(in + i, tmp, k);
    F32ToBF16Nan(tmp, out + i, k, 0x7FC0);
  }
}

void BF16ToF32(const uint16_t* HWY_RESTRICT in, float* HWY_RESTRICT out, size_t n) {
  const hn::ScalableTag<uint32_t> du;
  const hn::Rebind<float, decltype(du)> df;
  const hn::Rebind<uint16_t, decltype(du)> d16;
  for_each_block(in, out, n, hn::Lanes(du), [&](const uint16_t* src, float* dst) {
    const auto u = hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, src)));
    hn::StoreU(hn::BitCast(df, u), df, dst);
  });
}

void F64ToF32(const double* HWY_RESTRICT in, float* HWY_RESTRICT out, size_t n) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  for_each_block(in, out, n, hn::Lanes(dd), [&](const double* src, float* dst) {
    hn::StoreU(hn::DemoteTo(df, hn::LoadU(dd, src)), df, dst);
  });
}

void F32ToF64(const float* HWY_RESTRICT in, double* HWY_RESTRICT out, size_t n) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  for_each_block(in, out, n, hn::Lanes(dd), [&](const float* src, double* dst) {
    hn::StoreU(hn::PromoteTo(dd, hn::LoadU(df, src)), dd, dst);
  });
}

// FP8 with `M` mantissa bits and exponent bias `B`. Normal results round the dropped 23-M
// bits to nearest even; results below the smallest normal use the float-addition trick with
// an addend whose ulp is the FP8 subnormal step.
template <int M, int B>
HWY_INLINE void F32ToF8(const float* HWY_RESTRICT in, uint8_t* HWY_RESTRICT out, size_t n,
                        int32_t overflow_from, bool overflow_is_nan) {
  const hn::ScalableTag<int32_t> di;
  const hn::Rebind<float, decltype(di)> df;
  const hn::Rebind<uint8_t, decltype(di)> d8;
  constexpr int kDrop = 23 - M;
  constexpr int32_t kRebias = (127 - B) << 23;
  constexpr int32_t kMinNormal = (128 - B) << 23;               // 2^(1-B)
  constexpr int32_t kSubAddend = (127 + 23 + 1 - B - M) << 23;  // ulp = 2^(1-B-M)
  for_each_block(in, out, n, hn::Lanes(di), [&](const float* src, uint8_t* dst) {
    const auto bits = hn::BitCast(di, hn::LoadU(df, src));
    const auto sign = hn::And(hn::ShiftRight<24>(bits), hn::Set(di, 0x80));
    const auto x = hn::And(bits, hn::Set(di, 0x7FFFFFFF));
    const auto r = hn::Sub(x, hn::Set(di, kRebias));
    const auto odd = hn::And(hn::ShiftRight<kDrop>(r), hn::Set(di, 1));
    const auto normal =
        hn::ShiftRight<kDrop>(hn::Add(hn::Add(r, hn::Set(di, (1 << (kDrop - 1)) - 1)), odd));
    const auto addend = hn::Set(di, kSubAddend);
    const auto sub =
        hn::Sub(hn::BitCast(di, hn::Add(hn::BitCast(df, x), hn::BitCast(df, addend))), addend);
    auto h = hn::IfThenElse(hn::Lt(x, hn::Set(di, kMinNormal)), sub, normal);
    const auto big = hn::Set(di, overflow_is_nan ? 0x7F : 0x7C);
    h = hn::IfThenElse(hn::Lt(x, hn::Set(di, overflow_from)), h, big);
    h = hn::IfThenElse(hn::Gt(x, hn::Set(di, 0x7F800000)), hn::Set(di, 0x7F), h);
    hn::StoreU(hn::DemoteTo(d8, hn::Or(h, sign)), d8, dst);
  });
}

void F32ToE4M3(const float* HWY_RESTRICT in, uint8_t* HWY_RESTRICT out, size_t n) {
  // 480 = the first value past 448 that is not rounded down; everything from there is NaN.
  F32ToF8<3, 7>(in, out, n, 0x43F00000, true);
}

void F32ToE5M2(const float* HWY_RESTRICT in, uint8_t* HWY_RESTRICT out, size_t n) {
  // 65536 = 2^16; [61440, 65536) already rounds to Inf through the normal path.
  F32ToF8<2, 15>(in, out, n, 0x47800000, false);
}

// NaN, Inf and zero counts and the largest finite |x| (as bits: IEEE order is value order for
// non-negative floats) of F32 values, on their bit patterns. out: {nan, inf, zero, max_bits}.
void F32Stats(const float* HWY_RESTRICT in, size_t n, uint64_t* HWY_RESTRICT out) {
  const hn::ScalableTag<uint32_t> du;
  const hn::Rebind<float, decltype(du)> df;
  const size_t lanes = hn::Lanes(du);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  const auto inf = hn::Set(du, 0x7F800000u);
  const auto one = hn::Set(du, 1u);
  auto vmax = hn::Zero(du);
  uint64_t nan = 0, infs = 0, zero = 0;
  size_t i = 0;
  // Lane counters are 32-bit: flush them before they could overflow.
  constexpr size_t kBlock = size_t{1} << 24;
  while (i + lanes <= n) {
    auto vnan = hn::Zero(du), vinf = hn::Zero(du), vzero = hn::Zero(du);
    const size_t stop = std::min(n - (n - i) % lanes, i + kBlock);
    for (; i + lanes <= stop; i += lanes) {
      const auto a = hn::And(hn::BitCast(du, hn::LoadU(df, in + i)), abs_mask);
      vnan = hn::Add(vnan, hn::IfThenElseZero(hn::Gt(a, inf), one));
      vinf = hn::Add(vinf, hn::IfThenElseZero(hn::Eq(a, inf), one));
      vzero = hn::Add(vzero, hn::IfThenElseZero(hn::Eq(a, hn::Zero(du)), one));
      vmax = hn::Max(vmax, hn::IfThenElseZero(hn::Lt(a, inf), a));
    }
    nan += hn::GetLane(hn::SumOfLanes(du, vnan));
    infs += hn::GetLane(hn::SumOfLanes(du, vinf));
    zero += hn::GetLane(hn::SumOfLanes(du, vzero));
  }
  uint32_t max_bits = static_cast<uint32_t>(out[3]);
  max_bits = std::max(max_bits, hn::GetLane(hn::MaxOfLanes(du, vmax)));
  for (; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, in + i, 4);
    const uint32_t a = b & 0x7FFFFFFFu;
    nan += a > 0x7F800000u;
    infs += a == 0x7F800000u;
    zero += a == 0;
    if (a < 0x7F800000u) max_bits = std::max(max_bits, a);
  }
  out[0] += nan;
  out[1] += infs;
  out[2] += zero;
  out[3] = max_bits;
}

}  // namespace HWY_NAMESPACE
}  // namespace ckptkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "io/errors.h"
#include "tensor/dispatch.h"

namespace ckptkit {

// Runtime dispatch. Highway's own (HWY_EXPORT / HWY_DYNAMIC_DISPATCH) needs libhwy.so, whose
// static initializers measure the timer resolution when the library loads: ~5 ms on every run
// of every command, a quarter of `inspect`'s budget. The ops themselves are header-only, so
// the per-target functions are picked here from the CPU's feature bits instead.
namespace {

struct Kernels {
  const char* name;
  void (*f32_to_f16)(const float*, uint16_t*, size_t);
  void (*f16_to_f32)(const uint16_t*, float*, size_t);
  void (*f32_to_bf16)(const float*, uint16_t*, size_t);
  void (*bf16_to_f32)(const uint16_t*, float*, size_t);
  void (*f64_to_f32)(const double*, float*, size_t);
  void (*f32_to_f64)(const float*, double*, size_t);
  void (*f32_to_e4m3)(const float*, uint8_t*, size_t);
  void (*f32_to_e5m2)(const float*, uint8_t*, size_t);
  void (*f16_to_bf16)(const uint16_t*, uint16_t*, size_t);
  void (*f32_stats)(const float*, size_t, uint64_t*);
  bool (*supported)();
};

#define CKPT_KERNELS(NS, NAME, SUPPORTED)                                                       \
  Kernels {                                                                                     \
    NAME, &NS::F32ToF16, &NS::F16ToF32, &NS::F32ToBF16, &NS::BF16ToF32, &NS::F64ToF32,          \
        &NS::F32ToF64, &NS::F32ToE4M3, &NS::F32ToE5M2, &NS::F16ToBF16, &NS::F32Stats, SUPPORTED \
  }

// Best first. Each target is used only where the CPU (and OS, for the wide registers) has
// every feature Highway compiles that target for.
const Kernels kKernels[] = {
#if (HWY_TARGETS & HWY_AVX3) && HWY_STATIC_TARGET != HWY_AVX3
    CKPT_KERNELS(N_AVX3, "AVX3",
                 [] {
                   return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
                 }),
#endif
#if (HWY_TARGETS & HWY_AVX2) && HWY_STATIC_TARGET != HWY_AVX2
    CKPT_KERNELS(N_AVX2, "AVX2",
                 [] {
                   return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("bmi2");
                 }),
#endif
#if (HWY_TARGETS & HWY_SSE4) && HWY_STATIC_TARGET != HWY_SSE4
    CKPT_KERNELS(N_SSE4, "SSE4",
                 [] {
                   return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul") &&
                          __builtin_cpu_supports("aes");
                 }),
#endif
#if (HWY_TARGETS & HWY_SSSE3) && HWY_STATIC_TARGET != HWY_SSSE3
    CKPT_KERNELS(N_SSSE3, "SSSE3", [] { return __builtin_cpu_supports("ssse3") != 0; }),
#endif
    // The baseline the whole program is compiled for: always usable.
    Kernels{"baseline", &HWY_STATIC_DISPATCH(F32ToF16), &HWY_STATIC_DISPATCH(F16ToF32),
            &HWY_STATIC_DISPATCH(F32ToBF16), &HWY_STATIC_DISPATCH(BF16ToF32),
            &HWY_STATIC_DISPATCH(F64ToF32), &HWY_STATIC_DISPATCH(F32ToF64),
            &HWY_STATIC_DISPATCH(F32ToE4M3), &HWY_STATIC_DISPATCH(F32ToE5M2),
            &HWY_STATIC_DISPATCH(F16ToBF16), &HWY_STATIC_DISPATCH(F32Stats), [] { return true; }},
};
#undef CKPT_KERNELS

detail::KernelChoice<Kernels> g_choice{kKernels};

const Kernels& kernels() { return g_choice.get(); }

}  // namespace

void f32_to_f16(const float* in, uint16_t* out, size_t n) { kernels().f32_to_f16(in, out, n); }
void f16_to_f32(const uint16_t* in, float* out, size_t n) { kernels().f16_to_f32(in, out, n); }
void f32_to_bf16(const float* in, uint16_t* out, size_t n) { kernels().f32_to_bf16(in, out, n); }
void bf16_to_f32(const uint16_t* in, float* out, size_t n) { kernels().bf16_to_f32(in, out, n); }
void f64_to_f32(const double* in, float* out, size_t n) { kernels().f64_to_f32(in, out, n); }
void f32_to_f64(const float* in, double* out, size_t n) { kernels().f32_to_f64(in, out, n); }
void f32_to_f8_e4m3(const float* in, uint8_t* out, size_t n) { kernels().f32_to_e4m3(in, out, n); }
void f32_to_f8_e5m2(const float* in, uint8_t* out, size_t n) { kernels().f32_to_e5m2(in, out, n); }
void f16_to_bf16(const uint16_t* in, uint16_t* out, size_t n) { kernels().f16_to_bf16(in, out, n); }

void f32_stats(const float* in, size_t n, uint64_t* out) { kernels().f32_stats(in, n, out); }

const char* simd_target_name() { return kernels().name; }

std::vector<std::string> simd_targets() { return g_choice.names(); }

bool select_simd_target(std::string_view name) { return g_choice.select(name); }

namespace {

// FP8 decoding is a 256-entry table built from the format definitions.
std::array<float, 256> make_f8_table(int mantissa_bits, int bias, bool fn_variant) {
  std::array<float, 256> t{};
  const int exp_bits = 7 - mantissa_bits;
  const int exp_max = (1 << exp_bits) - 1;
  const int man_max = (1 << mantissa_bits) - 1;
  for (int b = 0; b < 256; ++b) {
    const bool neg = (b & 0x80) != 0;
    const int e = (b >> mantissa_bits) & exp_max;
    const int m = b & man_max;
    float v;
    if (fn_variant && e == exp_max && m == man_max) {
      v = __builtin_nanf("");
    } else if (!fn_variant && e == exp_max) {
      v = m == 0 ? __builtin_inff() : __builtin_nanf("");
    } else if (e == 0) {
      v = std::ldexp(static_cast<float>(m), 1 - bias - mantissa_bits);
    } else {
      v = std::ldexp(static_cast<float>(m + (1 << mantissa_bits)), e - bias - mantissa_bits);
    }
    t[static_cast<size_t>(b)] = neg ? -v : v;
  }
  return t;
}

const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = make_f8_table(3, 7, true);
  return t;
}
const std::array<float, 256>& e5m2_table() {
  static const std::array<float, 256> t = make_f8_table(2, 15, false);
  return t;
}

}  // namespace

void f8_e4m3_to_f32(const uint8_t* in, float* out, size_t n) {
  const auto& t = e4m3_table();
  for (size_t i = 0; i < n; ++i) out[i] = t[in[i]];
}
void f8_e5m2_to_f32(const uint8_t* in, float* out, size_t n) {
  const auto& t = e5m2_table();
  for (size_t i = 0; i < n; ++i) out[i] = t[in[i]];
}

namespace {

bool castable(DType t) {
  switch (t) {
    case DType::F16:
    case DType::BF16:
    case DType::F32:
    case DType::F64:
    case DType::F8_E4M3:
    case DType::F8_E5M2:
      return true;
    default:
      return false;
  }
}

void to_f32(DType from, const void* in, float* out, size_t n) {
  switch (from) {
    case DType::F16:
      f16_to_f32(static_cast<const uint16_t*>(in), out, n);
      break;
    case DType::BF16:
      bf16_to_f32(static_cast<const uint16_t*>(in), out, n);
      break;
    case DType::F32:
      std::memcpy(out, in, n * 4);
      break;
    case DType::F64:
      f64_to_f32(static_cast<const double*>(in), out, n);
      break;
    case DType::F8_E4M3:
      f8_e4m3_to_f32(static_cast<const uint8_t*>(in), out, n);
      break;
    case DType::F8_E5M2:
      f8_e5m2_to_f32(static_cast<const uint8_t*>(in), out, n);
      break;
    default:
      break;
  }
}

void from_f32(DType to, const float* in, void* out, size_t n) {
  switch (to) {
    case DType::F16:
      f32_to_f16(in, static_cast<uint16_t*>(out), n);
      break;
    case DType::BF16:
      f32_to_bf16(in, static_cast<uint16_t*>(out), n);
      break;
    case DType::F32:
      std::memcpy(out, in, n * 4);
      break;
    case DType::F64:
      f32_to_f64(in, static_cast<double*>(out), n);
      break;
    case DType::F8_E4M3:
      f32_to_f8_e4m3(in, static_cast<uint8_t*>(out), n);
      break;
    case DType::F8_E5M2:
      f32_to_f8_e5m2(in, static_cast<uint8_t*>(out), n);
      break;
    default:
      break;
  }
}

}  // namespace

bool can_cast(DType from, DType to) { return castable(from) && castable(to); }

Status cast_elements(DType from, DType to, const void* in, void* out, size_t count) {
  if (!can_cast(from, to))
    return error(ErrorCode::kUnsupported, "cannot convert {} to {}", dtype_name(from),
                 dtype_name(to));
  if (from == to) {
    std::memcpy(out, in, count * (dtype_info(from).bits / 8));
    return Status::ok();
  }
  if (from == DType::F32) {
    from_f32(to, static_cast<const float*>(in), out, count);
    return Status::ok();
  }
  if (to == DType::F32) {
    to_f32(from, in, static_cast<float*>(out), count);
    return Status::ok();
  }
  if (from == DType::F16 && to == DType::BF16) {  // PyTorch's NaN differs on this path
    f16_to_bf16(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(out), count);
    return Status::ok();
  }
  // Neither side is F32: go through it in cache-sized blocks.
  constexpr size_t kBlock = 4096;
  alignas(64) float tmp[kBlock];
  const size_t in_size = dtype_info(from).bits / 8;
  const size_t out_size = dtype_info(to).bits / 8;
  for (size_t i = 0; i < count; i += kBlock) {
    size_t k = std::min(kBlock, count - i);
    to_f32(from, static_cast<const uint8_t*>(in) + i * in_size, tmp, k);
    from_f32(to, tmp, static_cast<uint8_t*>(out) + i * out_size, k);
  }
  return Status::ok();
}

}  // namespace ckptkit
#endif  // HWY_ONCE
