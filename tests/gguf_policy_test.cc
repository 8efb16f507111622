// GGUF type policies against published facts: the type counts of the FLUX.1-dev files that
// ComfyUI-GGUF's tools make (docs/gguf.md), SD1's reshape rule, the _M mixes and
// stable-diffusion.cpp's skip rules, on the published layouts.
#include "model/gguf_policy.h"

#include <gtest/gtest.h>

#include <map>

#include "model/layouts.h"

namespace ckptkit::detail {
namespace {

std::map<DType, int> count_types(GgufTarget target, std::string_view scheme,
                                 std::string_view layout, std::string_view arch,
                                 std::string_view strip = "") {
  auto s = find_quant_scheme(scheme);
  EXPECT_TRUE(s.is_ok());
  GgufPolicy policy(target, **s, arch);
  auto rows = load_layout(layout);
  EXPECT_TRUE(rows.is_ok());
  std::map<DType, int> counts;
  for (const TensorLayout& t : *rows) {
    std::string_view name = t.name;
    if (!strip.empty()) {
      if (!name.starts_with(strip)) continue;
      name.remove_prefix(strip.size());
    }
    ++counts[policy.decide(name, t.shape, t.dtype).stored];
  }
  return counts;
}

TEST(GgufPolicy, FluxDevComfyUiQ8) {
  // 304 quantized block weights, 10 embedding/final weights kept in BF16, 466 biases and norm
  // scales in F32 — what convert.py + llama-quantize give for FLUX.1-dev.
  auto c = count_types(GgufTarget::kComfyUi, "q8_0", "flux1-dev-transformer", "flux");
  EXPECT_EQ(c[DType::Q8_0], 304);
  EXPECT_EQ(c[DType::BF16], 10);
  EXPECT_EQ(c[DType::F32], 466);
  EXPECT_EQ(c.size(), 3u);
}

TEST(GgufPolicy, FluxDevComfyUiQ4KMixes) {
  // Q4_K_S is pure Q4_K on FLUX (no V-projection or FFN-down names); Q4_K_M raises the 38
  // fused qkv of the double blocks to Q5_K.
  auto s = count_types(GgufTarget::kComfyUi, "q4_k_s", "flux1-dev-transformer", "flux");
  EXPECT_EQ(s[DType::Q4_K], 304);
  auto m = count_types(GgufTarget::kComfyUi, "q4_k_m", "flux1-dev-transformer", "flux");
  EXPECT_EQ(m[DType::Q5_K], 38);
  EXPECT_EQ(m[DType::Q4_K], 304 - 38);
}

TEST(GgufPolicy, Sd1ComfyUiReshapesConvolutions) {
  auto q = find_quant_scheme("q4_k_s");
  ASSERT_TRUE(q.is_ok());
  GgufPolicy p(GgufTarget::kComfyUi, **q, "sd1");
  // A 3x3 convolution [320, 320, 3, 3]: stored as (3600, 256), quantized.
  GgufTensorPlan conv =
      p.decide("input_blocks.1.0.in_layers.2.weight", {320, 320, 3, 3}, DType::F32);
  EXPECT_TRUE(conv.reshaped);
  EXPECT_EQ(conv.stored_shape, (Shape{3600, 256}));
  EXPECT_EQ(conv.stage, DType::F16);
  EXPECT_EQ(conv.stored, DType::Q4_K);
  // conv_in stays at the first step's precision; a bias stays F32.
  EXPECT_EQ(p.decide("input_blocks.0.0.weight", {320, 4, 3, 3}, DType::F32).stored, DType::F16);
  EXPECT_EQ(p.decide("out.2.bias", {4}, DType::F32).stored, DType::F32);
  // The first four V projections of Q4_K_S get Q5_K, later ones Q4_K.
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(
        p.decide("input_blocks.1.1.transformer_blocks.0.attn1.to_v.weight", {320, 320}, DType::F32)
            .stored,
        DType::Q5_K);
  EXPECT_EQ(
      p.decide("input_blocks.1.1.transformer_blocks.0.attn1.to_v.weight", {320, 320}, DType::F32)
          .stored,
      DType::Q4_K);
}

TEST(GgufPolicy, SdcppKeepsWhatItsConverterKeeps) {
  auto q = find_quant_scheme("q4_0");
  ASSERT_TRUE(q.is_ok());
  GgufPolicy p(GgufTarget::kSdcpp, **q, "sd1");
  const std::string u = "model.diffusion_model.";
  // 3x3 convolutions keep their type (ne[0] = 3 is not a multiple of 32), so do biases and the
  // time embedding; a 1-D norm weight of 320 is converted.
  EXPECT_EQ(
      p.decide(u + "input_blocks.1.0.in_layers.2.weight", {320, 320, 3, 3}, DType::F16).stored,
      DType::F16);
  EXPECT_EQ(p.decide(u + "input_blocks.1.0.in_layers.2.bias", {320}, DType::F16).stored,
            DType::F16);
  EXPECT_EQ(p.decide(u + "time_embed.0.weight", {1280, 320}, DType::F16).stored, DType::F16);
  EXPECT_EQ(p.decide(u + "input_blocks.1.0.in_layers.0.weight", {320}, DType::F16).stored,
            DType::Q4_0);
  GgufTensorPlan lin = p.decide(u + "input_blocks.1.1.proj_in.weight", {320, 320}, DType::F16);
  EXPECT_EQ(lin.stored, DType::Q4_0);
  EXPECT_FALSE(lin.reshaped);
}

TEST(GgufPolicy, SchemeNames) {
  EXPECT_TRUE(find_quant_scheme("Q4_K_M").is_ok());
  auto bad = find_quant_scheme("q4_k_x");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("q8_0"), std::string::npos);
  EXPECT_EQ(comfy_architecture("sd2"), "sd1");
  EXPECT_EQ(comfy_architecture("sdxl-refiner"), "sdxl");
}

}  // namespace
}  // namespace ckptkit::detail
