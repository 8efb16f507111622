// VaeNames against the published layouts: every LDM VAE tensor of the SD1.5 single file maps
// to a tensor of the published diffusers VAE with the same shape (or, for the attention's 1×1
// convolutions, that shape without its two trailing 1s), together they cover it, and the
// reverse gives every name back, from both the current and the older diffusers spelling.
#include "model/vae_names.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "model/layouts.h"

namespace ckptkit::detail {
namespace {

std::map<std::string, Shape> table(std::string_view layout, std::string_view prefix) {
  auto rows = load_layout(layout);
  EXPECT_TRUE(rows.is_ok());
  std::map<std::string, Shape> out;
  if (!rows.is_ok()) return out;
  for (const TensorLayout& t : *rows)
    if (t.name.starts_with(prefix)) out[t.name.substr(prefix.size())] = t.shape;
  return out;
}

std::vector<std::string> keys(const std::map<std::string, Shape>& m) {
  std::vector<std::string> k;
  for (const auto& [n, s] : m) k.push_back(n);
  return k;
}

void check_bijection(std::string_view diffusers_layout) {
  const auto ldm = table("sd15-ldm", "first_stage_model.");
  const auto diff = table(diffusers_layout, "");
  ASSERT_EQ(ldm.size(), diff.size());
  const VaeNames fwd(keys(ldm)), back(keys(diff));
  EXPECT_EQ(fwd.decoder_levels(), 4);
  EXPECT_EQ(back.decoder_levels(), 4);
  std::map<std::string, std::string> seen;
  unsigned linear = 0;
  for (const auto& [n, shape] : ldm) {
    auto d = fwd.to_diffusers(n);
    ASSERT_TRUE(d.has_value()) << n;
    std::string want_name = d->name;
    if (diffusers_layout.ends_with("legacy")) {
      // The forward direction writes today's names; the table has the old ones.
      auto l = back.to_ldm(want_name);
      ASSERT_TRUE(l.has_value()) << want_name;
      EXPECT_EQ(l->name, n);
      continue;
    }
    auto it = diff.find(d->name);
    ASSERT_NE(it, diff.end()) << n << " -> " << d->name;
    Shape want = shape;
    if (d->conv_as_linear) {
      ++linear;
      ASSERT_EQ(shape.size(), 4u) << n;
      EXPECT_EQ(shape[2], 1u);
      EXPECT_EQ(shape[3], 1u);
      want.resize(2);
    }
    EXPECT_EQ(it->second, want) << n << " -> " << d->name;
    EXPECT_TRUE(seen.emplace(d->name, n).second) << d->name << " twice";
    auto l = back.to_ldm(d->name);
    ASSERT_TRUE(l.has_value()) << d->name;
    EXPECT_EQ(l->name, n);
    EXPECT_EQ(l->conv_as_linear, d->conv_as_linear);
  }
  if (!diffusers_layout.ends_with("legacy")) {
    EXPECT_EQ(seen.size(), diff.size());
    EXPECT_EQ(linear, 8u);  // q, k, v, proj_out weights of the encoder's and decoder's mid block
  } else {
    for (const auto& [d, shape] : diff) EXPECT_TRUE(back.to_ldm(d).has_value()) << d;
  }
}

TEST(VaeNames, Sd15IsABijectionOntoTheDiffusersVae) { check_bijection("sd15-diffusers-vae"); }

TEST(VaeNames, OlderDiffusersAttentionNamesAreRead) {
  check_bijection("sd15-diffusers-vae-legacy");
}

TEST(VaeNames, DecoderLevelsAreReversed) {
  const VaeNames v({"decoder.up.0.block.0.conv1.weight", "decoder.up.3.block.0.conv1.weight"});
  EXPECT_EQ(v.to_diffusers("decoder.up.0.block.2.conv1.weight")->name,
            "decoder.up_blocks.3.resnets.2.conv1.weight");
  EXPECT_EQ(v.to_diffusers("decoder.up.3.upsample.conv.bias")->name,
            "decoder.up_blocks.0.upsamplers.0.conv.bias");
  EXPECT_EQ(v.to_ldm("decoder.up_blocks.1.resnets.0.conv_shortcut.weight")->name,
            "decoder.up.2.block.0.nin_shortcut.weight");
  // The encoder's levels are not reversed.
  EXPECT_EQ(v.to_diffusers("encoder.down.0.block.1.norm1.weight")->name,
            "encoder.down_blocks.0.resnets.1.norm1.weight");
}

TEST(VaeNames, OnlyWholePartsMatch) {
  const VaeNames v({"decoder.up.3.block.0.conv1.weight"});
  EXPECT_FALSE(v.to_diffusers("decoder.up.4.block.0.conv1.weight").has_value());  // no level 4
  EXPECT_FALSE(v.to_diffusers("encoder.down.01.block.0.conv1.weight").has_value());
  EXPECT_FALSE(v.to_diffusers("encoder.mid.attn_1.qq.weight").has_value());
  EXPECT_FALSE(v.to_diffusers("encoder.mid.attn_1.q.weight.extra").has_value());
  EXPECT_FALSE(v.to_diffusers("xencoder.conv_in.weight").has_value());
  EXPECT_FALSE(v.to_ldm("encoder.mid_block.attentions.0.to_to_k.weight").has_value());
  EXPECT_FALSE(v.to_ldm("encoder.mid_block.attentions.1.to_k.weight").has_value());
  EXPECT_TRUE(v.to_diffusers("encoder.mid.attn_1.q.weight")->conv_as_linear);
  EXPECT_FALSE(v.to_diffusers("encoder.mid.attn_1.q.bias")->conv_as_linear);
  EXPECT_FALSE(v.to_diffusers("encoder.mid.attn_1.norm.weight")->conv_as_linear);
}

}  // namespace
}  // namespace ckptkit::detail
