// SIMD kernels for the reference K-quant quantizers: the group steps of Q4_K/Q5_K and Q2_K
// (ggml's make_qkx2_quants), of Q6_K (make_qx_quants) and of Q3_K (make_q3_quants), one group
// per SIMD lane, and the requantization shared by the K-quants. Each lane performs exactly the
// scalar sequence of IEEE float operations of quant.cc (same association, no fused multiply-add:
// this file is compiled with -ffp-contract=off and Highway's Mul/Add/Div/Sqrt are correctly
// rounded), and the scalar branches become per-lane selects, so the result is bit-identical to the
// scalar code on every target. The group steps run lanes across independent groups, never along one
// group's elements, because vectorizing a sum would change its order of additions; the
// requantization has no sums, so it runs along the elements.
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/tensor/quant_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "tensor/quant.h"
#include "tensor/quant_simd.h"

HWY_BEFORE_NAMESPACE();
namespace ckptkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

// Copies `nb` groups of kGroup floats into lanes: element i of lane g at [i * N + g]; lanes past
// nb get zeros (a degenerate group whose results are discarded).
template <size_t kGroup>
HWY_INLINE void transpose_in(const float* HWY_RESTRICT x, size_t nb, size_t N,
                             float* HWY_RESTRICT xt) {
  for (size_t g = 0; g < nb; ++g)
    for (size_t i = 0; i < kGroup; ++i) xt[i * N + g] = x[g * kGroup + i];
  for (size_t g = nb; g < N; ++g)
    for (size_t i = 0; i < kGroup; ++i) xt[i * N + g] = 0.0f;
}

// The inverse for levels: lt holds small non-negative integers as floats, level i of lane g at
// [i * N + g]; writes them as bytes, kGroup per group, for the first nb lanes. Four levels of a
// lane go into one 32-bit word (little-endian, so in their byte order), which leaves a quarter
// of the moves of a byte-by-byte transpose.
template <size_t kGroup>
HWY_INLINE void transpose_levels_out(const float* HWY_RESTRICT lt, size_t nb, size_t N,
                                     uint8_t* HWY_RESTRICT L, size_t stride = 0) {
  if (stride == 0) stride = N;  // row i of the levels at lt + i * stride
  static_assert(kGroup % 4 == 0);
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  alignas(64) int32_t words[kGroup / 4 * kMaxLanes];
  for (size_t i = 0; i < kGroup; i += 4) {
    auto w = hn::ConvertTo(di, hn::Load(df, lt + i * stride));
    w = hn::Or(w, hn::ShiftLeft<8>(hn::ConvertTo(di, hn::Load(df, lt + (i + 1) * stride))));
    w = hn::Or(w, hn::ShiftLeft<16>(hn::ConvertTo(di, hn::Load(df, lt + (i + 2) * stride))));
    w = hn::Or(w, hn::ShiftLeft<24>(hn::ConvertTo(di, hn::Load(df, lt + (i + 3) * stride))));
    hn::Store(w, di, words + i / 4 * N);
  }
  for (size_t g = 0; g < nb; ++g)
    for (size_t k = 0; k < kGroup / 4; ++k)
      std::memcpy(L + g * kGroup + 4 * k, &words[k * N + g], 4);
}

