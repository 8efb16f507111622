// LDM VAE names <-> diffusers VAE names (model/vae_names.h).
#include "model/vae_names.h"

#include <algorithm>
#include <charconv>
#include <map>

namespace ckptkit::detail {
namespace {

/// One module path in both namings. Pattern parts: a literal, `{a}`/`{b}` (a number, the same
/// on both sides) or the decoder level, `{u}` in LDM and `{U}` in diffusers, with U = N-1-u.
struct Rule {
  std::string ldm;
  std::string diffusers;
  bool linear = false;  ///< weight is a 1×1 conv in LDM, a linear layer in diffusers
  bool alias = false;   ///< an older diffusers spelling: read, never written
};

/// A ResNet block's inner modules: the same in both namings except the shortcut.
constexpr std::pair<std::string_view, std::string_view> kResnetInner[] = {
    {"norm1", "norm1"},
    {"conv1", "conv1"},
    {"norm2", "norm2"},
    {"conv2", "conv2"},
    {"nin_shortcut", "conv_shortcut"},
};

/// The mid-block attention: LDM name, diffusers name, older diffusers name, 1×1 conv weight.
struct AttnRow {
  std::string_view ldm, diffusers, legacy;
  bool linear;
};
constexpr AttnRow kAttn[] = {
    {"norm", "group_norm", "group_norm", false},
    {"q", "to_q", "query", true},
    {"k", "to_k", "key", true},
    {"v", "to_v", "value", true},
    {"proj_out", "to_out.0", "proj_attn", true},
};

const std::vector<Rule>& rules() {
  static const std::vector<Rule> kRules = [] {
    std::vector<Rule> r;
    auto add = [&](std::string l, std::string d) { r.push_back({std::move(l), std::move(d)}); };
    for (std::string_view side : {"encoder", "decoder"}) {
      const std::string s(side);
      add(s + ".conv_in", s + ".conv_in");
      add(s + ".conv_out", s + ".conv_out");
      add(s + ".norm_out", s + ".conv_norm_out");
      auto resnet = [&](const std::string& l, const std::string& d) {
        for (const auto& [li, di] : kResnetInner)
          add(l + "." + std::string(li), d + "." + std::string(di));
      };
      resnet(s + ".mid.block_1", s + ".mid_block.resnets.0");
      resnet(s + ".mid.block_2", s + ".mid_block.resnets.1");
      for (const AttnRow& a : kAttn) {
        const std::string l = s + ".mid.attn_1." + std::string(a.ldm);
        r.push_back({l, s + ".mid_block.attentions.0." + std::string(a.diffusers), a.linear});
        if (a.legacy != a.diffusers)
          r.push_back({l, s + ".mid_block.attentions.0." + std::string(a.legacy), a.linear, true});
      }
      if (side == "encoder") {
        resnet("encoder.down.{a}.block.{b}", "encoder.down_blocks.{a}.resnets.{b}");
        add("encoder.down.{a}.downsample.conv", "encoder.down_blocks.{a}.downsamplers.0.conv");
      } else {
        resnet("decoder.up.{u}.block.{b}", "decoder.up_blocks.{U}.resnets.{b}");
        add("decoder.up.{u}.upsample.conv", "decoder.up_blocks.{U}.upsamplers.0.conv");
      }
    }
    add("quant_conv", "quant_conv");
    add("post_quant_conv", "post_quant_conv");
    return r;
  }();
  return kRules;
}

std::vector<std::string_view> parts_of(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t dot = s.find('.', start);
    out.push_back(s.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

/// A whole part that is a number, without sign or leading zeros.
std::optional<int> number(std::string_view p) {
  if (p.empty() || (p.size() > 1 && p[0] == '0')) return std::nullopt;
  int n = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), n);
  if (ec != std::errc() || end != p.data() + p.size() || n < 0) return std::nullopt;
  return n;
}

using Captures = std::map<char, int>;

/// Matches the module path `module` against `pattern`; numbers go to `caps` under their letter.
bool match(std::string_view pattern, std::string_view module, Captures& caps) {
  const auto pp = parts_of(pattern), mp = parts_of(module);
  if (pp.size() != mp.size()) return false;
  for (size_t i = 0; i < pp.size(); ++i) {
    if (pp[i].size() == 3 && pp[i][0] == '{') {
      auto n = number(mp[i]);
      if (!n) return false;
      caps[pp[i][1]] = *n;
    } else if (pp[i] != mp[i]) {
      return false;
    }
  }
  return true;
}

std::string render(std::string_view pattern, const Captures& caps) {
  std::string out;
  for (std::string_view p : parts_of(pattern)) {
    if (!out.empty()) out += '.';
    if (p.size() == 3 && p[0] == '{')
      out += std::to_string(caps.at(p[1]));
    else
      out += p;
  }
  return out;
}

/// "a.b.weight" -> ("a.b", "weight"); only weights and biases are parameters of these modules.
std::optional<std::pair<std::string_view, std::string_view>> split_leaf(std::string_view n) {
  const size_t dot = n.rfind('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const std::string_view leaf = n.substr(dot + 1);
  if (leaf != "weight" && leaf != "bias") return std::nullopt;
  return std::make_pair(n.substr(0, dot), leaf);
}

}  // namespace

VaeNames::VaeNames(const std::vector<std::string>& names) {
  int max_level = -1;
  for (const std::string& n : names)
    for (std::string_view head : {"decoder.up.", "decoder.up_blocks."})
      if (std::string_view(n).starts_with(head)) {
        const std::string_view rest = std::string_view(n).substr(head.size());
        if (auto lv = number(rest.substr(0, rest.find('.')))) max_level = std::max(max_level, *lv);
      }
  decoder_levels_ = max_level + 1;
}

std::optional<VaeName> VaeNames::to_diffusers(std::string_view ldm) const {
  auto ml = split_leaf(ldm);
  if (!ml) return std::nullopt;
  for (const Rule& r : rules()) {
    if (r.alias) continue;
    Captures caps;
    if (!match(r.ldm, ml->first, caps)) continue;
    if (auto u = caps.find('u'); u != caps.end()) {
      if (u->second >= decoder_levels_) return std::nullopt;
      caps['U'] = decoder_levels_ - 1 - u->second;
    }
    return VaeName{render(r.diffusers, caps) + "." + std::string(ml->second),
                   r.linear && ml->second == "weight"};
  }
  return std::nullopt;
}

std::optional<VaeName> VaeNames::to_ldm(std::string_view diffusers) const {
  auto ml = split_leaf(diffusers);
  if (!ml) return std::nullopt;
  for (const Rule& r : rules()) {
    Captures caps;
    if (!match(r.diffusers, ml->first, caps)) continue;
    if (auto u = caps.find('U'); u != caps.end()) {
      if (u->second >= decoder_levels_) return std::nullopt;
      caps['u'] = decoder_levels_ - 1 - u->second;
    }
    return VaeName{render(r.ldm, caps) + "." + std::string(ml->second),
                   r.linear && ml->second == "weight"};
  }
  return std::nullopt;
}

}  // namespace ckptkit::detail
