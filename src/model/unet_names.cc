// LDM/SGM UNet names -> diffusers names (model/unet_names.h).
#include "model/unet_names.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <utility>

namespace ckptkit::detail {
namespace {

/// "12.rest" -> (12, "rest"); nullopt when `s` does not start with a number and a dot.
std::optional<std::pair<int, std::string_view>> number_dot(std::string_view s) {
  int n = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || p == s.data() || p == s.data() + s.size() || *p != '.')
    return std::nullopt;
  if (s[0] == '0' && p - s.data() > 1) return std::nullopt;  // "01" is not block 1
  return std::make_pair(n, s.substr(static_cast<size_t>(p - s.data()) + 1));
}

/// A ResNet block's inner names.
std::optional<std::string> resnet_inner(std::string_view rest) {
  static constexpr std::pair<std::string_view, std::string_view> kMap[] = {
      {"in_layers.0.", "norm1."},          {"in_layers.2.", "conv1."},
      {"emb_layers.1.", "time_emb_proj."}, {"out_layers.0.", "norm2."},
      {"out_layers.3.", "conv2."},         {"skip_connection.", "conv_shortcut."},
  };
  for (const auto& [ldm, diff] : kMap)
    if (rest.starts_with(ldm)) return std::string(diff) + std::string(rest.substr(ldm.size()));
  return std::nullopt;
}

/// The inverse of resnet_inner.
std::optional<std::string> resnet_inner_ldm(std::string_view rest) {
  static constexpr std::pair<std::string_view, std::string_view> kMap[] = {
      {"norm1.", "in_layers.0."},          {"conv1.", "in_layers.2."},
      {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
      {"conv2.", "out_layers.3."},         {"conv_shortcut.", "skip_connection."},
  };
  for (const auto& [diff, ldm] : kMap)
    if (rest.starts_with(diff)) return std::string(ldm) + std::string(rest.substr(diff.size()));
  return std::nullopt;
}

/// "down_blocks.2.resnets.1.rest" with head "down_blocks.": (2, "resnets", 1, "rest").
struct BlockPath {
  int block;
  std::string_view kind;
  int index;
  std::string_view rest;
};
std::optional<BlockPath> block_path(std::string_view n, std::string_view head) {
  if (!n.starts_with(head)) return std::nullopt;
  auto b = number_dot(n.substr(head.size()));
  if (!b) return std::nullopt;
  const size_t dot = b->second.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  auto i = number_dot(b->second.substr(dot + 1));
  if (!i) return std::nullopt;
  return BlockPath{b->first, b->second.substr(0, dot), i->first, i->second};
}

}  // namespace

UNetNames UNetNames::from_diffusers(const std::vector<std::string>& names) {
  UNetNames u;
  int max_down = -1;
  for (const std::string& n : names) {
    if (auto p = block_path(n, "down_blocks.")) max_down = std::max(max_down, p->block);
    if (auto p = block_path(n, "up_blocks."); p && p->kind == "attentions") {
      const size_t out = static_cast<size_t>(3 * p->block + p->index);
      if (u.out_has_attn_.size() <= out) u.out_has_attn_.resize(out + 1, false);
      u.out_has_attn_[out] = true;
    }
  }
  u.levels_ = max_down + 1;
  return u;
}

std::optional<std::string> UNetNames::to_ldm(std::string_view n) const {
  static constexpr std::pair<std::string_view, std::string_view> kTop[] = {
      {"time_embedding.linear_1.", "time_embed.0."},
      {"time_embedding.linear_2.", "time_embed.2."},
      {"add_embedding.linear_1.", "label_emb.0.0."},
      {"add_embedding.linear_2.", "label_emb.0.2."},
      {"conv_in.", "input_blocks.0.0."},
      {"conv_norm_out.", "out.0."},
      {"conv_out.", "out.2."},
  };
  for (const auto& [diff, ldm] : kTop)
    if (n.starts_with(diff)) return std::string(ldm) + std::string(n.substr(diff.size()));

  if (auto p = block_path(n, "down_blocks.")) {
    if (p->block < 0 || p->block >= levels_) return std::nullopt;
    if (p->kind == "downsamplers") {
      // The last level has no downsampler; its place would be the next level's first block.
      if (p->index != 0 || p->block + 1 >= levels_ || !p->rest.starts_with("conv."))
        return std::nullopt;
      return fmt::format("input_blocks.{}.0.op.{}", 3 * (p->block + 1), p->rest.substr(5));
    }
    if (p->index < 0 || p->index > 1) return std::nullopt;
    const int in = 3 * p->block + p->index + 1;
    if (p->kind == "resnets") {
      auto inner = resnet_inner_ldm(p->rest);
      if (!inner) return std::nullopt;
      return fmt::format("input_blocks.{}.0.{}", in, *inner);
    }
    if (p->kind == "attentions") return fmt::format("input_blocks.{}.1.{}", in, p->rest);
    return std::nullopt;
  }
  if (n.starts_with("mid_block.")) {
    const std::string_view m = n.substr(10);
    if (m.starts_with("attentions.0.")) return fmt::format("middle_block.1.{}", m.substr(13));
    if (m.starts_with("resnets.")) {
      auto r = number_dot(m.substr(8));
      if (!r || r->first < 0 || r->first > 1) return std::nullopt;
      auto inner = resnet_inner_ldm(r->second);
      if (!inner) return std::nullopt;
      return fmt::format("middle_block.{}.{}", 2 * r->first, *inner);
    }
    return std::nullopt;
  }
  if (auto p = block_path(n, "up_blocks.")) {
    if (p->block < 0 || p->block >= levels_) return std::nullopt;
    if (p->kind == "upsamplers") {
      // The last level has no upsampler.
      if (p->index != 0 || p->block + 1 >= levels_ || !p->rest.starts_with("conv."))
        return std::nullopt;
      const size_t out = static_cast<size_t>(3 * p->block + 2);
      const bool attn = out < out_has_attn_.size() && out_has_attn_[out];
      return fmt::format("output_blocks.{}.{}.conv.{}", out, attn ? 2 : 1, p->rest.substr(5));
    }
    if (p->index < 0 || p->index > 2) return std::nullopt;
    const int out = 3 * p->block + p->index;
    if (p->kind == "resnets") {
      auto inner = resnet_inner_ldm(p->rest);
      if (!inner) return std::nullopt;
      return fmt::format("output_blocks.{}.0.{}", out, *inner);
    }
    if (p->kind == "attentions") return fmt::format("output_blocks.{}.1.{}", out, p->rest);
    return std::nullopt;
  }
  return std::nullopt;
}

UNetNames::UNetNames(const std::vector<std::string>& ldm_names) {
  int max_in = 0;
  for (const std::string& n : ldm_names) {
    std::string_view s = n;
    if (s.starts_with("input_blocks.")) {
      if (auto b = number_dot(s.substr(13))) max_in = std::max(max_in, b->first);
    } else if (s.starts_with("output_blocks.")) {
      if (auto b = number_dot(s.substr(14))) {
        if (out_has_attn_.size() <= static_cast<size_t>(b->first))
          out_has_attn_.resize(static_cast<size_t>(b->first) + 1, false);
        // Layer 1 is the attention, or the upsampler (1.conv.) of a block without one.
        if (b->second.starts_with("1.") && !b->second.starts_with("1.conv."))
          out_has_attn_[static_cast<size_t>(b->first)] = true;
      }
    }
  }
  levels_ = max_in / 3 + 1;  // input_blocks 0 … 3·levels − 1 (the last level has no downsampler)
}

std::optional<std::string> UNetNames::to_diffusers(std::string_view n) const {
  static constexpr std::pair<std::string_view, std::string_view> kTop[] = {
      {"time_embed.0.", "time_embedding.linear_1."},
      {"time_embed.2.", "time_embedding.linear_2."},
      {"label_emb.0.0.", "add_embedding.linear_1."},
      {"label_emb.0.2.", "add_embedding.linear_2."},
      {"input_blocks.0.0.", "conv_in."},
      {"out.0.", "conv_norm_out."},
      {"out.2.", "conv_out."},
  };
  for (const auto& [ldm, diff] : kTop)
    if (n.starts_with(ldm)) return std::string(diff) + std::string(n.substr(ldm.size()));

  if (n.starts_with("input_blocks.")) {
    auto b = number_dot(n.substr(13));
    if (!b || b->first == 0) return std::nullopt;
    auto layer = number_dot(b->second);
    if (!layer) return std::nullopt;
    const int level = (b->first - 1) / 3, j = (b->first - 1) % 3;
    if (j == 2) {  // the downsampler: input_blocks.3(i+1).0.op
      if (layer->first != 0 || !layer->second.starts_with("op.")) return std::nullopt;
      return fmt::format("down_blocks.{}.downsamplers.0.conv.{}", level, layer->second.substr(3));
    }
    if (layer->first == 0) {
      auto inner = resnet_inner(layer->second);
      if (!inner) return std::nullopt;
      return fmt::format("down_blocks.{}.resnets.{}.{}", level, j, *inner);
    }
    if (layer->first == 1)
      return fmt::format("down_blocks.{}.attentions.{}.{}", level, j, layer->second);
    return std::nullopt;
  }
  if (n.starts_with("middle_block.")) {
    auto layer = number_dot(n.substr(13));
    if (!layer) return std::nullopt;
    if (layer->first == 1) return fmt::format("mid_block.attentions.0.{}", layer->second);
    if (layer->first == 0 || layer->first == 2) {
      auto inner = resnet_inner(layer->second);
      if (!inner) return std::nullopt;
      return fmt::format("mid_block.resnets.{}.{}", layer->first / 2, *inner);
    }
    return std::nullopt;
  }
  if (n.starts_with("output_blocks.")) {
    auto b = number_dot(n.substr(14));
    if (!b) return std::nullopt;
    auto layer = number_dot(b->second);
    if (!layer) return std::nullopt;
    const int level = b->first / 3, j = b->first % 3;
    if (level >= levels_) return std::nullopt;
    const bool attn = static_cast<size_t>(b->first) < out_has_attn_.size() &&
                      out_has_attn_[static_cast<size_t>(b->first)];
    if (layer->first == 0) {
      auto inner = resnet_inner(layer->second);
      if (!inner) return std::nullopt;
      return fmt::format("up_blocks.{}.resnets.{}.{}", level, j, *inner);
    }
    if (layer->first == 1 && attn)
      return fmt::format("up_blocks.{}.attentions.{}.{}", level, j, layer->second);
    // The upsampler: after the attention when the block has one.
    if (j == 2 && layer->first == (attn ? 2 : 1) && layer->second.starts_with("conv."))
      return fmt::format("up_blocks.{}.upsamplers.0.conv.{}", level, layer->second.substr(5));
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace ckptkit::detail