// make_qkx2_quants(kGroup, nmax, x, weights, L, &min, Laux, rmin, rdelta, nstep, use_mad) on
// `ngroups` contiguous groups, with the weights of the caller: Q4_K/Q5_K (kQ2 false) use
// av_x + |x| with av_x = sqrt(sum x^2 / 32) and squared errors; Q2_K (kQ2 true) uses |x| and
// absolute errors. kB vectors of groups are processed together: each lane's sums are serial
// chains (ggml's order), so interleaving independent vectors hides the adds' latency.
template <size_t kGroup, bool kQ2, size_t kB>
void QkxGroups(const float* HWY_RESTRICT x, size_t ngroups, int nmax, float rmin, float rdelta,
               int nstep, float* HWY_RESTRICT scales, float* HWY_RESTRICT mins,
               uint8_t* HWY_RESTRICT L) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  using VF = hn::Vec<decltype(df)>;
  using VI = hn::Vec<decltype(di)>;
  using MF = hn::Mask<decltype(df)>;
  const size_t N = hn::Lanes(df);
  const size_t W = kB * N;  // groups per pass

  // Element i of group g (of the pass) at [i * W + g]; vector b of a row is [i * W + b * N].
  alignas(64) float xt[kGroup * kB * kMaxLanes];
  alignas(64) float wt[kGroup * kB * kMaxLanes];
  alignas(64) float xmin[kGroup * kB * kMaxLanes];  // x - min for the current min
  // Levels as floats (small integers, exact): what the error sums use.
  alignas(64) float lbest[kGroup * kB * kMaxLanes];
  alignas(64) float laux[kGroup * kB * kMaxLanes];
  alignas(64) float out_scale[kB * kMaxLanes];
  alignas(64) float out_min[kB * kMaxLanes];

  const VI vnmax = hn::Set(di, nmax);
  const VI vzero_i = hn::Zero(di);
  const VF vzero = hn::Zero(df);
  const VF magic = hn::Set(df, 12582912.f);
  const VI mant = hn::Set(di, 0x007fffff);
  const VI half = hn::Set(di, 0x00400000);
  // ggml's nearest_int, clamped to [0, nmax] as MAX(0, MIN(nmax, l)), as a float.
  auto level = [&](VF v) {
    const VI i = hn::Sub(hn::And(hn::BitCast(di, hn::Add(v, magic)), mant), half);
    return hn::ConvertTo(df, hn::Max(hn::Min(i, vnmax), vzero_i));
  };
  // The same level by float arithmetic, exact where |v| < 2^21 (v + magic then has ulp 1, so
  // subtracting magic gives nearest_int(v) as ggml's bit trick does); two operations fewer.
  // Used only for steps whose every active lane is proven in range (see `fast` below).
  const VF vnmax_f = hn::Set(df, static_cast<float>(nmax));
  auto level_fast = [&](VF v) {
    return hn::Min(hn::Max(hn::Sub(hn::Add(v, magic), magic), vzero), vnmax_f);
  };
  const VF kFastLimit = hn::Set(df, 2097152.0f);
  const VF vnmax_half = hn::Set(df, static_cast<float>(nmax) + 0.5f);  // rounds above nmax
  auto at = [&](float* a, size_t i, size_t b) { return a + i * W + b * N; };
  // The error of one element: |diff| (Q2_K) or diff^2.
  auto err = [](VF diff) {
    if constexpr (kQ2) {
      return hn::Abs(diff);
    } else {
      return hn::Mul(diff, diff);
    }
  };

  VF min[kB], max[kB], sum_w[kB], sum_x[kB], scale[kB], best_error[kB];
  VF gmin[kB];  // the group's smallest x (min before it is clamped to <= 0)
  MF active[kB];
  auto update_xmin = [&](size_t b) {
    for (size_t i = 0; i < kGroup; ++i)
      hn::Store(hn::Sub(hn::Load(df, at(xt, i, b)), min[b]), df, at(xmin, i, b));
  };

  for (size_t g0 = 0; g0 < ngroups; g0 += W) {
    const size_t nb = ngroups - g0 < W ? ngroups - g0 : W;
    // Transpose in; groups past nb get zeros (degenerate, results discarded).
    for (size_t g = 0; g < nb; ++g)
      for (size_t i = 0; i < kGroup; ++i) xt[i * W + g] = x[(g0 + g) * kGroup + i];
    for (size_t g = nb; g < W; ++g)
      for (size_t i = 0; i < kGroup; ++i) xt[i * W + g] = 0.0f;

    bool finite = true;  // every x of the pass finite: the condition of the fast levels
    for (size_t b = 0; b < kB; ++b) {
      if constexpr (kQ2) {
        for (size_t i = 0; i < kGroup; ++i)
          hn::Store(hn::Abs(hn::Load(df, at(xt, i, b))), df, at(wt, i, b));
      } else {
        VF sum_x2 = vzero;
        for (size_t i = 0; i < kGroup; ++i) {
          const VF xi = hn::Load(df, at(xt, i, b));
          sum_x2 = hn::Add(sum_x2, hn::Mul(xi, xi));
        }
        const VF av_x = hn::Sqrt(hn::Div(sum_x2, hn::Set(df, 32.0f)));
        for (size_t i = 0; i < kGroup; ++i)
          hn::Store(hn::Add(av_x, hn::Abs(hn::Load(df, at(xt, i, b)))), df, at(wt, i, b));
      }
      min[b] = hn::Load(df, at(xt, 0, b));
      max[b] = min[b];
      sum_w[b] = hn::Load(df, at(wt, 0, b));
      sum_x[b] = hn::Mul(sum_w[b], min[b]);
      auto fin = hn::IsFinite(min[b]);
      for (size_t i = 1; i < kGroup; ++i) {
        const VF xi = hn::Load(df, at(xt, i, b));
        min[b] = hn::IfThenElse(hn::Lt(xi, min[b]), xi, min[b]);
        max[b] = hn::IfThenElse(hn::Gt(xi, max[b]), xi, max[b]);
        fin = hn::And(fin, hn::IsFinite(xi));
        const VF w = hn::Load(df, at(wt, i, b));
        sum_w[b] = hn::Add(sum_w[b], w);
        sum_x[b] = hn::Add(sum_x[b], hn::Mul(w, xi));
      }
      finite = finite && hn::AllTrue(df, fin);
      gmin[b] = min[b];
      min[b] = hn::IfThenElse(hn::Gt(min[b], vzero), vzero, min[b]);
      active[b] = hn::Not(hn::Eq(max[b], min[b]));  // ggml returns early where max == min

      const VF iscale0 =
          hn::Div(hn::Set(df, static_cast<float>(nmax)), hn::Sub(max[b], min[b]));
      scale[b] = hn::Div(hn::Set(df, 1.0f), iscale0);
      best_error[b] = vzero;
      update_xmin(b);
      for (size_t i = 0; i < kGroup; ++i) {
        const VF xi = hn::Load(df, at(xt, i, b));
        const VF lf = level(hn::Mul(iscale0, hn::Load(df, at(xmin, i, b))));
        hn::Store(lf, df, at(lbest, i, b));
        VF diff = hn::Sub(hn::Add(hn::Mul(scale[b], lf), min[b]), xi);
        diff = err(diff);
        best_error[b] = hn::Add(best_error[b], hn::Mul(hn::Load(df, at(wt, i, b)), diff));
      }
    }
    for (int is = 0; is <= nstep; ++is) {
      const VF num = hn::Set(df, rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax));
      // `min` is the best candidate's so far, as in ggml (which updates it inside the loop).
      VF iscale[kB], sum_l[kB], sum_l2[kB], sum_xl[kB];
      // The fast levels are exact when every active lane's iscale * (x - min) is within
      // 2^21: float rounding is monotonic, so the group's extremes bound every element.
      // The same bounds tell when no level can fall below 0 or above nmax, and the clamps
      // can go (a v of -0.0 then gives the level -0.0, which adds and multiplies as +0.0 does).
      bool fast = finite, clamp_lo = false, clamp_hi = false;
      for (size_t b = 0; b < kB; ++b) {
        iscale[b] = hn::Div(num, hn::Sub(max[b], min[b]));
        sum_l[b] = sum_l2[b] = sum_xl[b] = vzero;
        if (fast) {
          const VF lo = hn::Mul(iscale[b], hn::Sub(gmin[b], min[b]));
          const VF hi = hn::Mul(iscale[b], hn::Sub(max[b], min[b]));
          const auto inactive = hn::Not(active[b]);
          const auto in_range =
              hn::Lt(hn::Max(hn::Abs(lo), hn::Abs(hi)), kFastLimit);  // false for NaN
          fast = hn::AllTrue(df, hn::Or(in_range, inactive));
          clamp_lo = clamp_lo || !hn::AllTrue(df, hn::Or(hn::Ge(hn::Min(lo, hi), vzero), inactive));
          clamp_hi = clamp_hi ||
                     !hn::AllTrue(df, hn::Or(hn::Lt(hn::Max(lo, hi), vnmax_half), inactive));
        }
      }
      auto sums = [&](auto level_of) {
        for (size_t i = 0; i < kGroup; ++i) {
          for (size_t b = 0; b < kB; ++b) {
            const VF xi = hn::Load(df, at(xt, i, b));
            const VF lf = level_of(hn::Mul(iscale[b], hn::Load(df, at(xmin, i, b))));
            hn::Store(lf, df, at(laux, i, b));
            const VF w = hn::Load(df, at(wt, i, b));
            const VF wl = hn::Mul(w, lf);
            sum_l[b] = hn::Add(sum_l[b], wl);
            sum_l2[b] = hn::Add(sum_l2[b], hn::Mul(wl, lf));
            sum_xl[b] = hn::Add(sum_xl[b], hn::Mul(wl, xi));
          }
        }
      };
      if (!fast) {
        sums(level);
      } else if (clamp_lo && clamp_hi) {
        sums(level_fast);
      } else if (clamp_lo) {
        sums([&](VF v) { return hn::Max(hn::Sub(hn::Add(v, magic), magic), vzero); });
      } else if (clamp_hi) {
        sums([&](VF v) { return hn::Min(hn::Sub(hn::Add(v, magic), magic), vnmax_f); });
      } else {
        sums([&](VF v) { return hn::Sub(hn::Add(v, magic), magic); });
      }
      VF this_scale[kB], this_min[kB];
      MF try_it[kB];
      bool any = false;
      for (size_t b = 0; b < kB; ++b) {
        const VF D = hn::Sub(hn::Mul(sum_w[b], sum_l2[b]), hn::Mul(sum_l[b], sum_l[b]));
        try_it[b] = hn::And(hn::Gt(D, vzero), active[b]);
        any = any || !hn::AllFalse(df, try_it[b]);
        this_scale[b] = hn::Div(
            hn::Sub(hn::Mul(sum_w[b], sum_xl[b]), hn::Mul(sum_x[b], sum_l[b])), D);
        this_min[b] = hn::Div(
            hn::Sub(hn::Mul(sum_l2[b], sum_x[b]), hn::Mul(sum_l[b], sum_xl[b])), D);
        const auto min_pos = hn::Gt(this_min[b], vzero);
        this_min[b] = hn::IfThenElse(min_pos, vzero, this_min[b]);
        this_scale[b] = hn::IfThenElse(min_pos, hn::Div(sum_xl[b], sum_l2[b]), this_scale[b]);
      }
      if (!any) continue;
      VF cur_error[kB];
      for (size_t b = 0; b < kB; ++b) cur_error[b] = vzero;
      for (size_t i = 0; i < kGroup; ++i) {
        for (size_t b = 0; b < kB; ++b) {
          const VF xi = hn::Load(df, at(xt, i, b));
          const VF lf = hn::Load(df, at(laux, i, b));
          VF diff = hn::Sub(hn::Add(hn::Mul(this_scale[b], lf), this_min[b]), xi);
          diff = err(diff);
          cur_error[b] = hn::Add(cur_error[b], hn::Mul(hn::Load(df, at(wt, i, b)), diff));
        }
      }
      for (size_t b = 0; b < kB; ++b) {
        const auto take = hn::And(try_it[b], hn::Lt(cur_error[b], best_error[b]));
        if (hn::AllFalse(df, take)) continue;
        for (size_t i = 0; i < kGroup; ++i)
          hn::Store(hn::IfThenElse(take, hn::Load(df, at(laux, i, b)),
                                   hn::Load(df, at(lbest, i, b))),
                    df, at(lbest, i, b));
        best_error[b] = hn::IfThenElse(take, cur_error[b], best_error[b]);
        scale[b] = hn::IfThenElse(take, this_scale[b], scale[b]);
        min[b] = hn::IfThenElse(take, this_min[b], min[b]);
        update_xmin(b);
      }
    }
    for (size_t b = 0; b < kB; ++b) {
      hn::Store(hn::IfThenElseZero(active[b], scale[b]), df, out_scale + b * N);
      hn::Store(hn::Neg(min[b]), df, out_min + b * N);
      for (size_t i = 0; i < kGroup; ++i)
        hn::Store(hn::IfThenElseZero(active[b], hn::Load(df, at(lbest, i, b))), df,
                  at(lbest, i, b));
    }
    for (size_t g = 0; g < nb; ++g) {
      scales[g0 + g] = out_scale[g];
      mins[g0 + g] = out_min[g];
    }
    if (L != nullptr)
      for (size_t b = 0; b < kB && b * N < nb; ++b)
        transpose_levels_out<kGroup>(lbest + b * N, std::min(N, nb - b * N), N,
                                     L + (g0 + b * N) * kGroup, W);
  }
}

