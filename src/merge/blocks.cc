// Block names for per-block α: which group a tensor belongs to, and supermerger's strings.
// See ckptkit/merge.h and docs/merge.md.
#include <fmt/format.h>

#include <charconv>
#include <cmath>

#include "ckptkit/merge.h"
#include "io/errors.h"

namespace ckptkit {
namespace {

/// "input_blocks.7.1.proj_in.weight" with `head` "input_blocks." → 7; nullopt otherwise.
std::optional<unsigned> numbered(std::string_view key, std::string_view head) {
  if (!key.starts_with(head)) return std::nullopt;
  key.remove_prefix(head.size());
  unsigned n = 0;
  auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), n);
  if (ec != std::errc() || end == key.data() || end == key.data() + key.size() || *end != '.')
    return std::nullopt;
  return n;
}

bool is_unet_family(std::string_view f) {
  return f == "sd1" || f == "sd2" || f == "sdxl" || f == "sdxl-refiner";
}

/// The last output block of a UNet family (where the final `out` layers go).
unsigned last_out_block(std::string_view family) { return family == "sdxl" ? 8 : 11; }

}  // namespace

std::string merge_block_of(std::string_view family, std::string_view key) {
  if (is_unet_family(family)) {
    if (auto n = numbered(key, "input_blocks.")) return fmt::format("IN{:02}", *n);
    if (key.starts_with("middle_block.")) return "M00";
    if (auto n = numbered(key, "output_blocks.")) return fmt::format("OUT{:02}", *n);
    if (key.starts_with("time_embed.") || key.starts_with("label_emb.")) return "IN00";
    if (key.starts_with("out.")) return fmt::format("OUT{:02}", last_out_block(family));
    return "";
  }
  if (family == "sd3") {
    if (auto n = numbered(key, "joint_blocks.")) return fmt::format("joint_blocks.{}", *n);
    return "";
  }
  if (family == "flux") {
    if (auto n = numbered(key, "double_blocks.")) return fmt::format("double_blocks.{}", *n);
    if (auto n = numbered(key, "single_blocks.")) return fmt::format("single_blocks.{}", *n);
    return "";
  }
  return "";
}

std::vector<std::string> merge_block_names(std::string_view family, unsigned depth,
                                           unsigned depth2) {
  std::vector<std::string> names;
  if (is_unet_family(family)) {
    const unsigned n = family == "sdxl" ? 9 : 12;
    for (unsigned i = 0; i < n; ++i) names.push_back(fmt::format("IN{:02}", i));
    names.push_back("M00");
    for (unsigned i = 0; i < n; ++i) names.push_back(fmt::format("OUT{:02}", i));
  } else if (family == "sd3") {
    for (unsigned i = 0; i < depth; ++i) names.push_back(fmt::format("joint_blocks.{}", i));
  } else if (family == "flux") {
    const unsigned d = depth ? depth : 19, s = depth2 ? depth2 : 38;
    for (unsigned i = 0; i < d; ++i) names.push_back(fmt::format("double_blocks.{}", i));
    for (unsigned i = 0; i < s; ++i) names.push_back(fmt::format("single_blocks.{}", i));
  }
  for (const char* g : {"text_encoder", "vae", "other"}) names.emplace_back(g);
  return names;
}

Result<std::map<std::string, double>> parse_block_weights(std::string_view text,
                                                          std::string_view family) {
  if (!is_unet_family(family))
    return error(ErrorCode::kInvalidArgument,
                 "a supermerger block string applies to SD1, SD2 and SDXL UNets; this model is "
                 "{} (use --alpha NAME=X with the names `merge --list-blocks` prints)",
                 family.empty() ? "of no known family" : family);
  std::vector<double> v;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = text.substr(pos, comma - pos);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    double d = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), d);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || !std::isfinite(d))
      return error(ErrorCode::kInvalidArgument, "block string value {} ('{}') is not a number",
                   v.size() + 1, item);
    v.push_back(d);
    if (v.size() > 26) break;
    pos = comma + 1;
  }
  const bool xl = family == "sdxl";
  // The 26 positions of supermerger's string: BASE, IN00–IN11, M00, OUT00–OUT11.
  std::vector<std::string> names26 = {"text_encoder"};
  for (int i = 0; i < 12; ++i) names26.push_back(fmt::format("IN{:02}", i));
  names26.push_back("M00");
  for (int i = 0; i < 12; ++i) names26.push_back(fmt::format("OUT{:02}", i));
  std::vector<std::string> names;
  if (v.size() == 26 || v.size() == 25) {
    names = names26;
    if (v.size() == 25) names.erase(names.begin());
    if (xl)  // SDXL has IN00–IN08 and OUT00–OUT08: supermerger ignores the other positions
      for (std::string& n : names)
        if ((n.starts_with("IN") && n > "IN08") || (n.starts_with("OUT") && n > "OUT08")) n.clear();
  } else if (xl && (v.size() == 20 || v.size() == 19)) {
    if (v.size() == 20) names.push_back("text_encoder");
    for (int i = 0; i < 9; ++i) names.push_back(fmt::format("IN{:02}", i));
    names.push_back("M00");
    for (int i = 0; i < 9; ++i) names.push_back(fmt::format("OUT{:02}", i));
  } else {
    return error(ErrorCode::kInvalidArgument,
                 "a supermerger block string has 25 values (IN00…OUT11) or 26 (BASE first){}; "
                 "this one has {}",
                 xl ? ", or for SDXL 19 or 20" : "",
                 v.size() > 26 ? "more than 26" : std::to_string(v.size()));
  }
  std::map<std::string, double> out;
  for (size_t i = 0; i < names.size(); ++i)
    if (!names[i].empty()) out[names[i]] = v[i];
  return out;
}

}  // namespace ckptkit
