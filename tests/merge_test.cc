// Merge building blocks: block names on the published layouts, supermerger strings, the exact
// TIES threshold (against a full sort), statistics that do not depend on chunking, and DARE's
// stream. End-to-end merges against NumPy are in tests/python/test_merge.py.
#include "ckptkit/merge.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <random>

#include "merge/kernels.h"
#include "model/layouts.h"

namespace ckptkit {
namespace {

std::vector<TensorLayout> layout(const std::string& name) {
  auto l = load_layout(name);
  EXPECT_TRUE(l.is_ok()) << name;
  return l.is_ok() ? *l : std::vector<TensorLayout>{};
}

/// Tensors per block of a layout's denoiser (names under `prefix`).
std::map<std::string, int> block_counts(const std::string& layout_name, const std::string& family,
                                        const std::string& prefix) {
  std::map<std::string, int> counts;
  for (const TensorLayout& t : layout(layout_name)) {
    if (!t.name.starts_with(prefix)) continue;
    const std::string b = merge_block_of(family, std::string_view(t.name).substr(prefix.size()));
    counts[b.empty() ? "-" : b] += 1;
  }
  return counts;
}

TEST(MergeBlocks, Sd15EveryUnetTensorInItsBlock) {
  // The SD1.5 UNet: input_blocks 0–11, middle_block, output_blocks 0–11; time_embed goes with
  // IN00 and the final out layers with OUT11, so no UNet tensor is left outside a block.
  const auto c = block_counts("sd15-ldm", "sd1", "model.diffusion_model.");
  EXPECT_EQ(c.count("-"), 0u);
  EXPECT_EQ(c.size(), 25u);
  // input_blocks.0.0 (conv_in: weight, bias) + time_embed.{0,2}.{weight,bias}.
  EXPECT_EQ(c.at("IN00"), 2 + 4);
  // IN03 is the first downsample: input_blocks.3.0.op.{weight,bias}.
  EXPECT_EQ(c.at("IN03"), 2);
  // OUT11 holds output_blocks.11 plus out.0 (norm) and out.2 (conv): 4 more tensors than OUT10.
  EXPECT_EQ(c.at("OUT11"), c.at("OUT10") + 4);
}

TEST(MergeBlocks, SdxlNineBlocksEachSide) {
  const auto c = block_counts("sdxl-sgm", "sdxl", "model.diffusion_model.");
  EXPECT_EQ(c.count("-"), 0u);
  EXPECT_EQ(c.size(), 19u);
  EXPECT_FALSE(c.count("IN09"));
  EXPECT_FALSE(c.count("OUT09"));
  // IN00: conv_in (2) + time_embed (4) + label_emb.0.{0,2}.{weight,bias} (4).
  EXPECT_EQ(c.at("IN00"), 10);
  // output_blocks.7 and .8 are both plain 320-channel ResBlocks; OUT08 also has out.0, out.2.
  EXPECT_EQ(c.at("OUT08"), c.at("OUT07") + 4);
  EXPECT_EQ(merge_block_of("sdxl", "out.2.weight"), "OUT08");
  EXPECT_EQ(merge_block_of("sd1", "out.2.weight"), "OUT11");
  EXPECT_EQ(merge_block_of("sdxl-refiner", "out.0.bias"), "OUT11");
}

TEST(MergeBlocks, FluxDoubleAndSingleBlocks) {
  const auto c = block_counts("flux1-dev-transformer", "flux", "");
  int doubles = 0, singles = 0;
  for (const auto& [name, n] : c) {
    if (name.starts_with("double_blocks.")) ++doubles;
    if (name.starts_with("single_blocks.")) ++singles;
  }
  EXPECT_EQ(doubles, 19);
  EXPECT_EQ(singles, 38);
  EXPECT_GT(c.at("-"), 0);  // img_in, txt_in, time_in, final_layer: the "other" group
  EXPECT_EQ(c.at("double_blocks.0"), c.at("double_blocks.18"));
  EXPECT_EQ(merge_block_of("flux", "double_blocks.12.img_attn.qkv.weight"), "double_blocks.12");
  EXPECT_EQ(merge_block_of("flux", "single_blocks.37.linear2.bias"), "single_blocks.37");
  EXPECT_EQ(merge_block_of("flux", "double_blocks.x.img_attn.qkv.weight"), "");
  EXPECT_EQ(merge_block_of("flux", "double_blocks.3"), "");  // no '.' after the number
}

TEST(MergeBlocks, Sd3JointBlocks) {
  const auto c = block_counts("sd3-medium", "sd3", "model.diffusion_model.");
  int joints = 0;
  for (const auto& [name, n] : c) joints += name.starts_with("joint_blocks.");
  EXPECT_EQ(joints, 24);
  EXPECT_EQ(merge_block_names("sd3", 24).size(), 24u + 3u);
}

TEST(MergeBlocks, Names) {
  const auto sd1 = merge_block_names("sd1");
  ASSERT_EQ(sd1.size(), 25u + 3u);
  EXPECT_EQ(sd1.front(), "IN00");
  EXPECT_EQ(sd1[12], "M00");
  EXPECT_EQ(sd1[24], "OUT11");
  EXPECT_EQ(sd1.back(), "other");
  EXPECT_EQ(merge_block_names("sdxl").size(), 19u + 3u);
  EXPECT_EQ(merge_block_names("flux").size(), 57u + 3u);
}

std::string ones_except(int n, int at, const std::string& v) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? "," : "") + (i == at ? v : std::string("1"));
  return s;
}