void Qkx2Groups32(const float* HWY_RESTRICT x, size_t ngroups, int nmax, float rmin, float rdelta,
                  int nstep, float* HWY_RESTRICT scales, float* HWY_RESTRICT mins,
                  uint8_t* HWY_RESTRICT L) {
  QkxGroups<32, false, 2>(x, ngroups, nmax, rmin, rdelta, nstep, scales, mins, L);
}

void Qkx2Groups16Q2(const float* HWY_RESTRICT x, size_t ngroups, int nmax, float rmin, float rdelta,
                    int nstep, float* HWY_RESTRICT scales, float* HWY_RESTRICT mins,
                    uint8_t* HWY_RESTRICT L) {
  QkxGroups<16, true, 2>(x, ngroups, nmax, rmin, rdelta, nstep, scales, mins, L);
}

// The part of the Q6_K group step after the first loop, for one vector of groups. kFloatLevel:
// nearest_int as a float, (v + 1.5*2^23) - 1.5*2^23, clamped with float Min/Max: the same value
// as ggml's integer trick (both come from the same rounded sum, which stays in [2^23, 2^24)
// for |v| < 2^22) in fewer operations, but only where every v is finite and small. That holds
// in every active lane without NaN or Inf (|iscale * x| <= (32.9 / |max|) * |max|, and
// iscale is finite for |max| >= GROUP_MAX_EPS); inactive lanes' results are discarded.
template <bool kFloatLevel, class DF>
HWY_INLINE void Qx32Tries(DF df, size_t N, const float* HWY_RESTRICT xt,
                          const float* HWY_RESTRICT wt, const float* HWY_RESTRICT wxt,
                          hn::Vec<DF> max, float* HWY_RESTRICT lbest, hn::Vec<DF>& scale_out) {
  constexpr size_t kGroup = 16;
  constexpr int nmax = 32;
  const hn::RebindToSigned<DF> di;
  using VF = hn::Vec<DF>;
  using VI = hn::Vec<decltype(di)>;
  const VF vzero = hn::Zero(df);
  const VF magic = hn::Set(df, 12582912.f);
  const VI mant = hn::Set(di, 0x007fffff);
  const VI half = hn::Set(di, 0x00400000);
  const VI lo = hn::Set(di, -nmax);
  const VI hi = hn::Set(di, nmax - 1);
  const VF flo = hn::Set(df, static_cast<float>(-nmax));
  const VF fhi = hn::Set(df, static_cast<float>(nmax - 1));
  // nearest_int clamped as MAX(-nmax, MIN(nmax-1, l)), as a float.
  auto level = [&](VF v) {
    if constexpr (kFloatLevel) {
      return hn::Max(hn::Min(hn::Sub(hn::Add(v, magic), magic), fhi), flo);
    } else {
      const VI i = hn::Sub(hn::And(hn::BitCast(di, hn::Add(v, magic)), mant), half);
      return hn::ConvertTo(df, hn::Max(hn::Min(i, hi), lo));
    }
  };

  // The levels are those of the last try taken (or of the first scale): only that try's
  // iscale is kept, and the levels are computed from it at the end, as ggml computes them.
  VF best_isc = hn::Div(hn::Set(df, static_cast<float>(-nmax)), max);
  VF sumlx = vzero, suml2 = vzero;
  for (size_t i = 0; i < kGroup; ++i) {
    const VF lf = level(hn::Mul(best_isc, hn::Load(df, xt + i * N)));
    sumlx = hn::Add(sumlx, hn::Mul(hn::Load(df, wxt + i * N), lf));
    suml2 = hn::Add(suml2, hn::Mul(hn::Mul(hn::Load(df, wt + i * N), lf), lf));
  }
  // `suml2 ? sumlx/suml2 : 0`: NaN counts as true.
  VF scale = hn::IfThenElse(hn::Eq(suml2, vzero), vzero, hn::Div(sumlx, suml2));
  VF best = hn::Mul(scale, sumlx);
  // The 18 tries' sums do not depend on one another (only the choice among them is
  // sequential), so they are computed two at a time, which halves the dependency chains;
  // the choices are then made in ggml's order.
  constexpr int kTries[18] = {-9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  for (int t = 0; t < 18; t += 2) {
    VF isc[2], slx[2], sl2[2];
    for (int k = 0; k < 2; ++k) {
      const float num = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(kTries[t + k]));
      isc[k] = hn::Div(hn::Set(df, num), max);
      slx[k] = sl2[k] = vzero;
    }
    for (size_t i = 0; i < kGroup; ++i) {
      const VF xi = hn::Load(df, xt + i * N);
      const VF wx = hn::Load(df, wxt + i * N);
      const VF w = hn::Load(df, wt + i * N);
      const VF l0 = level(hn::Mul(isc[0], xi));
      const VF l1 = level(hn::Mul(isc[1], xi));
      slx[0] = hn::Add(slx[0], hn::Mul(wx, l0));
      slx[1] = hn::Add(slx[1], hn::Mul(wx, l1));
      sl2[0] = hn::Add(sl2[0], hn::Mul(hn::Mul(w, l0), l0));
      sl2[1] = hn::Add(sl2[1], hn::Mul(hn::Mul(w, l1), l1));
    }
    for (int k = 0; k < 2; ++k) {
      const auto take =
          hn::And(hn::Gt(sl2[k], vzero), hn::Gt(hn::Mul(slx[k], slx[k]), hn::Mul(best, sl2[k])));
      if (hn::AllFalse(df, take)) continue;
      best_isc = hn::IfThenElse(take, isc[k], best_isc);
      scale = hn::IfThenElse(take, hn::Div(slx[k], sl2[k]), scale);
      best = hn::IfThenElse(take, hn::Mul(scale, slx[k]), best);
    }
  }
  for (size_t i = 0; i < kGroup; ++i)
    hn::Store(level(hn::Mul(best_isc, hn::Load(df, xt + i * N))), df, lbest + i * N);
  scale_out = scale;
}

