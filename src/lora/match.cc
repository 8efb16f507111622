// match_lora: which tensor of a base model each LoRA module changes (ckptkit/lora.h), by the
// names every convention gives the base's weights (lora/names.h).
#include <fmt/format.h>

#include <unordered_map>

#include "ckptkit/anatomy.h"
#include "ckptkit/lora.h"
#include "lora/names.h"

namespace ckptkit {
namespace {

/// ΔW shape and base shape agree: equal, or equal once trailing 1-dims are dropped (a linear
/// LoRA on a 1x1 convolution, as SD1's proj_in).
bool same_shape(Shape a, Shape b) {
  // A LoHa or LoKr on a convolution stores its ΔW flattened: out × (in·kh·kw).
  if (a.size() == 2 && b.size() == 4 && a[0] == b[0] && a[1] == b[1] * b[2] * b[3]) return true;
  while (a.size() > 2 && a.back() == 1) a.pop_back();
  while (b.size() > 2 && b.back() == 1) b.pop_back();
  return a == b;
}

}  // namespace

std::vector<LoraModuleMatch> match_lora(const LoraFile& lora, const Checkpoint& base,
                                        const Anatomy& a) {
  std::unordered_map<std::string, detail::LoraTarget> map;
  for (detail::LoraName& n : detail::lora_names(base, a))
    map.emplace(std::move(n.key), std::move(n.target));

  std::vector<LoraModuleMatch> out;
  for (const LoraModule& m : lora.modules) {
    LoraModuleMatch r;
    r.module = m.name;
    auto it = map.find(m.name);
    if (it == map.end()) {
      r.why_not = "no tensor of the base model has this module's name in any LoRA convention";
      out.push_back(std::move(r));
      continue;
    }
    const detail::LoraTarget& t = it->second;
    if (!t.reason.empty()) {
      r.why_not = t.reason;
      out.push_back(std::move(r));
      continue;
    }
    Shape base_shape = t.tensor->shape;
    if (t.rows) base_shape[0] = t.rows;
    r.base_tensor = t.tensor->name;
    if (t.rows) r.rows = {t.row0, t.row0 + t.rows};
    if (!m.delta_shape.empty() && !same_shape(m.delta_shape, base_shape)) {
      r.why_not =
          fmt::format("the base tensor{} is {}, the module's ΔW {}", t.rows ? " (its rows)" : "",
                      shape_to_string(base_shape), shape_to_string(m.delta_shape));
      r.base_tensor.clear();
      r.rows.reset();
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace ckptkit
