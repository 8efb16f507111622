// The FLUX and SD3 transformer tables against the published layouts: to diffusers and back
// is the identity on every byte — each single-file tensor, rebuilt from the diffusers tensors'
// row ranges, which are themselves row ranges of the single-file tensors, is its own rows
// 0…n in order — and the names diffusers gets are as many as the rules say.
#include "model/dit_names.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "model/layouts.h"

namespace ckptkit::detail {
namespace {

ShapeMap table(std::string_view layout, std::string_view prefix) {
  auto rows = load_layout(layout);
  EXPECT_TRUE(rows.is_ok());
  ShapeMap out;
  if (!rows.is_ok()) return out;
  for (const TensorLayout& t : *rows)
    if (t.name.starts_with(prefix)) out[t.name.substr(prefix.size())] = t.shape;
  return out;
}

/// Maps `layout` to diffusers and back; returns the number of diffusers tensors.
size_t check_round_trip(std::string_view family, std::string_view layout, std::string_view prefix) {
  const ShapeMap single = table(layout, prefix);
  auto fwd = dit_to_diffusers(family, single, "test");
  EXPECT_TRUE(fwd.is_ok()) << fwd.status().message();
  if (!fwd.is_ok()) return 0;
  std::map<std::string, std::vector<RowRange>> by_name;
  ShapeMap diffusers;
  for (const MappedTensor& m : *fwd) {
    Shape s = single.find(m.from.front().source)->second;
    uint64_t rows = 0;
    for (const RowRange& r : m.from) rows += r.rows;
    if (!s.empty()) s[0] = rows;
    EXPECT_TRUE(diffusers.emplace(m.name, s).second) << "two tensors named " << m.name;
    by_name[m.name] = m.from;
  }
  auto back = dit_from_diffusers(family, diffusers, "test");
  EXPECT_TRUE(back.is_ok()) << back.status().message();
  if (!back.is_ok()) return 0;
  EXPECT_EQ(back->size(), single.size());
  for (const MappedTensor& b : *back) {
    auto it = single.find(b.name);
    EXPECT_NE(it, single.end()) << b.name;
    if (it == single.end()) continue;
    // Follow every range through the forward map: rows 0…n of b.name, in order.
    uint64_t next = 0;
    for (const RowRange& r : b.from) {
      uint64_t at = 0;  // row of r.source
      for (const RowRange& f : by_name[r.source]) {
        const uint64_t lo = std::max(at, r.begin), hi = std::min(at + f.rows, r.begin + r.rows);
        if (lo < hi) {
          EXPECT_EQ(f.source, b.name);
          EXPECT_EQ(f.begin + (lo - at), next) << b.name << " from " << r.source;
          next += hi - lo;
        }
        at += f.rows;
      }
    }
    EXPECT_EQ(next, it->second.empty() ? 0 : it->second[0]) << b.name;
  }
  return fwd->size();
}

TEST(DitNames, FluxDevRoundTripsThroughDiffusersNames) {
  // 780 tensors; each double block's two q/k/v (weight, bias) become three, each single
  // block's linear1 four: 780 + 19·4·2 + 38·2·3.
  EXPECT_EQ(check_round_trip("flux", "flux1-dev-transformer", ""), 780u + 152u + 228u);
}

TEST(DitNames, FluxSchnellAndTheComfyFileRoundTrip) {
  EXPECT_EQ(check_round_trip("flux", "flux1-schnell-transformer", ""), 776u + 152u + 228u);
  EXPECT_EQ(check_round_trip("flux", "flux1-dev-comfy-fp8-aio", "model.diffusion_model."),
            780u + 152u + 228u);
}

TEST(DitNames, Sd3RoundTripsAndSwapsOnlyTheLastContextModulation) {
  const ShapeMap mmdit = table("sd3-medium", "model.diffusion_model.");
  auto fwd = dit_to_diffusers("sd3", mmdit, "test");
  ASSERT_TRUE(fwd.is_ok()) << fwd.status().message();
  for (const MappedTensor& m : *fwd) {
    if (m.name.find("norm1_context.linear.weight") == std::string::npos) continue;
    const bool last = m.name.starts_with("transformer_blocks.23.");
    ASSERT_EQ(m.from.size(), last ? 2u : 1u) << m.name;
    if (last) {
      EXPECT_EQ(m.from[0].begin, m.from[1].rows);  // second half first
    }
  }
  EXPECT_GT(check_round_trip("sd3", "sd3-medium-notext", "model.diffusion_model."), 0u);
}

TEST(DitNames, NamesWithoutARuleAndMissingPartsAreErrors) {
  ShapeMap flux = table("flux1-dev-transformer", "");
  flux["double_blocks.0.img_attn.qkv.lora_up.weight"] = {9216, 16};
  auto r = dit_to_diffusers("flux", flux, "f.safetensors");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().tensor(), "double_blocks.0.img_attn.qkv.lora_up.weight");

  flux.erase("double_blocks.0.img_attn.qkv.lora_up.weight");
  auto fwd = dit_to_diffusers("flux", flux, "f");
  ASSERT_TRUE(fwd.is_ok());
  ShapeMap diffusers;
  for (const MappedTensor& m : *fwd) {
    Shape s = flux.find(m.from.front().source)->second;
    s[0] = 0;
    for (const RowRange& rr : m.from) s[0] += rr.rows;
    diffusers[m.name] = s;
  }
  diffusers.erase("transformer_blocks.3.attn.to_k.weight");
  auto back = dit_from_diffusers("flux", diffusers, "d");
  ASSERT_FALSE(back.is_ok());
  EXPECT_NE(back.status().message().find("attn.to_k"), std::string::npos)
      << back.status().message();

  ShapeMap odd = table("flux1-dev-transformer", "");
  odd["double_blocks.0.img_attn.qkv.bias"] = {9217};
  auto bad = dit_to_diffusers("flux", odd, "f");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().tensor(), "double_blocks.0.img_attn.qkv.bias");
}

}  // namespace
}  // namespace ckptkit::detail