// Q6_K reference: make_qx_quants(16, 32, x, L, rmse_type = 1, NULL) on `ngroups` contiguous
// groups of 16 (weights x^2), writing scales[g] and the levels l + 32.
void Qx32Groups16(const float* HWY_RESTRICT x, size_t ngroups, float* HWY_RESTRICT scales,
                  uint8_t* HWY_RESTRICT L) {
  constexpr size_t kGroup = 16;
  constexpr int nmax = 32;
  const hn::ScalableTag<float> df;
  using VF = hn::Vec<decltype(df)>;
  const size_t N = hn::Lanes(df);

  alignas(64) float xt[kGroup * kMaxLanes];
  alignas(64) float wt[kGroup * kMaxLanes];   // w = x * x
  alignas(64) float wxt[kGroup * kMaxLanes];  // w * x
  alignas(64) float lbest[kGroup * kMaxLanes];
  alignas(64) float out_scale[kMaxLanes];

  const VF vzero = hn::Zero(df);

  for (size_t g0 = 0; g0 < ngroups; g0 += N) {
    const size_t nb = ngroups - g0 < N ? ngroups - g0 : N;
    transpose_in<kGroup>(x + g0 * kGroup, nb, N, xt);

    VF max = vzero;
    VF amax = vzero;
    auto nonfinite = hn::Lt(vzero, vzero);  // all false
    for (size_t i = 0; i < kGroup; ++i) {
      const VF xi = hn::Load(df, xt + i * N);
      const VF ax = hn::Abs(xi);
      const auto bigger = hn::Gt(ax, amax);
      amax = hn::IfThenElse(bigger, ax, amax);
      max = hn::IfThenElse(bigger, xi, max);
      nonfinite = hn::Or(nonfinite, hn::Not(hn::IsFinite(xi)));
      const VF w = hn::Mul(xi, xi);
      hn::Store(w, df, wt + i * N);
      hn::Store(hn::Mul(w, xi), df, wxt + i * N);
    }
    // ggml returns 0 with all levels 0 where amax < GROUP_MAX_EPS.
    const auto active = hn::Not(hn::Lt(amax, hn::Set(df, 1e-15f)));
    VF scale;
    if (hn::AllFalse(df, hn::And(nonfinite, active))) {
      Qx32Tries<true>(df, N, xt, wt, wxt, max, lbest, scale);
    } else {
      Qx32Tries<false>(df, N, xt, wt, wxt, max, lbest, scale);
    }
    hn::Store(hn::IfThenElseZero(active, scale), df, out_scale);
    const VF offset = hn::Set(df, static_cast<float>(nmax));
    for (size_t i = 0; i < kGroup; ++i)
      hn::Store(hn::IfThenElseZero(active, hn::Add(hn::Load(df, lbest + i * N), offset)), df,
                lbest + i * N);
    for (size_t g = 0; g < nb; ++g) scales[g0 + g] = out_scale[g];
    transpose_levels_out<kGroup>(lbest, nb, N, L + g0 * kGroup);
  }
}

