// Conversion kernels against references computed differently: values decoded with ldexp from
// the format definitions, and rounding checked at exact midpoints (ties to even) and their
// float neighbours. PyTorch, the behavioural oracle, is compared in tests/python/.
#include "ckptkit/cast.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace ckptkit {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Value of an IEEE-style binary format code with `e` exponent and `m` mantissa bits.
double decode(uint32_t code, int e, int m) {
  const uint32_t sign = code >> (e + m);
  const int exp = static_cast<int>((code >> m) & ((1u << e) - 1));
  const uint32_t man = code & ((1u << m) - 1);
  const int bias = (1 << (e - 1)) - 1;
  double v = exp == 0 ? std::ldexp(static_cast<double>(man), 1 - bias - m)
                      : std::ldexp(static_cast<double>(man | (1u << m)), exp - bias - m);
  return sign ? -v : v;
}

TEST(Cast, EveryF16DecodesExactly) {
  std::vector<uint16_t> in(65536);
  for (uint32_t i = 0; i < 65536; ++i) in[i] = static_cast<uint16_t>(i);
  std::vector<float> out(65536);
  f16_to_f32(in.data(), out.data(), in.size());
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint32_t exp = (i >> 10) & 0x1F, man = i & 0x3FF;
    if (exp == 0x1F && man != 0) {  // NaN: quiet, payload and sign kept
      EXPECT_EQ(bits_of(out[i]), ((i & 0x8000u) << 16) | 0x7FC00000u | (man << 13)) << i;
    } else if (exp == 0x1F) {
      EXPECT_TRUE(std::isinf(out[i]) && std::signbit(out[i]) == ((i & 0x8000) != 0)) << i;
    } else {
      ASSERT_EQ(static_cast<double>(out[i]), decode(i, 5, 10)) << i;
      EXPECT_EQ(std::signbit(out[i]), (i & 0x8000) != 0) << i;
    }
  }
}

TEST(Cast, EveryBF16DecodesExactly) {
  std::vector<uint16_t> in(65536);
  for (uint32_t i = 0; i < 65536; ++i) in[i] = static_cast<uint16_t>(i);
  std::vector<float> out(65536);
  bf16_to_f32(in.data(), out.data(), in.size());
  for (uint32_t i = 0; i < 65536; ++i) ASSERT_EQ(bits_of(out[i]), i << 16) << i;
}

/// For every pair of adjacent finite codes of a format: the codes themselves, the exact
/// midpoint (ties to the even code), and the float just below/above the midpoint.
template <typename Encode>
void check_rounding(int e, int m, uint32_t max_finite_code, Encode encode) {
  std::vector<float> in;
  std::vector<uint32_t> expect;
  auto add = [&](float x, uint32_t code) {
    in.push_back(x);
    expect.push_back(code);
    in.push_back(-x);
    expect.push_back(code | (1u << (e + m)));
  };
  for (uint32_t c = 0; c <= max_finite_code; ++c) {
    const float v = static_cast<float>(decode(c, e, m));
    ASSERT_EQ(static_cast<double>(v), decode(c, e, m)) << "code not exact in f32";
    add(v, c);
    if (c == max_finite_code) break;
    const double mid = (decode(c, e, m) + decode(c + 1, e, m)) / 2;
    const float fmid = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(fmid), mid) << "midpoint not exact in f32";
    add(fmid, (c & 1) ? c + 1 : c);
    add(std::nextafter(fmid, 0.0f), c);
    add(std::nextafter(fmid, INFINITY), c + 1);
  }
  std::vector<uint32_t> got(in.size());
  encode(in, got);
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(got[i], expect[i]) << "input " << in[i] << " (0x" << std::hex << bits_of(in[i])
                                 << ")";
}

TEST(Cast, F32ToF16RoundsToNearestEvenEverywhere) {
  check_rounding(5, 10, 0x7BFF, [](const std::vector<float>& in, std::vector<uint32_t>& out) {
    std::vector<uint16_t> h(in.size());
    f32_to_f16(in.data(), h.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) out[i] = h[i];
  });
}