TEST(MergeBlocks, SupermergerStrings) {
  // 26 values: BASE first (the text encoder), then IN00–IN11, M00, OUT00–OUT11.
  auto sd1 = parse_block_weights(ones_except(26, 13, "0.25"), "sd1");
  ASSERT_TRUE(sd1.is_ok()) << sd1.status().to_string();
  EXPECT_EQ(sd1->size(), 26u);
  EXPECT_EQ(sd1->at("M00"), 0.25);
  EXPECT_EQ(sd1->at("text_encoder"), 1.0);
  // 25 values: no BASE, position 0 is IN00.
  auto sd1b = parse_block_weights(ones_except(25, 0, " 0.5 "), "sd1");
  ASSERT_TRUE(sd1b.is_ok());
  EXPECT_EQ(sd1b->at("IN00"), 0.5);
  EXPECT_FALSE(sd1b->count("text_encoder"));
  // SDXL, 26 values: IN09–IN11 (positions 10–12) and OUT09–OUT11 (23–25) are ignored, so the
  // value at position 13 is still M00 and position 22 is OUT08.
  auto xl = parse_block_weights(ones_except(26, 22, "0.75"), "sdxl");
  ASSERT_TRUE(xl.is_ok());
  EXPECT_EQ(xl->size(), 20u);
  EXPECT_FALSE(xl->count("IN09"));
  EXPECT_FALSE(xl->count("OUT11"));
  EXPECT_EQ(xl->at("OUT08"), 0.75);
  // SDXL's own 20 values: BASE, IN00–IN08, M00, OUT00–OUT08.
  auto xl20 = parse_block_weights(ones_except(20, 10, "0"), "sdxl");
  ASSERT_TRUE(xl20.is_ok());
  EXPECT_EQ(xl20->at("M00"), 0.0);
  // Refusals.
  EXPECT_FALSE(parse_block_weights(ones_except(24, 0, "1"), "sd1").is_ok());
  EXPECT_FALSE(parse_block_weights(ones_except(20, 0, "1"), "sd1").is_ok());
  EXPECT_FALSE(parse_block_weights(ones_except(26, 3, "x"), "sd1").is_ok());
  EXPECT_FALSE(parse_block_weights(ones_except(26, 3, ""), "sd1").is_ok());
  EXPECT_FALSE(parse_block_weights(ones_except(26, 3, "nan"), "sd1").is_ok());
  EXPECT_FALSE(parse_block_weights(ones_except(26, 0, "1"), "flux").is_ok());
}