// Q3_K reference: make_q3_quants(16, 4, x, L, do_rmse = true) on `ngroups` contiguous groups
// of 16 (weights x^2), writing scales[g] and the levels l + 4 (0 for a group below
// GROUP_MAX_EPS, as in ggml). The coordinate descent visits a lane's elements in order and
// changes its state only where its own scalar code would: each `if` becomes a per-lane mask.
void Q3Groups16(const float* HWY_RESTRICT x, size_t ngroups, float* HWY_RESTRICT scales,
                uint8_t* HWY_RESTRICT L) {
  constexpr size_t kGroup = 16;
  constexpr int nmax = 4;
  // Vectors of groups whose first refinement pass runs side by side (see below).
  constexpr size_t kV = 4;
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  using VF = hn::Vec<decltype(df)>;
  using VI = hn::Vec<decltype(di)>;
  const size_t N = hn::Lanes(df);
  constexpr size_t kRow = kGroup * kMaxLanes;

  alignas(64) float xt[kV * kRow];
  alignas(64) float wt[kV * kRow];     // w = x * x
  alignas(64) float wxt[kV * kRow];    // w * x
  alignas(64) int32_t lit[kV * kRow];  // levels l in [-nmax, nmax-1]
  // The terms of the current levels in the sums: w*x*l and w*l*l (ggml's association).
  alignas(64) float t1t[kV * kRow];
  alignas(64) float t2t[kV * kRow];
  alignas(64) float lt[kRow];
  alignas(64) float out_scale[kMaxLanes];

  const VF vzero = hn::Zero(df);
  const VF magic = hn::Set(df, 12582912.f);
  const VI mant = hn::Set(di, 0x007fffff);
  const VI half = hn::Set(di, 0x00400000);
  const VI lo = hn::Set(di, -nmax);
  const VI hi = hn::Set(di, nmax - 1);
  // nearest_int clamped as MAX(-nmax, MIN(nmax-1, l)).
  auto ilevel = [&](VF v) {
    const VI i = hn::Sub(hn::And(hn::BitCast(di, hn::Add(v, magic)), mant), half);
    return hn::Max(hn::Min(i, hi), lo);
  };

  for (size_t c0 = 0; c0 < ngroups; c0 += kV * N) {
    VF sumlx[kV], suml2[kV], sumlx2[kV];
    hn::Mask<decltype(df)> active[kV];
    for (size_t v = 0; v < kV; ++v) {
      const size_t g0 = c0 + v * N;
      const size_t nb = g0 >= ngroups ? 0 : (ngroups - g0 < N ? ngroups - g0 : N);
      float* xv = xt + v * kRow;
      transpose_in<kGroup>(x + (nb ? g0 * kGroup : 0), nb, N, xv);
      VF max = vzero;
      VF amax = vzero;
      for (size_t i = 0; i < kGroup; ++i) {
        const VF xi = hn::Load(df, xv + i * N);
        const VF ax = hn::Abs(xi);
        const auto bigger = hn::Gt(ax, amax);
        amax = hn::IfThenElse(bigger, ax, amax);
        max = hn::IfThenElse(bigger, xi, max);
        const VF w = hn::Mul(xi, xi);
        hn::Store(w, df, wt + v * kRow + i * N);
        hn::Store(hn::Mul(w, xi), df, wxt + v * kRow + i * N);
      }
      active[v] = hn::Not(hn::Lt(amax, hn::Set(df, 1e-15f)));
      const VF iscale = hn::Div(hn::Set(df, static_cast<float>(-nmax)), max);
      VF slx = vzero, sl2 = vzero;
      for (size_t i = 0; i < kGroup; ++i) {
        const size_t o = v * kRow + i * N;
        const VI li = ilevel(hn::Mul(iscale, hn::Load(df, xv + i * N)));
        const VF lf = hn::ConvertTo(df, li);
        hn::Store(li, di, lit + o);
        const VF t1 = hn::Mul(hn::Load(df, wxt + o), lf);
        const VF t2 = hn::Mul(hn::Mul(hn::Load(df, wt + o), lf), lf);
        hn::Store(t1, df, t1t + o);
        hn::Store(t2, df, t2t + o);
        slx = hn::Add(slx, t1);
        sl2 = hn::Add(sl2, t2);
      }
      // The refinement. Lanes of groups below GROUP_MAX_EPS (results discarded) get sumlx and
      // terms 0 for it, so that `slx > 0` keeps them out.
      if (!hn::AllTrue(df, active[v])) {
        for (size_t i = 0; i < kGroup; ++i)
          hn::Store(hn::IfThenElseZero(active[v], hn::Load(df, t1t + v * kRow + i * N)), df,
                    t1t + v * kRow + i * N);
      }
      sumlx[v] = hn::IfThenElseZero(active[v], slx);
      suml2[v] = sl2;
      sumlx2[v] = hn::Mul(sumlx[v], sumlx[v]);  // sumlx * sumlx of the comparison
    }

    // ggml's 5 passes over the 16 elements, as one sequence of steps per vector. The first
    // pass, where levels change often, runs on the kV vectors side by side with selects
    // only: their dependency chains (through the division) overlap, where branches would
    // mispredict at every change.
    uint32_t changed_steps[kV] = {};
    for (size_t i = 0; i < kGroup; ++i) {
      for (size_t v = 0; v < kV; ++v) {
        const size_t o = v * kRow + i * N;
        const VF t1o = hn::Load(df, t1t + o);
        const VF t2o = hn::Load(df, t2t + o);
        const VI lio = hn::Load(di, lit + o);
        VF slx = hn::Sub(sumlx[v], t1o);
        const auto pos = hn::Gt(slx, vzero);
        VF sl2 = hn::Sub(suml2[v], t2o);
        const VI nl = ilevel(hn::Div(hn::Mul(hn::Load(df, xt + o), sl2), slx));
        const auto differs = hn::And(pos, hn::RebindMask(df, hn::Ne(nl, lio)));
        const VF nlf = hn::ConvertTo(df, nl);
        const VF t1 = hn::Mul(hn::Load(df, wxt + o), nlf);
        const VF t2 = hn::Mul(hn::Mul(hn::Load(df, wt + o), nlf), nlf);
        slx = hn::Add(slx, t1);
        sl2 = hn::Add(sl2, t2);
        const VF slx_sq = hn::Mul(slx, slx);
        const auto better =
            hn::And(hn::Gt(sl2, vzero), hn::Gt(hn::Mul(slx_sq, suml2[v]), hn::Mul(sumlx2[v], sl2)));
        const auto take = hn::And(differs, better);
        hn::Store(hn::IfThenElse(hn::RebindMask(di, take), nl, lio), di, lit + o);
        hn::Store(hn::IfThenElse(take, t1, t1o), df, t1t + o);
        hn::Store(hn::IfThenElse(take, t2, t2o), df, t2t + o);
        sumlx[v] = hn::IfThenElse(take, slx, sumlx[v]);
        suml2[v] = hn::IfThenElse(take, sl2, suml2[v]);
        sumlx2[v] = hn::IfThenElse(take, slx_sq, sumlx2[v]);
        changed_steps[v] |= static_cast<uint32_t>(hn::CountTrue(df, take) != 0) << i;
      }
    }

    for (size_t v = 0; v < kV; ++v) {
      const size_t g0 = c0 + v * N;
      if (g0 >= ngroups) break;
      const float* xv = xt + v * kRow;
      const float* wv = wt + v * kRow;
      const float* wxv = wxt + v * kRow;
      int32_t* liv = lit + v * kRow;
      float* t1v = t1t + v * kRow;
      float* t2v = t2t + v * kRow;
      VF vsumlx = sumlx[v], vsuml2 = suml2[v], vsumlx2 = sumlx2[v];
      // The other passes each vector on its own, with branches: where no lane has a new level
      // (most steps after the first pass), the next step does not wait for this one's
      // division. A lane whose last 16 steps changed nothing is at a fixed point: every later
      // step sees the state that the same element saw then and changes nothing either, so
      // ggml's loop ends for it with this state (at the end of the next pass without a
      // change). So the vector stops 16 steps after the last change in any lane, or after the
      // 80 steps of 5 passes, which gives each lane its scalar result and skips the rest of a
      // pass that would not change anything.
      int last_change = changed_steps[v] ? 31 - __builtin_clz(changed_steps[v]) : -1;
      for (int step = static_cast<int>(kGroup);
           step < 5 * static_cast<int>(kGroup) && step - last_change <= 16; ++step) {
        const size_t i = static_cast<size_t>(step) % kGroup;
        VF slx = hn::Sub(vsumlx, hn::Load(df, t1v + i * N));
        const auto pos = hn::Gt(slx, vzero);
        VF sl2 = hn::Sub(vsuml2, hn::Load(df, t2v + i * N));
        const VI nl = ilevel(hn::Div(hn::Mul(hn::Load(df, xv + i * N), sl2), slx));
        const auto differs =
            hn::And(pos, hn::RebindMask(df, hn::Ne(nl, hn::Load(di, liv + i * N))));
        if (hn::AllFalse(df, differs)) continue;
        const VF nlf = hn::ConvertTo(df, nl);
        const VF t1 = hn::Mul(hn::Load(df, wxv + i * N), nlf);
        const VF t2 = hn::Mul(hn::Mul(hn::Load(df, wv + i * N), nlf), nlf);
        slx = hn::Add(slx, t1);
        sl2 = hn::Add(sl2, t2);
        const VF slx_sq = hn::Mul(slx, slx);
        const auto better =
            hn::And(hn::Gt(sl2, vzero), hn::Gt(hn::Mul(slx_sq, vsuml2), hn::Mul(vsumlx2, sl2)));
        const auto take = hn::And(differs, better);
        if (hn::AllFalse(df, take)) continue;
        hn::Store(hn::IfThenElse(hn::RebindMask(di, take), nl, hn::Load(di, liv + i * N)), di,
                  liv + i * N);
        hn::Store(hn::IfThenElse(take, t1, hn::Load(df, t1v + i * N)), df, t1v + i * N);
        hn::Store(hn::IfThenElse(take, t2, hn::Load(df, t2v + i * N)), df, t2v + i * N);
        vsumlx = hn::IfThenElse(take, slx, vsumlx);
        vsuml2 = hn::IfThenElse(take, sl2, vsuml2);
        vsumlx2 = hn::IfThenElse(take, slx_sq, vsumlx2);
        last_change = step;
      }

      const size_t nb = ngroups - g0 < N ? ngroups - g0 : N;
      const VF scale = hn::IfThenElse(hn::Gt(vsuml2, vzero), hn::Div(vsumlx, vsuml2), vzero);
      hn::Store(hn::IfThenElseZero(active[v], scale), df, out_scale);
      const VI offset = hn::Set(di, nmax);
      for (size_t i = 0; i < kGroup; ++i)
        hn::Store(hn::IfThenElseZero(active[v],
                                     hn::ConvertTo(df, hn::Add(hn::Load(di, liv + i * N), offset))),
                  df, lt + i * N);
      for (size_t g = 0; g < nb; ++g) scales[g0 + g] = out_scale[g];
      transpose_levels_out<kGroup>(lt, nb, N, L + g0 * kGroup);
    }
  }
}

