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
  return std::make_pair(n, s.substr(static_cast<size_t>(p - s.data()) + 1));
}

/// A ResNet block's inner names.
std::optional<std::string> resnet_inner(std::string_view rest) {
  static constexpr std::pair<std::string_view, std::string_view> kMap[] = {
      {"in_layers.0.", "norm1."},         {"in_layers.2.", "conv1."},
      {"emb_layers.1.", "time_emb_proj."}, {"out_layers.0.", "norm2."},
      {"out_layers.3.", "conv2."},        {"skip_connection.", "conv_shortcut."},
  };
  for (const auto& [ldm, diff] : kMap)
    if (rest.starts_with(ldm)) return std::string(diff) + std::string(rest.substr(ldm.size()));
  return std::nullopt;
}

}  // namespace

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
      {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
      {"label_emb.0.0.", "add_embedding.linear_1."}, {"label_emb.0.2.", "add_embedding.linear_2."},
      {"input_blocks.0.0.", "conv_in."},             {"out.0.", "conv_norm_out."},
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