TEST(MergeMethods, NamesAndArity) {
  for (MergeMethod m : all_merge_methods()) {
    auto back = parse_merge_method(merge_method_name(m));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, m);
  }
  EXPECT_EQ(parse_merge_method("ADD_DIFFERENCE"), MergeMethod::kAddDifference);
  EXPECT_FALSE(parse_merge_method("average").has_value());
  EXPECT_EQ(merge_method_arity(MergeMethod::kAddDifference), (std::pair<size_t, size_t>{3, 3}));
  EXPECT_EQ(merge_method_arity(MergeMethod::kSlerp), (std::pair<size_t, size_t>{2, 2}));
}

// --- kernels ---------------------------------------------------------------------------------

/// Runs every statistics pass over `x` (input-major), fed in windows of `window` elements.
merge::TensorStats stats_of(const merge::TensorParams& p, const std::vector<std::vector<float>>& x,
                            size_t window) {
  merge::TensorStats st;
  const uint64_t n = x[0].size();
  for (int pass = 0; pass < merge::stats_passes(p.method); ++pass) {
    merge::StatsPass sp(p, pass, n, st);
    for (uint64_t first = 0; first < n; first += window) {
      std::vector<const float*> ptr;
      for (const auto& v : x) ptr.push_back(v.data() + first);
      sp.add(ptr.data(), first, std::min<uint64_t>(window, n - first));
    }
    sp.finish(st);
  }
  return st;
}

std::vector<std::vector<float>> random_inputs(size_t inputs, size_t n, uint32_t seed, bool coarse) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<std::vector<float>> x(inputs, std::vector<float>(n));
  for (auto& v : x)
    for (float& f : v) {
      f = d(rng);
      // Coarse values make many equal magnitudes: ties at the threshold must all be kept.
      if (coarse) f = std::round(f * 200.0f) / 200.0f;
    }
  return x;
}

TEST(MergeKernels, TiesThresholdIsTheKthLargestMagnitude) {
  for (bool coarse : {false, true}) {
    for (double density : {0.0, 1e-4, 0.2, 0.5, 1.0}) {
      merge::TensorParams p;
      p.method = MergeMethod::kTies;
      p.inputs = 3;
      p.density = density;
      p.weights = {1, 1};
      const size_t n = 100003;
      auto x = random_inputs(3, n, 7, coarse);
      const merge::TensorStats st = stats_of(p, x, 4099);
      for (size_t i = 1; i < 3; ++i) {
        std::vector<uint32_t> mags(n);
        for (size_t j = 0; j < n; ++j)
          mags[j] = std::bit_cast<uint32_t>(std::fabs(x[i][j] - x[0][j]));
        std::sort(mags.begin(), mags.end());
        const auto k = static_cast<size_t>(std::floor(density * static_cast<double>(n)));
        const uint32_t want = k == 0 ? 0xffffffffu : mags[n - k];
        EXPECT_EQ(st.threshold[i - 1], want) << "density " << density << " coarse " << coarse;
      }
    }
  }
}

TEST(MergeKernels, SlerpStatisticsDoNotDependOnChunking) {
  merge::TensorParams p;
  p.method = MergeMethod::kSlerp;
  p.inputs = 2;
  p.slerp_t = 0.3;
  auto x = random_inputs(2, 300001, 11, false);
  const merge::TensorStats whole = stats_of(p, x, x[0].size());
  const merge::TensorStats pieces = stats_of(p, x, 777);
  EXPECT_FALSE(whole.lerp);  // independent random vectors are far from parallel
  EXPECT_EQ(std::bit_cast<uint32_t>(whole.s0), std::bit_cast<uint32_t>(pieces.s0));
  EXPECT_EQ(std::bit_cast<uint32_t>(whole.s1), std::bit_cast<uint32_t>(pieces.s1));
  // Orthogonal-ish vectors: θ ≈ π/2, so s0 ≈ sin(0.7·θ) and s1 ≈ sin(0.3·θ).
  EXPECT_NEAR(whole.s0, std::sin(0.7 * M_PI / 2), 0.02);
  EXPECT_NEAR(whole.s1, std::sin(0.3 * M_PI / 2), 0.02);
  // Parallel tensors fall back to the linear weights.
  x[1] = x[0];
  const merge::TensorStats par = stats_of(p, x, 1000);
  EXPECT_TRUE(par.lerp);
  EXPECT_EQ(par.s0, 0.7f);
  EXPECT_EQ(par.s1, 0.3f);
}