// The requantization step shared by the K-quants: for each group j with d[j] != 0,
// L = MAX(lo, MIN(hi, nearest_int((x + dm[j]) / d[j]))) + offset (x / d[j] when dm is null);
// groups with d[j] == 0 keep their levels. Lanes run along a group's elements: every element is
// independent here, so this is exact too.
void RequantGroups(const float* HWY_RESTRICT x, size_t ngroups, size_t group,
                   const float* HWY_RESTRICT d, const float* HWY_RESTRICT dm, int lo, int hi,
                   int offset, uint8_t* HWY_RESTRICT L) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  using VI = hn::Vec<decltype(di)>;
  const size_t N = hn::Lanes(df);
  const auto magic = hn::Set(df, 12582912.f);
  const VI mant = hn::Set(di, 0x007fffff);
  const VI half = hn::Set(di, 0x00400000);
  const VI vlo = hn::Set(di, lo);
  const VI vhi = hn::Set(di, hi);
  const VI voff = hn::Set(di, offset);
  // Levels go straight to bytes with a (saturating, never saturated: 0..255 after the clamp)
  // demotion. A store to an int32 array read back by a byte loop gave wrong bytes on the AVX3
  // target in GCC 12's -O3 builds (found by the release benchmark's check against ggml).
  const hn::Rebind<uint8_t, decltype(di)> du8;
  for (size_t j = 0; j < ngroups; ++j) {
    if (d[j] == 0.0f) continue;
    const float* xg = x + j * group;
    uint8_t* lg = L + j * group;
    size_t i = 0;
    if (group % N == 0) {
      const auto vd = hn::Set(df, d[j]);
      const auto vdm = hn::Set(df, dm ? dm[j] : 0.0f);
      for (; i < group; i += N) {
        auto v = hn::LoadU(df, xg + i);
        if (dm) v = hn::Add(v, vdm);
        v = hn::Div(v, vd);
        const VI l = hn::Sub(hn::And(hn::BitCast(di, hn::Add(v, magic)), mant), half);
        hn::StoreU(hn::DemoteTo(du8, hn::Add(hn::Max(hn::Min(l, vhi), vlo), voff)), du8, lg + i);
      }
    }
    for (; i < group; ++i) {  // targets whose vectors do not divide the group
      const float v = (dm ? xg[i] + dm[j] : xg[i]) / d[j];
      const float m = v + 12582912.f;
      int32_t b;
      std::memcpy(&b, &m, 4);
      int l = (b & 0x007fffff) - 0x00400000;
      l = l < hi ? l : hi;
      l = l > lo ? l : lo;
      lg[i] = static_cast<uint8_t>(l + offset);
    }
  }
}