TEST(Cast, F32ToBF16RoundsToNearestEvenEverywhere) {
  check_rounding(8, 7, 0x7F7F, [](const std::vector<float>& in, std::vector<uint32_t>& out) {
    std::vector<uint16_t> h(in.size());
    f32_to_bf16(in.data(), h.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) out[i] = h[i];
  });
}

TEST(Cast, F32ToF8E5M2RoundsToNearestEvenEverywhere) {
  check_rounding(5, 2, 0x7B, [](const std::vector<float>& in, std::vector<uint32_t>& out) {
    std::vector<uint8_t> h(in.size());
    f32_to_f8_e5m2(in.data(), h.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) out[i] = h[i];
  });
}

TEST(Cast, F32ToF8E4M3RoundsToNearestEvenEverywhere) {
  // E4M3 "fn" has no Inf: codes up to 0x7E (448) are finite, 0x7F is NaN.
  check_rounding(4, 3, 0x7E, [](const std::vector<float>& in, std::vector<uint32_t>& out) {
    std::vector<uint8_t> h(in.size());
    f32_to_f8_e4m3(in.data(), h.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) out[i] = h[i];
  });
}

TEST(Cast, OverflowAndSpecialValues) {
  const float inf = INFINITY;
  const std::vector<float> in = {65504.0f,
                                 65519.996f,
                                 65520.0f,
                                 1e30f,
                                 inf,
                                 -inf,
                                 from_bits(0x7FC00001),
                                 from_bits(0xFF800001),
                                 464.0f,
                                 464.1f,
                                 480.0f,
                                 57344.0f,
                                 61439.996f,
                                 61440.0f};
  std::vector<uint16_t> h(in.size()), b(in.size());
  std::vector<uint8_t> e4(in.size()), e5(in.size());
  f32_to_f16(in.data(), h.data(), in.size());
  f32_to_bf16(in.data(), b.data(), in.size());
  f32_to_f8_e4m3(in.data(), e4.data(), in.size());
  f32_to_f8_e5m2(in.data(), e5.data(), in.size());
  EXPECT_EQ(h[0], 0x7BFF);  // max half
  EXPECT_EQ(h[1], 0x7BFF);  // just below the overflow tie
  EXPECT_EQ(h[2], 0x7C00);  // the tie goes to Inf (0x7BFF is odd)
  EXPECT_EQ(h[3], 0x7C00);
  EXPECT_EQ(h[4], 0x7C00);
  EXPECT_EQ(h[5], 0xFC00);
  EXPECT_EQ(h[6], 0x7E00);  // NaN: canonical quiet, sign kept
  EXPECT_EQ(h[7], 0xFE00);
  EXPECT_EQ(b[4], 0x7F80);
  EXPECT_EQ(b[5], 0xFF80);
  EXPECT_EQ(b[6], 0xFFFF);  // NaN: PyTorch's CPU kernel writes 0xFFFF for every NaN
  EXPECT_EQ(b[7], 0xFFFF);
  EXPECT_EQ(b[3], 0x714A);  // 1e30 = 0x7149F2CA rounds up
  EXPECT_EQ(e4[8], 0x7E);   // 464 ties to 448
  EXPECT_EQ(e4[9], 0x7F);   // past the tie: NaN, E4M3 has no Inf
  EXPECT_EQ(e4[10], 0x7F);
  EXPECT_EQ(e4[4], 0x7F);
  EXPECT_EQ(e4[5], 0xFF);
  EXPECT_EQ(e4[6], 0x7F);
  EXPECT_EQ(e5[11], 0x7B);
  EXPECT_EQ(e5[12], 0x7B);
  EXPECT_EQ(e5[13], 0x7C);  // tie with odd 0x7B goes to Inf
  EXPECT_EQ(e5[4], 0x7C);
  EXPECT_EQ(e5[5], 0xFC);
  EXPECT_EQ(e5[7], 0xFF);
}

