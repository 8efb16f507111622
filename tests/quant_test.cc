// ggml block (de)quantization: sizes, refusals, hand-computed blocks and reconstruction error.
// Bit-exactness against real ggml is tested in tests/python/test_quant_ggml.py (ggml as oracle).
#include "tensor/quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tensor/quant_simd.h"

namespace ckptkit {
namespace {

constexpr DType kQuantizable[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                                  DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
constexpr QuantPath kPaths[] = {QuantPath::kReference, QuantPath::kUnitImportance};

uint16_t half_at(const std::vector<uint8_t>& b, size_t off) {
  uint16_t h;
  std::memcpy(&h, b.data() + off, 2);
  return h;
}

// A smooth row with a slow trend and an offset: what weights look like to a block quantizer.
std::vector<float> smooth_row(size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i);
    x[i] = static_cast<float>(0.8 * std::sin(t * 0.05) + 0.3 * std::cos(t * 0.31) + 0.1);
  }
  return x;
}

TEST(Quant, SupportedTypes) {
  for (DType t : kQuantizable) {
    EXPECT_TRUE(can_quantize(t)) << dtype_name(t);
    EXPECT_TRUE(can_dequantize(t)) << dtype_name(t);
  }
  EXPECT_FALSE(can_quantize(DType::IQ4_NL));
  EXPECT_FALSE(can_quantize(DType::IQ4_XS));
  EXPECT_TRUE(can_dequantize(DType::IQ4_NL));
  EXPECT_TRUE(can_dequantize(DType::IQ4_XS));
  EXPECT_FALSE(can_quantize(DType::F16));
  EXPECT_FALSE(can_dequantize(DType::F32));
}

// The kernels write exactly block_bytes per block of the dtype table: nothing past the end.
TEST(Quant, WritesExactlyTheTableSize) {
  for (DType t : kQuantizable) {
    const DTypeInfo& info = dtype_info(t);
    const size_t n = 2u * info.block;
    const std::vector<float> x = smooth_row(n);
    for (QuantPath p : kPaths) {
      std::vector<uint8_t> out(2u * info.block_bytes + 16, 0xA5);
      ASSERT_TRUE(quantize_rows(t, p, x.data(), 1, n, out.data()).is_ok()) << dtype_name(t);
      for (size_t i = 2u * info.block_bytes; i < out.size(); ++i)
        ASSERT_EQ(out[i], 0xA5) << dtype_name(t) << " wrote past its blocks";
      std::vector<float> back(n + 4, 1234.5f);
      ASSERT_TRUE(dequantize_blocks(t, out.data(), n, back.data()).is_ok());
      for (size_t i = n; i < back.size(); ++i) ASSERT_EQ(back[i], 1234.5f) << dtype_name(t);
    }
  }
  for (DType t : {DType::IQ4_NL, DType::IQ4_XS}) {
    const DTypeInfo& info = dtype_info(t);
    std::vector<uint8_t> blk(info.block_bytes, 0x11);
    std::vector<float> back(info.block + 1u, -1.0f);
    ASSERT_TRUE(dequantize_blocks(t, blk.data(), info.block, back.data()).is_ok());
    EXPECT_EQ(back[info.block], -1.0f);
  }
}

TEST(Quant, RefusesBadArguments) {
  std::vector<float> x(512, 1.0f);
  std::vector<uint8_t> out(4096);
  for (DType t : kQuantizable) {
    const uint16_t block = dtype_info(t).block;
    const Status s = quantize_rows(t, QuantPath::kReference, x.data(), 1, block + 16u, out.data());
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << dtype_name(t);
    EXPECT_EQ(dequantize_blocks(t, out.data(), block - 1u, x.data()).code(),
              ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ(quantize_rows(DType::IQ4_NL, QuantPath::kReference, x.data(), 1, 32, out.data()).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(quantize_rows(DType::F16, QuantPath::kReference, x.data(), 1, 32, out.data()).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(dequantize_blocks(DType::BF16, out.data(), 32, x.data()).code(),
            ErrorCode::kInvalidArgument);
  const Status overflow = quantize_rows(DType::Q8_0, QuantPath::kReference, x.data(),
                                        std::numeric_limits<uint64_t>::max() / 16, 32, out.data());
  EXPECT_EQ(overflow.code(), ErrorCode::kInvalidArgument);
  // Nothing to do is not an error.
  EXPECT_TRUE(
      quantize_rows(DType::Q4_K, QuantPath::kUnitImportance, x.data(), 0, 256, out.data()).is_ok());
}

TEST(Quant, Fp16MatchesGgml) {
  using detail::ggml_fp16_to_fp32;
  using detail::ggml_fp32_to_fp16;
  EXPECT_EQ(ggml_fp32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(ggml_fp32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(ggml_fp32_to_fp16(65519.0f), 0x7BFF);               // below the rounding midpoint
  EXPECT_EQ(ggml_fp32_to_fp16(65520.0f), 0x7C00);               // midpoint rounds to even: Inf
  EXPECT_EQ(ggml_fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even (0)
  EXPECT_EQ(ggml_fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);  // tie to even (2)
  EXPECT_EQ(ggml_fp32_to_fp16(std::numeric_limits<float>::quiet_NaN()), 0x7E00);
  EXPECT_EQ(ggml_fp32_to_fp16(-std::numeric_limits<float>::quiet_NaN()), 0xFE00);  // sign kept
  EXPECT_EQ(ggml_fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(ggml_fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(ggml_fp16_to_fp32(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(ggml_fp16_to_fp32(0xFC00)));
  EXPECT_TRUE(std::signbit(ggml_fp16_to_fp32(0x8000)));
}

// Q8_0 by hand: x[j] = j - 12, amax = 19, d = 19/127, q = round(x * 127/19).
TEST(Quant, Q8_0HandComputedBlock) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 12);
  std::vector<uint8_t> out(34);
  ASSERT_TRUE(quantize_rows(DType::Q8_0, QuantPath::kReference, x.data(), 1, 32, out.data()));
  EXPECT_EQ(half_at(out, 0), detail::ggml_fp32_to_fp16(19.0f / 127.0f));
  const float id = 1.0f / (19.0f / 127.0f);
  for (int j = 0; j < 32; ++j)
    EXPECT_EQ(static_cast<int8_t>(out[2 + j]), static_cast<int>(std::round(x[j] * id))) << j;
  EXPECT_EQ(static_cast<int8_t>(out[2 + 31]), 127);
  EXPECT_EQ(static_cast<int8_t>(out[2 + 0]), -80);  // -12 * 127/19 = -80.2
}

// Q4_0 by hand: the largest magnitude is -8 (negative), so d = 1 and levels are x + 8.
TEST(Quant, Q4_0HandComputedBlock) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16 - 8);  // -8 … 7
  std::vector<uint8_t> out(18);
  ASSERT_TRUE(quantize_rows(DType::Q4_0, QuantPath::kReference, x.data(), 1, 32, out.data()));
  EXPECT_EQ(half_at(out, 0), 0x3C00);  // d = -8 / -8 = 1
  for (int j = 0; j < 16; ++j) EXPECT_EQ(out[2 + j], (j << 4) | j) << j;
  std::vector<float> back(32);
  ASSERT_TRUE(dequantize_blocks(DType::Q4_0, out.data(), 32, back.data()));
  EXPECT_EQ(back, x);
}

TEST(Quant, AllZeroRowsGiveZeroBlocks) {
  for (DType t : kQuantizable) {
    const DTypeInfo& info = dtype_info(t);
    const std::vector<float> x(2u * info.block, 0.0f);
    for (QuantPath p : kPaths) {
      std::vector<uint8_t> out(2u * info.block_bytes, 0xFF);
      ASSERT_TRUE(quantize_rows(t, p, x.data(), 1, x.size(), out.data()));
      std::vector<float> back(x.size(), 1.0f);
      ASSERT_TRUE(dequantize_blocks(t, out.data(), x.size(), back.data()));
      for (float v : back) ASSERT_EQ(v, 0.0f) << dtype_name(t);
    }
  }
}

// Reconstruction error on a smooth row, relative to the row's largest magnitude. The bounds are
// about twice what ggml's algorithms reach; a wrong packing, scale or offset is far above them.
TEST(Quant, RoundTripErrorBound) {
  struct Bound {
    DType type;
    double max_rel;
  };
  const Bound bounds[] = {
      {DType::Q8_0, 0.01}, {DType::Q6_K, 0.03}, {DType::Q5_0, 0.06}, {DType::Q5_1, 0.04},
      {DType::Q5_K, 0.04}, {DType::Q4_0, 0.12}, {DType::Q4_1, 0.08}, {DType::Q4_K, 0.08},
      {DType::Q3_K, 0.25}, {DType::Q2_K, 0.40},
  };
  const size_t n = 4 * 256;
  const std::vector<float> x = smooth_row(n);
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  for (const Bound& b : bounds) {
    for (QuantPath p : kPaths) {
      std::vector<uint8_t> q(*dtype_bytes(b.type, n));
      ASSERT_TRUE(quantize_rows(b.type, p, x.data(), 2, n / 2, q.data()));
      std::vector<float> back(n);
      ASSERT_TRUE(dequantize_blocks(b.type, q.data(), n, back.data()));
      double worst = 0;
      for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double{back[i]} - x[i]));
      EXPECT_LT(worst / amax, b.max_rel)
          << dtype_name(b.type) << (p == QuantPath::kReference ? " ref" : " ones");
      EXPECT_GT(worst, 0.0) << dtype_name(b.type) << " cannot be lossless on this row";
    }
  }
}

// Same input, same bytes; and the reference path does not depend on how rows are split.
TEST(Quant, DeterministicAndRowSplitIndependent) {
  const size_t n = 3072;
  const std::vector<float> x = smooth_row(n);
  for (DType t : kQuantizable) {
    const size_t bytes = *dtype_bytes(t, n);
    for (QuantPath p : kPaths) {
      std::vector<uint8_t> a(bytes), b(bytes);
      ASSERT_TRUE(quantize_rows(t, p, x.data(), 1, n, a.data()));
      ASSERT_TRUE(quantize_rows(t, p, x.data(), 1, n, b.data()));
      EXPECT_EQ(a, b) << dtype_name(t);
    }
    std::vector<uint8_t> one(bytes), split(bytes);
    ASSERT_TRUE(quantize_rows(t, QuantPath::kReference, x.data(), 1, n, one.data()));
    ASSERT_TRUE(quantize_rows(t, QuantPath::kReference, x.data(), 12, 256, split.data()));
    EXPECT_EQ(one, split) << dtype_name(t);
  }
}

// The importance path of the 32-element types weighs by the whole row's mean square, so the row
// split changes the bytes there (and only there): a check that rows are really rows.
TEST(Quant, UnitImportanceUsesRowStatistics) {
  const size_t n = 512;
  std::vector<float> x = smooth_row(n);
  for (size_t i = 256; i < n; ++i) x[i] *= 40.0f;  // second half much larger
  std::vector<uint8_t> one(*dtype_bytes(DType::Q4_0, n)), split(one.size());
  ASSERT_TRUE(quantize_rows(DType::Q4_0, QuantPath::kUnitImportance, x.data(), 1, n, one.data()));
  ASSERT_TRUE(
      quantize_rows(DType::Q4_0, QuantPath::kUnitImportance, x.data(), 2, n / 2, split.data()));
  EXPECT_NE(one, split);
}

// Every SIMD target this CPU has gives the scalar code's bytes, on data that exercises each
// branch: degenerate groups (all equal, all zero, all positive), NaN/Inf, denormals, huge values,
// and a group count that leaves a partial vector at the end.
TEST(Quant, SimdTargetsMatchScalar) {
  const size_t blocks = 37;
  const size_t n = blocks * 256;
  std::mt19937 gen(42);
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t group = i / 32;
    const float scale = std::ldexp(1.0f, static_cast<int>(group % 29) * 9 - 140);
    x[i] = normal(gen) * scale;
    switch (group % 13) {
      case 3:
        x[i] = 0.0f;
        break;
      case 5:
        x[i] = 0.75f;
        break;
      case 7:
        x[i] = std::fabs(x[i]) + 1.0f;
        break;
      case 11:
        if (i % 9 == 0) x[i] = std::numeric_limits<float>::infinity();
        break;
      case 12:
        if (i % 17 == 0) x[i] = std::numeric_limits<float>::quiet_NaN();
        break;
      default:
        break;
    }
  }
  const std::vector<std::string> targets = detail::quant_simd_targets();
  ASSERT_GE(targets.size(), 2u);
  EXPECT_EQ(targets.back(), "scalar");
  for (DType t : {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    for (QuantPath p : kPaths) {
      const char* path = p == QuantPath::kReference ? " ref" : " ones";
      const size_t bytes = *dtype_bytes(t, n);
      ASSERT_TRUE(detail::select_quant_simd_target("scalar"));
      std::vector<uint8_t> expected(bytes);
      ASSERT_TRUE(quantize_rows(t, p, x.data(), blocks, 256, expected.data()));
      for (const std::string& target : targets) {
        ASSERT_TRUE(detail::select_quant_simd_target(target));
        std::vector<uint8_t> got(bytes);
        ASSERT_TRUE(quantize_rows(t, p, x.data(), blocks, 256, got.data()));
        EXPECT_EQ(got, expected) << dtype_name(t) << path << " on " << target;
        // Fewer blocks than one vector of groups.
        std::vector<uint8_t> one(*dtype_bytes(t, 256));
        ASSERT_TRUE(quantize_rows(t, p, x.data() + 256, 1, 256, one.data()));
        EXPECT_TRUE(
            std::equal(one.begin(), one.end(), expected.begin() + static_cast<long>(one.size())))
            << dtype_name(t) << path << " on " << target;
      }
    }
  }
  ASSERT_TRUE(detail::select_quant_simd_target(targets.front()));
}

// Groups of 16 that take the Q3_K/Q6_K group steps down different paths in neighbouring lanes:
// the kind of each group changes from group to group, so every vector of groups mixes
// refinement loops that stop after different passes, degenerate groups and extreme magnitudes.
std::vector<float> mixed_groups16(size_t blocks, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(blocks * 256);
  for (size_t g = 0; g < blocks * 16; ++g) {
    float* xg = x.data() + 16 * g;
    const float scale = std::ldexp(1.0f, static_cast<int>((g * 5) % 23) * 11 - 140);
    switch ((g * 7 + g / 16) % 14) {
      case 0:  // all zero
        for (int i = 0; i < 16; ++i) xg[i] = 0.0f;
        break;
      case 1:  // one non-zero element
        for (int i = 0; i < 16; ++i) xg[i] = 0.0f;
        xg[g % 16] = normal(gen);
        break;
      case 2:  // one outlier among small values: many refinement passes
        for (int i = 0; i < 16; ++i) xg[i] = normal(gen) * 0.01f;
        xg[(g * 3) % 16] = (g % 2 ? 1.0f : -1.0f) * 5.0f;
        break;
      case 3:  // exact multiples of a step (ties of nearest_int)
        for (int i = 0; i < 16; ++i)
          xg[i] = static_cast<float>(static_cast<int>(gen() % 9) - 4) * 0.5f;
        break;
      case 4:  // all equal
        for (int i = 0; i < 16; ++i) xg[i] = g % 2 ? -0.75f : 3.0f;
        break;
      case 5:  // around GROUP_MAX_EPS (1e-15): some groups below it, some above
        for (int i = 0; i < 16; ++i) xg[i] = normal(gen) * (g % 2 ? 2e-16f : 2e-15f);
        break;
      case 6:  // all positive
        for (int i = 0; i < 16; ++i) xg[i] = uniform(gen) + 0.1f;
        break;
      case 7:  // float32 denormals
        for (int i = 0; i < 16; ++i) xg[i] = normal(gen) * 1e-40f;
        break;
      case 8:  // huge: x^3 overflows, sums become Inf/NaN
        for (int i = 0; i < 16; ++i) xg[i] = normal(gen) * 1e30f;
        break;
      case 9:  // heavy tails
        for (int i = 0; i < 16; ++i) xg[i] = normal(gen) / (std::fabs(normal(gen)) + 0.05f);
        break;
      case 10:  // NaN and Inf
        for (int i = 0; i < 16; ++i) xg[i] = normal(gen);
        xg[g % 16] = g % 4 == 0 ? std::numeric_limits<float>::quiet_NaN()
                                : (g % 4 == 1 ? std::numeric_limits<float>::infinity()
                                              : -std::numeric_limits<float>::infinity());
        break;
      case 11:  // two values only
        for (int i = 0; i < 16; ++i) xg[i] = i % 3 ? 1.0f : -0.3f;
        break;
      default:  // Gaussian over a wide range of magnitudes
        for (int i = 0; i < 16; ++i) xg[i] = normal(gen) * scale;
        break;
    }
  }
  return x;
}

// The Q3_K and Q6_K group steps themselves on every target: scales bit for bit and every
// level, including those that the requantization would overwrite in the finished blocks.
TEST(Quant, GroupStepsMatchScalarOnEveryTarget) {
  const size_t blocks = 61;
  const std::vector<float> x = mixed_groups16(blocks, 7);
  const std::vector<std::string> targets = detail::quant_simd_targets();
  using Step = void (*)(const float*, uint64_t, float*, uint8_t*);
  const std::pair<const char*, Step> steps[] = {{"Q3_K", &detail::q3k_reference_groups},
                                                {"Q6_K", &detail::q6k_reference_groups}};
  for (const auto& [name, step] : steps) {
    ASSERT_TRUE(detail::select_quant_simd_target("scalar"));
    std::vector<float> scales(blocks * 16);
    std::vector<uint8_t> L(blocks * 256);
    step(x.data(), blocks, scales.data(), L.data());
    for (const std::string& target : targets) {
      ASSERT_TRUE(detail::select_quant_simd_target(target));
      std::vector<float> s2(blocks * 16, -1.0f);
      std::vector<uint8_t> L2(blocks * 256, 0xEE);
      step(x.data(), blocks, s2.data(), L2.data());
      for (size_t g = 0; g < blocks * 16; ++g) {
        uint32_t a, b;
        std::memcpy(&a, &scales[g], 4);
        std::memcpy(&b, &s2[g], 4);
        EXPECT_EQ(a, b) << name << " on " << target << ": scale of group " << g;
        EXPECT_TRUE(std::equal(L.begin() + static_cast<long>(16 * g),
                               L.begin() + static_cast<long>(16 * g + 16),
                               L2.begin() + static_cast<long>(16 * g)))
            << name << " on " << target << ": levels of group " << g;
      }
      // One block alone: a partial vector on targets with more than 16 lanes.
      std::vector<float> s1(16);
      std::vector<uint8_t> L1(256);
      step(x.data() + 256 * 3, 1, s1.data(), L1.data());
      EXPECT_EQ(0, std::memcmp(s1.data(), scales.data() + 16 * 3, 64)) << name << " " << target;
      EXPECT_EQ(0, std::memcmp(L1.data(), L.data() + 256 * 3, 256)) << name << " " << target;
    }
  }
  ASSERT_TRUE(detail::select_quant_simd_target(targets.front()));
}

// The finished Q3_K and Q6_K blocks of the same mixed groups on every target, for both paths
// (the scale quantization, requantization and packing run on SIMD lanes too).
TEST(Quant, MixedGroupsMatchScalarOnEveryTarget) {
  const size_t blocks = 67;
  const std::vector<float> x = mixed_groups16(blocks, 11);
  const std::vector<std::string> targets = detail::quant_simd_targets();
  for (DType t : {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    for (QuantPath p : kPaths) {
      const size_t bytes = *dtype_bytes(t, x.size());
      ASSERT_TRUE(detail::select_quant_simd_target("scalar"));
      std::vector<uint8_t> expected(bytes);
      ASSERT_TRUE(quantize_rows(t, p, x.data(), 1, x.size(), expected.data()));
      for (const std::string& target : targets) {
        ASSERT_TRUE(detail::select_quant_simd_target(target));
        std::vector<uint8_t> got(bytes);
        ASSERT_TRUE(quantize_rows(t, p, x.data(), 1, x.size(), got.data()));
        EXPECT_EQ(got, expected) << dtype_name(t)
                                 << (p == QuantPath::kReference ? " ref" : " ones") << " on "
                                 << target;
      }
    }
  }
  ASSERT_TRUE(detail::select_quant_simd_target(targets.front()));
}

}  // namespace
}  // namespace ckptkit
