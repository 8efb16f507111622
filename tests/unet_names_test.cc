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
}

TEST(UNetNames, Sd15IsABijectionOntoTheDiffusersUNet) {
  check_bijection("sd15-ldm", "sd15-diffusers-unet");
}

TEST(UNetNames, SdxlIsABijectionOntoTheDiffusersUNet) {
  check_bijection("sdxl-sgm", "sdxl-diffusers-unet");
}

TEST(UNetNames, NamesOutsideTheUNetHaveNoCounterpart) {
  const UNetNames map({"input_blocks.1.0.in_layers.0.weight", "input_blocks.11.0.in_layers.0.weight"});
  EXPECT_FALSE(map.to_diffusers("input_blocks.1.0.bogus.weight").has_value());
  EXPECT_FALSE(map.to_diffusers("middle_block.3.weight").has_value());
  EXPECT_FALSE(map.to_diffusers("input_blocks.x.0.weight").has_value());
  EXPECT_EQ(map.to_diffusers("input_blocks.4.0.skip_connection.weight").value_or(""),
            "down_blocks.1.resnets.0.conv_shortcut.weight");
}

}  // namespace
}  // namespace ckptkit::detail