TEST(Cast, F64ToF32MatchesTheCompiler) {
  std::mt19937_64 rng(7);
  std::vector<double> in(4099);
  for (double& d : in) {
    uint64_t u = rng();
    std::memcpy(&d, &u, 8);
  }
  in[0] = 1e-310;                 // subnormal double → 0
  in[1] = 3.4028235677973366e38;  // rounds to FLT_MAX
  std::vector<float> out(in.size());
  f64_to_f32(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const float want = static_cast<float>(in[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(out[i]));
    } else {
      ASSERT_EQ(bits_of(out[i]), bits_of(want)) << in[i];
    }
  }
}

TEST(Cast, EveryLengthAndAlignmentTakesTheSamePath) {
  // Tails are run through the vector code on a padded copy; results must not depend on n.
  std::mt19937 rng(3);
  std::vector<float> src(300);
  for (float& f : src)
    f = std::ldexp(static_cast<float>(rng() % 100000) - 50000.0f, -static_cast<int>(rng() % 30));
  std::vector<uint16_t> whole(src.size());
  f32_to_f16(src.data(), whole.data(), src.size());
  for (size_t start = 0; start < 5; ++start) {
    for (size_t n = 0; n + start <= 70; ++n) {
      std::vector<uint16_t> part(n + 1, 0xDEAD);
      f32_to_f16(src.data() + start, part.data(), n);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(part[i], whole[start + i]) << start << "+" << n;
      EXPECT_EQ(part[n], 0xDEAD) << "wrote past the end";
    }
  }
}

TEST(Cast, ComposedCastsGoThroughF32) {
  std::vector<uint16_t> h(65536);
  for (uint32_t i = 0; i < 65536; ++i) h[i] = static_cast<uint16_t>(i);
  std::vector<uint16_t> direct(65536), via(65536);
  std::vector<float> f(65536);
  ASSERT_TRUE(cast_elements(DType::F16, DType::BF16, h.data(), direct.data(), h.size()).is_ok());
  f16_to_f32(h.data(), f.data(), f.size());
  f32_to_bf16(f.data(), via.data(), f.size());
  for (uint32_t i = 0; i < 65536; ++i) {
    // Same rounding through F32; only the NaN constant differs (PyTorch's, per source type).
    if (std::isnan(f[i])) {
      ASSERT_EQ(direct[i], 0x7FC0) << i;
      ASSERT_EQ(via[i], 0xFFFF) << i;
    } else {
      ASSERT_EQ(direct[i], via[i]) << i;
    }
  }
  EXPECT_FALSE(can_cast(DType::I64, DType::F16));
  EXPECT_FALSE(can_cast(DType::F4, DType::F16));
  EXPECT_FALSE(cast_elements(DType::I32, DType::F32, h.data(), f.data(), 1).is_ok());
}

TEST(Cast, F8DecodesEveryCode) {
  std::vector<uint8_t> codes(256);
  for (int i = 0; i < 256; ++i) codes[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
  std::vector<float> e4(256), e5(256);
  f8_e4m3_to_f32(codes.data(), e4.data(), 256);
  f8_e5m2_to_f32(codes.data(), e5.data(), 256);
  for (uint32_t i = 0; i < 256; ++i) {
    if ((i & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(e4[i])) << i;
    } else {
      EXPECT_EQ(static_cast<double>(e4[i]), decode(i, 4, 3)) << i;
    }
    if ((i & 0x7C) == 0x7C) {
      EXPECT_EQ(std::isnan(e5[i]), (i & 3) != 0) << i;
      EXPECT_EQ(std::isinf(e5[i]), (i & 3) == 0) << i;
    } else {
      EXPECT_EQ(static_cast<double>(e5[i]), decode(i, 5, 2)) << i;
    }
  }
}

}  // namespace
}  // namespace ckptkit