// Q8_0 (both paths) on `blocks` blocks of 32: lanes run inside a block, which is exact here:
// the block's max of |x| is the same in any order for finite values, and each element is
// scaled and rounded on its own (round half away from zero, as roundf: trunc, then one step
// away from zero when the dropped part, computed exactly, is at least 0.5). A block holding a
// NaN or an infinity, where ggml's sequential MAX and the float-to-int8 conversion are
// order- and platform-specific, is left to the scalar code, and so is a block whose scale is
// so small that its inverse overflows: the function returns its index (or `blocks` when all are
// done).
size_t Q8_0Blocks(const float* HWY_RESTRICT x, size_t blocks, uint8_t* HWY_RESTRICT y) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(di)> d8;
  const size_t N = hn::Lanes(df);
  if (32 % N != 0) return 0;
  const auto half = hn::Set(df, 0.5f);
  const auto one = hn::Set(df, 1.0f);
  for (size_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * 32;
    uint8_t* yb = y + b * 34;
    auto vmax = hn::Zero(df);
    auto bad = hn::Zero(df);
    for (size_t i = 0; i < 32; i += N) {
      const auto v = hn::LoadU(df, xb + i);
      vmax = hn::Max(vmax, hn::Abs(v));
      bad = hn::Or(bad, hn::Sub(v, v));  // NaN where v is NaN or infinite, else 0
    }
    if (!hn::AllFalse(df, hn::IsNaN(bad))) return b;
    const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    // A denormal amax makes 1/d infinite: x·id is then ±inf or NaN, which only the scalar
    // code converts to bytes the way ggml's x86 build does.
    if (!(id - id == 0.0f)) return b;
    const uint16_t h = ckptkit::detail::ggml_fp32_to_fp16(d);
    yb[0] = static_cast<uint8_t>(h & 0xFF);
    yb[1] = static_cast<uint8_t>(h >> 8);
    const auto vid = hn::Set(df, id);
    for (size_t i = 0; i < 32; i += N) {
      const auto q = hn::Mul(hn::LoadU(df, xb + i), vid);
      const auto t = hn::Trunc(q);
      const auto r =
          hn::IfThenElse(hn::Ge(hn::Abs(hn::Sub(q, t)), half), hn::Add(t, hn::CopySign(one, q)), t);
      hn::StoreU(hn::DemoteTo(d8, hn::ConvertTo(di, r)), d8, reinterpret_cast<int8_t*>(yb + 2 + i));
    }
  }
  return blocks;
}

}  // namespace HWY_NAMESPACE
}  // namespace ckptkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "tensor/dispatch.h"

