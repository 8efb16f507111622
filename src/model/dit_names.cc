// FLUX and SD3 transformer names, both ways (model/dit_names.h).
#include "model/dit_names.h"

#include <fmt/format.h>

#include <charconv>
#include <map>
#include <optional>

#include "io/errors.h"

namespace ckptkit::detail {
namespace {

/// How the single-file tensor's rows become the diffusers tensors.
enum class Cut : uint8_t {
  kWhole,         ///< one tensor, renamed
  kThirds,        ///< q, k, v: three equal row ranges
  kThreeAndRest,  ///< FLUX linear1: q, k, v (width rows each), then the MLP input
  kSwapHalves,    ///< (shift, scale) ↔ (scale, shift)
  kSwapIfPair,    ///< kSwapHalves when the tensor has 2·width rows (SD3's last context block)
};

struct Rule {
  std::string_view single;  ///< module path, or the full name when `exact`
  std::vector<std::string_view> diffusers;
  Cut cut = Cut::kWhole;
  bool exact = false;  ///< no .weight/.bias leaf appended (FLUX's norm `.scale` ↔ `.weight`)
};

/// Where a group of rules applies: the top level (`single` empty) or numbered blocks
/// (`double_blocks.` + N + `.` ↔ `transformer_blocks.` + N + `.`).
struct Scope {
  std::string_view single;
  std::string_view diffusers;
  std::vector<Rule> rules;
};

struct DitTable {
  std::string_view family;
  /// The tensor whose first dimension is the model's width (in each naming).
  std::string_view width_single;
  std::string_view width_diffusers;
  std::vector<Scope> scopes;  ///< numbered scopes first, the top level last
};

// diffusers' scripts/convert_flux_to_diffusers.py and convert_sd3_to_diffusers.py
// (huggingface/diffusers), read rule by rule; docs/models.md says the same in words.
const std::vector<DitTable>& tables() {
  static const std::vector<DitTable> kTables = {
      {"flux",
       "img_in.weight",
       "x_embedder.weight",
       {{"double_blocks.",
         "transformer_blocks.",
         {{"img_mod.lin", {"norm1.linear"}},
          {"txt_mod.lin", {"norm1_context.linear"}},
          {"img_attn.qkv", {"attn.to_q", "attn.to_k", "attn.to_v"}, Cut::kThirds},
          {"txt_attn.qkv", {"attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"}, Cut::kThirds},
          {"img_attn.norm.query_norm.scale", {"attn.norm_q.weight"}, Cut::kWhole, true},
          {"img_attn.norm.key_norm.scale", {"attn.norm_k.weight"}, Cut::kWhole, true},
          {"txt_attn.norm.query_norm.scale", {"attn.norm_added_q.weight"}, Cut::kWhole, true},
          {"txt_attn.norm.key_norm.scale", {"attn.norm_added_k.weight"}, Cut::kWhole, true},
          {"img_attn.proj", {"attn.to_out.0"}},
          {"txt_attn.proj", {"attn.to_add_out"}},
          {"img_mlp.0", {"ff.net.0.proj"}},
          {"img_mlp.2", {"ff.net.2"}},
          {"txt_mlp.0", {"ff_context.net.0.proj"}},
          {"txt_mlp.2", {"ff_context.net.2"}}}},
        {"single_blocks.",
         "single_transformer_blocks.",
         {{"modulation.lin", {"norm.linear"}},
          {"linear1", {"attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"}, Cut::kThreeAndRest},
          {"norm.query_norm.scale", {"attn.norm_q.weight"}, Cut::kWhole, true},
          {"norm.key_norm.scale", {"attn.norm_k.weight"}, Cut::kWhole, true},
          {"linear2", {"proj_out"}}}},
        {"",
         "",
         {{"time_in.in_layer", {"time_text_embed.timestep_embedder.linear_1"}},
          {"time_in.out_layer", {"time_text_embed.timestep_embedder.linear_2"}},
          {"vector_in.in_layer", {"time_text_embed.text_embedder.linear_1"}},
          {"vector_in.out_layer", {"time_text_embed.text_embedder.linear_2"}},
          {"guidance_in.in_layer", {"time_text_embed.guidance_embedder.linear_1"}},
          {"guidance_in.out_layer", {"time_text_embed.guidance_embedder.linear_2"}},
          {"txt_in", {"context_embedder"}},
          {"img_in", {"x_embedder"}},
          {"final_layer.linear", {"proj_out"}},
          {"final_layer.adaLN_modulation.1", {"norm_out.linear"}, Cut::kSwapHalves}}}}},
      {"sd3",
       "x_embedder.proj.weight",
       "pos_embed.proj.weight",
       {{"joint_blocks.",
         "transformer_blocks.",
         {{"x_block.attn.qkv", {"attn.to_q", "attn.to_k", "attn.to_v"}, Cut::kThirds},
          {"context_block.attn.qkv",
           {"attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"},
           Cut::kThirds},
          {"x_block.attn.ln_q", {"attn.norm_q"}},
          {"x_block.attn.ln_k", {"attn.norm_k"}},
          {"context_block.attn.ln_q", {"attn.norm_added_q"}},
          {"context_block.attn.ln_k", {"attn.norm_added_k"}},
          {"x_block.attn.proj", {"attn.to_out.0"}},
          {"context_block.attn.proj", {"attn.to_add_out"}},
          {"x_block.attn2.qkv", {"attn2.to_q", "attn2.to_k", "attn2.to_v"}, Cut::kThirds},
          {"x_block.attn2.ln_q", {"attn2.norm_q"}},
          {"x_block.attn2.ln_k", {"attn2.norm_k"}},
          {"x_block.attn2.proj", {"attn2.to_out.0"}},
          {"x_block.adaLN_modulation.1", {"norm1.linear"}},
          {"context_block.adaLN_modulation.1", {"norm1_context.linear"}, Cut::kSwapIfPair},
          {"x_block.mlp.fc1", {"ff.net.0.proj"}},
          {"x_block.mlp.fc2", {"ff.net.2"}},
          {"context_block.mlp.fc1", {"ff_context.net.0.proj"}},
          {"context_block.mlp.fc2", {"ff_context.net.2"}}}},
        {"",
         "",
         {{"pos_embed", {"pos_embed.pos_embed"}, Cut::kWhole, true},
          {"x_embedder.proj", {"pos_embed.proj"}},
          {"t_embedder.mlp.0", {"time_text_embed.timestep_embedder.linear_1"}},
          {"t_embedder.mlp.2", {"time_text_embed.timestep_embedder.linear_2"}},
          {"y_embedder.mlp.0", {"time_text_embed.text_embedder.linear_1"}},
          {"y_embedder.mlp.2", {"time_text_embed.text_embedder.linear_2"}},
          {"context_embedder", {"context_embedder"}},
          {"final_layer.linear", {"proj_out"}},
          {"final_layer.adaLN_modulation.1", {"norm_out.linear"}, Cut::kSwapHalves}}}}},
  };
  return kTables;
}

const DitTable* table_of(std::string_view family) {
  for (const DitTable& t : tables())
    if (t.family == family) return &t;
  return nullptr;
}

/// A name split into its scope instance ("double_blocks.3.") and the rest.
struct Located {
  const Scope* scope;
  std::string head;
  std::string_view rest;
};

std::optional<Located> locate(const DitTable& table, std::string_view name, bool single) {
  for (const Scope& s : table.scopes) {
    const std::string_view head = single ? s.single : s.diffusers;
    if (head.empty()) return Located{&s, "", name};
    if (!name.starts_with(head)) continue;
    std::string_view tail = name.substr(head.size());
    unsigned n = 0;
    auto [p, ec] = std::from_chars(tail.data(), tail.data() + tail.size(), n);
    if (ec != std::errc() || p == tail.data() || p == tail.data() + tail.size() || *p != '.')
      continue;
    const size_t digits = static_cast<size_t>(p - tail.data());
    return Located{&s, std::string(name.substr(0, head.size() + digits + 1)),
                   tail.substr(digits + 1)};
  }
  return std::nullopt;
}

/// The leaf of `rest` under `module` (".weight", ".bias", or "" for an exact rule).
std::optional<std::string_view> leaf_of(std::string_view rest, std::string_view module,
                                        bool exact) {
  if (exact) return rest == module ? std::optional<std::string_view>("") : std::nullopt;
  for (std::string_view leaf : {".weight", ".bias"})
    if (rest.size() == module.size() + leaf.size() && rest.starts_with(module) &&
        rest.ends_with(leaf))
      return leaf;
  return std::nullopt;
}

Status no_rule(const std::string& where, const std::string& name, std::string_view naming) {
  return Status(ErrorCode::kInvalidArgument,
                fmt::format("the transformer tensor has no {} name (the mapping rules are in "
                            "docs/models.md)",
                            naming),
                where, kNoOffset, name);
}

Status bad_rows(const std::string& where, const std::string& name, const Shape& s,
                std::string_view why) {
  return Status(ErrorCode::kInvalidArgument, fmt::format("shape [{}]: {}", shape_to_string(s), why),
                where, kNoOffset, name);
}

Result<uint64_t> width_of(const ShapeMap& shapes, std::string_view name, const std::string& where) {
  auto it = shapes.find(name);
  if (it == shapes.end() || it->second.empty())
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("the tensor '{}' is missing; it gives the transformer's width", name),
                  where, kNoOffset, std::string(name));
  return it->second[0];
}

}  // namespace

