// UNetNames against the published layouts: every LDM/SGM UNet tensor of the single files maps
// to a diffusers name of the published diffusers UNet with the same shape, and together they
// cover it (a bijection).
#include "model/unet_names.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "model/layouts.h"

namespace ckptkit::detail {
namespace {

void check_bijection(std::string_view ldm_layout, std::string_view diffusers_layout) {
  auto ldm = load_layout(ldm_layout);
  auto diff = load_layout(diffusers_layout);
  ASSERT_TRUE(ldm.is_ok() && diff.is_ok());
  const std::string prefix = "model.diffusion_model.";
  std::vector<std::string> names;
  std::map<std::string, Shape> ldm_shapes;
  for (const TensorLayout& t : *ldm)
    if (t.name.starts_with(prefix)) {
      names.push_back(t.name.substr(prefix.size()));
      ldm_shapes[names.back()] = t.shape;
    }
  std::map<std::string, Shape> want;
  for (const TensorLayout& t : *diff) want[t.name] = t.shape;
  ASSERT_EQ(names.size(), want.size());
  const UNetNames map(names);
  std::map<std::string, std::string> seen;
  for (const std::string& n : names) {
    auto d = map.to_diffusers(n);
    ASSERT_TRUE(d.has_value()) << n;
    auto it = want.find(*d);
    ASSERT_NE(it, want.end()) << n << " -> " << *d;
    EXPECT_EQ(it->second, ldm_shapes[n]) << n << " -> " << *d;
    EXPECT_TRUE(seen.emplace(*d, n).second) << *d << " twice: " << seen[*d] << ", " << n;
  }
  EXPECT_EQ(seen.size(), want.size());
  // The reverse, learned from the diffusers names alone, gives every LDM name back.
  std::vector<std::string> diff_names;
  for (const auto& [d, n] : seen) diff_names.push_back(d);
  const UNetNames back = UNetNames::from_diffusers(diff_names);
  for (const auto& [d, n] : seen) EXPECT_EQ(back.to_ldm(d).value_or("(none)"), n) << d;
}

TEST(UNetNames, Sd15IsABijectionOntoTheDiffusersUNet) {
  check_bijection("sd15-ldm", "sd15-diffusers-unet");
}

TEST(UNetNames, SdxlIsABijectionOntoTheDiffusersUNet) {
  check_bijection("sdxl-sgm", "sdxl-diffusers-unet");
}

TEST(UNetNames, SdxlRefinerGoesThereAndBack) {
  // No published diffusers table of the refiner's UNet: the names must at least come back.
  auto ldm = load_layout("sdxl-refiner-sgm");
  ASSERT_TRUE(ldm.is_ok());
  const std::string prefix = "model.diffusion_model.";
  std::vector<std::string> names;
  for (const TensorLayout& t : *ldm)
    if (t.name.starts_with(prefix)) names.push_back(t.name.substr(prefix.size()));
  const UNetNames map(names);
  std::vector<std::string> diff;
  for (const std::string& n : names) {
    auto d = map.to_diffusers(n);
    ASSERT_TRUE(d.has_value()) << n;
    diff.push_back(*d);
  }
  const UNetNames back = UNetNames::from_diffusers(diff);
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_EQ(back.to_ldm(diff[i]).value_or("(none)"), names[i]) << diff[i];
}

TEST(UNetNames, NamesOutsideTheUNetHaveNoCounterpart) {
  const UNetNames map(
      {"input_blocks.1.0.in_layers.0.weight", "input_blocks.11.0.in_layers.0.weight"});
  EXPECT_FALSE(map.to_diffusers("input_blocks.1.0.bogus.weight").has_value());
  EXPECT_FALSE(map.to_diffusers("middle_block.3.weight").has_value());
  EXPECT_FALSE(map.to_diffusers("input_blocks.x.0.weight").has_value());
  EXPECT_EQ(map.to_diffusers("input_blocks.4.0.skip_connection.weight").value_or(""),
            "down_blocks.1.resnets.0.conv_shortcut.weight");
}

TEST(UNetNames, DiffusersNamesOutsideTheUNetHaveNoCounterpart) {
  const UNetNames map = UNetNames::from_diffusers(
      {"down_blocks.0.resnets.0.conv1.weight", "down_blocks.3.resnets.0.conv1.weight",
       "up_blocks.1.attentions.0.proj_in.weight", "up_blocks.1.attentions.2.proj_in.weight"});
  EXPECT_FALSE(map.to_ldm("down_blocks.0.resnets.2.conv1.weight").has_value());      // 2 per level
  EXPECT_FALSE(map.to_ldm("down_blocks.3.downsamplers.0.conv.weight").has_value());  // last level
  EXPECT_FALSE(map.to_ldm("down_blocks.4.resnets.0.conv1.weight").has_value());
  EXPECT_FALSE(map.to_ldm("up_blocks.0.resnets.3.conv1.weight").has_value());
  EXPECT_FALSE(map.to_ldm("mid_block.resnets.2.conv1.weight").has_value());
  EXPECT_FALSE(map.to_ldm("down_blocks.0.resnets.0.bogus.weight").has_value());
  // Whole parts only: a longer number is another block, not a prefix match.
  EXPECT_FALSE(map.to_ldm("down_blocks.01.resnets.0.conv1.weight").has_value());
  EXPECT_FALSE(map.to_ldm("down_blocks.-1.resnets.0.conv1.weight").has_value());
  EXPECT_EQ(map.to_ldm("up_blocks.1.upsamplers.0.conv.weight").value_or(""),
            "output_blocks.5.2.conv.weight");  // after the attention
  EXPECT_EQ(map.to_ldm("up_blocks.0.upsamplers.0.conv.weight").value_or(""),
            "output_blocks.2.1.conv.weight");  // no attention at level 0
}

}  // namespace
}  // namespace ckptkit::detail