namespace ckptkit {
namespace {

// Every SIMD target compiled in (AVX-512, AVX2, SSE4, ...) must give the same bits: the kernels
// use integer arithmetic precisely so that no target's float conversion quirks leak through.
TEST(Cast, EverySimdTargetGivesTheSameBits) {
  std::vector<float> in;
  for (uint32_t i = 0; i < 65536; ++i) {
    uint32_t u = (i << 16) | ((i * 2654435761u) & 0xFFFF);
    in.push_back(from_bits(u));
    in.push_back(from_bits(i << 13));  // around every F16 value, exact and midpoints
    in.push_back(from_bits((i << 13) | 0x1000));
  }
  auto run_all = [&] {
    std::vector<uint16_t> h(in.size()), b(in.size());
    std::vector<uint8_t> e4(in.size()), e5(in.size());
    std::vector<float> back(in.size());
    f32_to_f16(in.data(), h.data(), in.size());
    f32_to_bf16(in.data(), b.data(), in.size());
    f32_to_f8_e4m3(in.data(), e4.data(), in.size());
    f32_to_f8_e5m2(in.data(), e5.data(), in.size());
    f16_to_f32(h.data(), back.data(), h.size());
    std::vector<uint16_t> hb(h.size());
    f16_to_bf16(h.data(), hb.data(), h.size());
    std::vector<uint8_t> all;
    auto append = [&all](const void* p, size_t n) {
      const auto* b8 = static_cast<const uint8_t*>(p);
      all.insert(all.end(), b8, b8 + n);
    };
    append(h.data(), h.size() * 2);
    append(b.data(), b.size() * 2);
    append(e4.data(), e4.size());
    append(e5.data(), e5.size());
    append(back.data(), back.size() * 4);
    append(hb.data(), hb.size() * 2);
    return all;
  };
  const std::vector<uint8_t> reference = run_all();
  const std::string best = simd_target_name();
  const std::vector<std::string> targets = simd_targets();
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(targets.front(), best);
  EXPECT_EQ(targets.back(), "baseline");
  for (const std::string& target : targets) {
    ASSERT_TRUE(select_simd_target(target));
    EXPECT_EQ(simd_target_name(), target);
    EXPECT_EQ(run_all(), reference) << "target " << target;
  }
  EXPECT_FALSE(select_simd_target("no-such-target"));
  ASSERT_TRUE(select_simd_target(best));
}

}  // namespace
}  // namespace ckptkit

namespace ckptkit {
namespace {

// The verify kernel against a plain loop, on every SIMD target and every tail length.
TEST(Cast, F32StatsCountsLikeAPlainLoopOnEveryTarget) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> v(4099);
  for (float& x : v) x = dist(rng);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            0.0f,
                            -0.0f,
                            1e30f,
                            -2e30f,
                            std::numeric_limits<float>::denorm_min()};
  for (size_t i = 0; i < v.size(); i += 37) v[i] = specials[(i / 37) % std::size(specials)];
  const std::string before = simd_target_name();
  for (const std::string& target : simd_targets()) {
    ASSERT_TRUE(select_simd_target(target));
    for (size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{4099}}) {
      uint64_t want[4] = {0, 0, 0, 0};
      for (size_t i = 0; i < n; ++i) {
        uint32_t b;
        std::memcpy(&b, &v[i], 4);
        const uint32_t a = b & 0x7FFFFFFFu;
        want[0] += a > 0x7F800000u;
        want[1] += a == 0x7F800000u;
        want[2] += a == 0;
        if (a < 0x7F800000u) want[3] = std::max<uint64_t>(want[3], a);
      }
      uint64_t got[4] = {0, 0, 0, 0};
      f32_stats(v.data(), n, got);
      for (int k = 0; k < 4; ++k) EXPECT_EQ(got[k], want[k]) << target << " n=" << n << " k=" << k;
    }
  }
  ASSERT_TRUE(select_simd_target(before));
}

}  // namespace
}  // namespace ckptkit