bool has_dit_names(std::string_view family) { return table_of(family) != nullptr; }

Result<std::vector<MappedTensor>> dit_to_diffusers(std::string_view family, const ShapeMap& shapes,
                                                   const std::string& where) {
  const DitTable* table = table_of(family);
  if (!table) return Status(ErrorCode::kInternal, "no transformer table for the family", where);
  CKPT_ASSIGN_OR_RETURN(const uint64_t width, width_of(shapes, table->width_single, where));
  std::vector<MappedTensor> out;
  for (const auto& [name, shape] : shapes) {
    auto loc = locate(*table, name, true);
    const Rule* rule = nullptr;
    std::string_view leaf;
    if (loc)
      for (const Rule& r : loc->scope->rules)
        if (auto l = leaf_of(loc->rest, r.single, r.exact)) {
          rule = &r;
          leaf = *l;
          break;
        }
    if (!rule) return no_rule(where, name, "diffusers");
    // "double_blocks.3." → "transformer_blocks.3."; the top level has no head.
    const std::string number = loc->head.substr(loc->scope->single.size());
    auto target = [&](size_t k) {
      return fmt::format("{}{}{}{}", loc->scope->diffusers, number, rule->diffusers[k], leaf);
    };
    const uint64_t rows = shape.empty() ? 0 : shape[0];
    Cut cut = rule->cut;
    if (cut == Cut::kSwapIfPair) cut = rows == 2 * width ? Cut::kSwapHalves : Cut::kWhole;
    if (cut != Cut::kWhole && shape.empty())
      return bad_rows(where, name, shape, "a scalar has no rows to cut");
    switch (cut) {
      case Cut::kWhole:
        out.push_back({target(0), {{name, 0, rows}}});
        break;
      case Cut::kThirds:
        if (rows % 3 != 0)
          return bad_rows(where, name, shape, "q, k, v rows are not 3 equal parts");
        for (size_t k = 0; k < 3; ++k) out.push_back({target(k), {{name, k * rows / 3, rows / 3}}});
        break;
      case Cut::kThreeAndRest:
        if (rows <= 3 * width)
          return bad_rows(
              where, name, shape,
              fmt::format("q, k, v of width {} and the MLP input need more rows", width));
        for (size_t k = 0; k < 3; ++k) out.push_back({target(k), {{name, k * width, width}}});
        out.push_back({target(3), {{name, 3 * width, rows - 3 * width}}});
        break;
      case Cut::kSwapHalves:
        if (rows % 2 != 0)
          return bad_rows(where, name, shape, "shift and scale need 2 equal halves");
        out.push_back({target(0), {{name, rows / 2, rows / 2}, {name, 0, rows / 2}}});
        break;
      case Cut::kSwapIfPair:
        break;
    }
  }
  return out;
}