TEST(MergeKernels, DareKeepsOneMinusPAndAnyChunkAlone) {
  merge::TensorParams p;
  p.method = MergeMethod::kDare;
  p.inputs = 2;
  p.alpha = 1;
  p.weights = {1};
  const double drop = 0.25;
  p.dare_rescale = static_cast<float>(1.0 / (1.0 - drop));
  p.dare_threshold = static_cast<uint32_t>(std::llround(drop * 16777216.0));
  p.dare_key = 1234 ^ merge::fnv1a64("model.diffusion_model.out.2.weight");
  const size_t n = 1 << 20;
  size_t kept = 0;
  for (size_t j = 0; j < n; ++j) kept += merge::dare_keep(p, 1, j);
  const double sigma = std::sqrt(n * drop * (1 - drop));
  EXPECT_NEAR(static_cast<double>(kept), n * (1 - drop), 5 * sigma);
  // Another input or another seed gives another stream.
  size_t same_input2 = 0;
  for (size_t j = 0; j < 4096; ++j)
    same_input2 += merge::dare_keep(p, 1, j) == merge::dare_keep(p, 2, j);
  EXPECT_LT(same_input2, 4096u);
  // A chunk computed alone equals the same elements of the whole.
  auto x = random_inputs(2, 10000, 3, false);
  std::vector<float> whole(10000), part(1000);
  const float* ptr[2] = {x[0].data(), x[1].data()};
  merge::merge_chunk(p, {}, ptr, 0, 10000, whole.data());
  const float* ptr2[2] = {x[0].data() + 4321, x[1].data() + 4321};
  merge::merge_chunk(p, {}, ptr2, 4321, 1000, part.data());
  for (size_t j = 0; j < 1000; ++j) ASSERT_EQ(part[j], whole[4321 + j]);
  // Kept elements are A + (B − A)·4/3, dropped ones are A.
  size_t dropped = 0;
  for (size_t j = 0; j < 10000; ++j) {
    if (merge::dare_keep(p, 1, j)) {
      const float d = (x[1][j] - x[0][j]) * p.dare_rescale;
      ASSERT_EQ(whole[j], x[0][j] + (d * 1.0f) * 1.0f);
    } else {
      ASSERT_EQ(whole[j], x[0][j]);
      ++dropped;
    }
  }
  EXPECT_GT(dropped, 2000u);
}

TEST(MergeKernels, TiesElectsTheSignOfTheWeightedSum) {
  // One element, three task vectors: +0.3, −0.1, −0.1 (weights 1): S = 0.1 ≥ 0 → γ = +1, so
  // only the first agrees and δ = 0.3. With weights 1, 4, 4: S = −0.5 → γ = −1, δ = −0.1.
  merge::TensorParams p;
  p.method = MergeMethod::kTies;
  p.inputs = 4;
  p.alpha = 1;
  p.weights = {1, 1, 1};
  merge::TensorStats st;
  st.threshold = {0, 0, 0};  // keep everything
  const float a = 1.0f, b = 1.3f, c = 0.9f, d = 0.9f;
  const float* x[4] = {&a, &b, &c, &d};
  float r = 0;
  merge::merge_chunk(p, st, x, 0, 1, &r);
  EXPECT_EQ(r, a + (b - a));
  p.weights = {1, 4, 4};
  merge::merge_chunk(p, st, x, 0, 1, &r);
  const float num = (c - a) * 4.0f + (d - a) * 4.0f;
  EXPECT_EQ(r, a + num / 8.0f);
}

}  // namespace
}  // namespace ckptkit