namespace ckptkit::detail {
namespace {

using QkxFn = void (*)(const float*, size_t, int, float, float, int, float*, float*, uint8_t*);

struct QuantKernels {
  const char* name;
  QkxFn qkx2_groups32;                                            // Q4_K/Q5_K
  QkxFn qkx2_groups16_q2;                                         // Q2_K
  void (*qx32_groups16)(const float*, size_t, float*, uint8_t*);  // Q6_K
  void (*q3_groups16)(const float*, size_t, float*, uint8_t*);    // Q3_K
  void (*requant_groups)(const float*, size_t, size_t, const float*, const float*, int, int, int,
                         uint8_t*);
  size_t (*q8_0_blocks)(const float*, size_t, uint8_t*);
  bool (*supported)();
};

#define CKPT_QUANT_KERNELS(NS)                                                                    \
  &NS::Qkx2Groups32, &NS::Qkx2Groups16Q2, &NS::Qx32Groups16, &NS::Q3Groups16, &NS::RequantGroups, \
      &NS::Q8_0Blocks

// Best first; the same targets and CPU checks as the cast kernels (src/tensor/cast.cc).
const QuantKernels kQuantKernels[] = {
#if (HWY_TARGETS & HWY_AVX3) && HWY_STATIC_TARGET != HWY_AVX3
    {"AVX3", CKPT_QUANT_KERNELS(N_AVX3),
     [] {
       return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
              __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
     }},
#endif
#if (HWY_TARGETS & HWY_AVX2) && HWY_STATIC_TARGET != HWY_AVX2
    {"AVX2", CKPT_QUANT_KERNELS(N_AVX2),
     [] {
       return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
              __builtin_cpu_supports("bmi2");
     }},
#endif
#if (HWY_TARGETS & HWY_SSE4) && HWY_STATIC_TARGET != HWY_SSE4
    {"SSE4", CKPT_QUANT_KERNELS(N_SSE4),
     [] {
       return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul") &&
              __builtin_cpu_supports("aes");
     }},
#endif
#if (HWY_TARGETS & HWY_SSSE3) && HWY_STATIC_TARGET != HWY_SSSE3
    {"SSSE3", CKPT_QUANT_KERNELS(N_SSSE3), [] { return __builtin_cpu_supports("ssse3") != 0; }},
#endif
    {"baseline", &HWY_STATIC_DISPATCH(Qkx2Groups32), &HWY_STATIC_DISPATCH(Qkx2Groups16Q2),
     &HWY_STATIC_DISPATCH(Qx32Groups16), &HWY_STATIC_DISPATCH(Q3Groups16),
     &HWY_STATIC_DISPATCH(RequantGroups), &HWY_STATIC_DISPATCH(Q8_0Blocks), [] { return true; }},
    // The plain scalar code of quant.cc, for tests and as the definition of the result.
    {"scalar", nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, [] { return true; }},
};
#undef CKPT_QUANT_KERNELS

KernelChoice<QuantKernels> g_quant_choice{kQuantKernels};

}  // namespace

bool qkx2_groups32_simd(const float* x, size_t ngroups, int nmax, float rmin, float rdelta,
                        int nstep, float* scales, float* mins, uint8_t* L) {
  const QuantKernels& k = g_quant_choice.get();
  if (k.qkx2_groups32 == nullptr) return false;
  k.qkx2_groups32(x, ngroups, nmax, rmin, rdelta, nstep, scales, mins, L);
  return true;
}

bool qkx2_groups16_q2_simd(const float* x, size_t ngroups, float* scales, float* mins, uint8_t* L) {
  const QuantKernels& k = g_quant_choice.get();
  if (k.qkx2_groups16_q2 == nullptr) return false;
  k.qkx2_groups16_q2(x, ngroups, 3, -0.5f, 0.1f, 15, scales, mins, L);
  return true;
}

bool qx32_groups16_simd(const float* x, size_t ngroups, float* scales, uint8_t* L) {
  const QuantKernels& k = g_quant_choice.get();
  if (k.qx32_groups16 == nullptr) return false;
  k.qx32_groups16(x, ngroups, scales, L);
  return true;
}

bool q3_groups16_simd(const float* x, size_t ngroups, float* scales, uint8_t* L) {
  const QuantKernels& k = g_quant_choice.get();
  if (k.q3_groups16 == nullptr) return false;
  k.q3_groups16(x, ngroups, scales, L);
  return true;
}

bool requantize_groups_simd(const float* x, size_t ngroups, size_t group, const float* d,
                            const float* dm, int lo, int hi, int offset, uint8_t* L) {
  const QuantKernels& k = g_quant_choice.get();
  if (k.requant_groups == nullptr) return false;
  k.requant_groups(x, ngroups, group, d, dm, lo, hi, offset, L);
  return true;
}

size_t q8_0_blocks_simd(const float* x, size_t blocks, uint8_t* y) {
  const QuantKernels& k = g_quant_choice.get();
  return k.q8_0_blocks == nullptr ? 0 : k.q8_0_blocks(x, blocks, y);
}

std::vector<std::string> quant_simd_targets() { return g_quant_choice.names(); }

bool select_quant_simd_target(std::string_view name) { return g_quant_choice.select(name); }

}  // namespace ckptkit::detail
#endif  // HWY_ONCE