Result<std::vector<MappedTensor>> dit_from_diffusers(std::string_view family,
                                                     const ShapeMap& shapes,
                                                     const std::string& where) {
  const DitTable* table = table_of(family);
  if (!table) return Status(ErrorCode::kInternal, "no transformer table for the family", where);
  CKPT_ASSIGN_OR_RETURN(const uint64_t width, width_of(shapes, table->width_diffusers, where));
  // Each single-file tensor gathers its parts: name -> (rule, one diffusers name per part).
  struct Group {
    const Rule* rule;
    std::vector<std::string> parts;
  };
  std::map<std::string, Group> groups;
  for (const auto& [name, shape] : shapes) {
    auto loc = locate(*table, name, false);
    const Rule* rule = nullptr;
    size_t part = 0;
    std::string_view leaf;
    if (loc)
      for (const Rule& r : loc->scope->rules) {
        for (size_t k = 0; k < r.diffusers.size() && !rule; ++k)
          if (auto l = leaf_of(loc->rest, r.diffusers[k], r.exact)) {
            rule = &r;
            part = k;
            leaf = *l;
          }
        if (rule) break;
      }
    if (!rule) return no_rule(where, name, "single-file");
    const std::string single =
        fmt::format("{}{}{}{}", loc->scope->single, loc->head.substr(loc->scope->diffusers.size()),
                    rule->single, leaf);
    Group& g = groups[single];
    g.rule = rule;
    g.parts.resize(rule->diffusers.size());
    g.parts[part] = name;
  }
  std::vector<MappedTensor> out;
  for (const auto& [single, g] : groups) {
    std::string present;
    for (const std::string& p : g.parts)
      if (!p.empty()) present = p;
    for (size_t k = 0; k < g.parts.size(); ++k)
      if (g.parts[k].empty())
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("it is one of the {} parts of the single-file '{}', whose part "
                                  "'{}' is missing",
                                  g.parts.size(), single, g.rule->diffusers[k]),
                      where, kNoOffset, present);
    const Shape& first = shapes.find(g.parts[0])->second;
    for (const std::string& p : g.parts) {
      const Shape& s = shapes.find(p)->second;
      if (s.empty() || first.empty() ||
          !std::equal(s.begin() + 1, s.end(), first.begin() + 1, first.end()))
        return bad_rows(where, p, s,
                        fmt::format("it is joined with '{}' [{}] into '{}', and their trailing "
                                    "dimensions differ",
                                    g.parts[0], shape_to_string(first), single));
    }
    const uint64_t rows = first.empty() ? 0 : first[0];
    Cut cut = g.rule->cut;
    if (cut == Cut::kSwapIfPair) cut = rows == 2 * width ? Cut::kSwapHalves : Cut::kWhole;
    MappedTensor m{single, {}};
    if (cut == Cut::kSwapHalves) {
      if (rows % 2 != 0)
        return bad_rows(where, g.parts[0], first, "scale and shift need 2 equal halves");
      m.from = {{g.parts[0], rows / 2, rows / 2}, {g.parts[0], 0, rows / 2}};
    } else {
      for (const std::string& p : g.parts) {
        const Shape& s = shapes.find(p)->second;
        m.from.push_back({p, 0, s.empty() ? 0 : s[0]});
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace ckptkit::detail
