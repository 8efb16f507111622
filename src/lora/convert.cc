// lora convert: a LoRA under another format's module names and factor keys, q/k/v slices fused
// or split as the format names them, ΔW of every base tensor unchanged (ckptkit/lora.h,
// docs/lora.md).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <simdjson.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>

#include "ckptkit/anatomy.h"
#include "ckptkit/cast.h"
#include "ckptkit/lora.h"
#include "io/json.h"
#include "io/output.h"
#include "lora/names.h"
#include "lora/open.h"
#include "model/layouts.h"
#include "ops/input.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

using detail::LoraFormat;
using detail::OpenedInput;

/// A tensor computed whole in F32 on first use, then handed out in chunks cast to `out`.
class ComputedProducer final : public TensorProducer {
 public:
  using Fn = std::function<Status(std::vector<float>&)>;
  ComputedProducer(Fn fn, DType out, uint64_t numel) : fn_(std::move(fn)), out_(out), n_(numel) {}

  uint64_t scratch_bytes_per_element() const override { return 0; }
  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> /*scratch*/) const override {
    std::call_once(once_, [&] {
      status_ = fn_(values_);
      if (status_.is_ok() && values_.size() != n_)
        status_ = Status(ErrorCode::kInternal, "a computed LoRA factor has the wrong size");
    });
    CKPT_RETURN_IF_ERROR(status_);
    CKPT_RETURN_IF_ERROR(cast_elements(DType::F32, out_, values_.data() + first, out.data(), count));
    if (done_.fetch_add(count) + count == n_) std::vector<float>().swap(values_);
    return Status::ok();
  }

 private:
  Fn fn_;
  DType out_;
  uint64_t n_;
  mutable std::once_flag once_;
  mutable Status status_;
  mutable std::vector<float> values_;
  mutable std::atomic<uint64_t> done_{0};
};

/// A factor as F32; NaN or infinity is an error (a LoRA never carries them).
Status load_f32(const OpenedInput& in, const TensorInfo& t, const std::string& module,
                std::vector<float>& out) {
  auto p = in.producer(t, DType::F32);
  const uint64_t n = t.numel();
  out.resize(n);
  std::vector<uint8_t> scratch(n * std::max<uint64_t>(1, p->scratch_bytes_per_element()));
  CKPT_RETURN_IF_ERROR(p->produce(
      0, n, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), n * sizeof(float)),
      scratch));
  for (uint64_t i = 0; i < n; ++i)
    if (!std::isfinite(out[i]))
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("module {}: factor {} holds {} at element {}", module, t.name,
                                std::isnan(out[i]) ? "NaN" : "an infinity", i),
                    in.file().path(), kNoOffset, t.name);
  return Status::ok();
}

/// The factors of one input module, by role.
struct Factors {
  const TensorInfo* down = nullptr;
  const TensorInfo* up = nullptr;
  const TensorInfo* alpha = nullptr;
  const TensorInfo* dora = nullptr;
  std::vector<std::pair<std::string, const TensorInfo*>> other;  ///< suffix (with '.'), tensor
};

Factors factors_of(const LoraModule& m, const Checkpoint& ck) {
  static constexpr std::string_view kDown[] = {".lora_down.weight", ".lora_A.weight",
                                               ".lora.down.weight",
                                               ".lora_linear_layer.down.weight"};
  static constexpr std::string_view kUp[] = {".lora_up.weight", ".lora_B.weight", ".lora.up.weight",
                                             ".lora_linear_layer.up.weight"};
  Factors f;
  for (size_t ti : m.tensors) {
    const TensorInfo& t = ck.tensors[ti];
    const std::string_view suffix = std::string_view(t.name).substr(m.name.size());
    bool known = false;
    for (std::string_view s : kDown)
      if (suffix == s) f.down = &t, known = true;
    for (std::string_view s : kUp)
      if (suffix == s) f.up = &t, known = true;
    if (suffix == ".alpha") f.alpha = &t, known = true;
    if (suffix == ".dora_scale") f.dora = &t, known = true;
    if (!known) f.other.emplace_back(std::string(suffix), &t);
  }
  return f;
}

/// The embedded reference layout of each family whose names a LoRA is converted with.
std::string_view reference_layout(std::string_view family) {
  if (family == "sd1") return "sd15-ldm";
  if (family == "sd2") return "sd2-ldm";
  if (family == "sdxl") return "sdxl-sgm";
  if (family == "sd3") return "sd3-medium";
  if (family == "flux") return "flux1-dev-comfy-fp8-aio";
  return {};
}

/// The embedded reference layout of `family` as a tensor table (no data).
Result<Checkpoint> reference_checkpoint(std::string_view family) {
  const std::string_view layout = reference_layout(family);
  if (layout.empty())
    return Status(ErrorCode::kInternal, fmt::format("no reference layout for {}", family));
  CKPT_ASSIGN_OR_RETURN(std::vector<TensorLayout> tl, load_layout(layout));
  Checkpoint ck;
  uint64_t at = 0;
  for (const TensorLayout& t : tl) {
    TensorInfo ti;
    ti.name = t.name;
    ti.dtype = t.dtype;
    ti.shape = t.shape;
    ti.begin = at;
    at += dtype_bytes(t.dtype, shape_numel(t.shape).value_or(0)).value_or(0);
    ti.end = at;
    ck.tensors.push_back(std::move(ti));
  }
  return ck;
}

bool same_family(std::string_view lora, std::string_view base) {
  return lora.empty() || lora == base || (lora == "sdxl" && base == "sdxl-refiner") ||
         (lora == "sd1" && base == "sd2") || (lora == "sd2" && base == "sd1");
}

/// diffusers' lora_adapter_metadata header (diffusers loaders/lora_base.py): per component
/// ("unet", "text_encoder", "transformer", …) the fields of its PEFT LoraConfig as
/// "<component>.<field>"; diffusers builds the LoraConfig from it instead of the weights.
struct AdapterConfig {
  double r = 8, lora_alpha = 8;  // LoraConfig's defaults
  bool rslora = false;
  std::map<std::string, double> rank_pattern, alpha_pattern;
};

/// A PEFT pattern key applies to `path` when it is the path or a dotted suffix of it (PEFT
/// matches `(.*\.)?key$`); keys using other regular-expression syntax are not supported.
std::optional<double> pattern_value(const std::map<std::string, double>& pattern,
                                    const std::string& path, bool& unsupported) {
  std::optional<double> v;
  for (const auto& [key, value] : pattern) {
    if (key.find_first_of("*+?()[]{}|^$\\") != std::string::npos) unsupported = true;
    if (path == key || (path.ends_with(key) && path[path.size() - key.size() - 1] == '.'))
      v = value;
  }
  return v;
}

/// The alpha each module gets from lora_adapter_metadata, set on the modules (alpha =
/// scale × rank); an error when the header cannot be read exactly or disagrees with the
/// factors.
Status apply_adapter_metadata(const Checkpoint& ck, LoraFile& lf, const std::string& path) {
  auto it = ck.metadata.find("lora_adapter_metadata");
  if (it == ck.metadata.end()) return Status::ok();
  auto bad = [&](std::string why) {
    return Status(ErrorCode::kUnsupported,
                  fmt::format("its scale is in the lora_adapter_metadata header, which {}: "
                              "converting would change the LoRA's strength",
                              why),
                  path);
  };
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(it->second).get(doc) != simdjson::SUCCESS || !doc.is_object())
    return bad("is not a JSON object");
  auto number = [](simdjson::dom::element v, double& out) {
    int64_t i = 0;
    if (v.get_double().get(out) == simdjson::SUCCESS) return true;
    if (v.get_int64().get(i) != simdjson::SUCCESS) return false;
    out = static_cast<double>(i);
    return true;
  };
  std::map<std::string, AdapterConfig> configs;
  for (auto [k, v] : doc.get_object()) {
    const std::string_view key = k;
    const size_t dot = key.find('.');
    if (dot == std::string_view::npos) continue;
    AdapterConfig& c = configs[std::string(key.substr(0, dot))];
    const std::string_view field = key.substr(dot + 1);
    if (field == "r" && !number(v, c.r)) return bad("has an r that is not a number");
    if (field == "lora_alpha" && !number(v, c.lora_alpha))
      return bad("has a lora_alpha that is not a number");
    if (field == "use_rslora" && v.get_bool().get(c.rslora) != simdjson::SUCCESS)
      return bad("has a use_rslora that is not true or false");
    if (field == "use_dora") {
      bool dora = false;
      if (v.get_bool().get(dora) != simdjson::SUCCESS || dora) return bad("asks for DoRA");
    }
    if (field == "rank_pattern" || field == "alpha_pattern") {
      simdjson::dom::object o;
      if (v.get_object().get(o) != simdjson::SUCCESS) return bad("has a pattern that is no object");
      for (auto [pk, pv] : o) {
        double x = 0;
        if (!number(pv, x)) return bad("has a pattern value that is not a number");
        (field == "rank_pattern" ? c.rank_pattern : c.alpha_pattern)
            .emplace(std::string(pk), x);
      }
    }
  }
  for (LoraModule& m : lf.modules) {
    const size_t dot = m.name.find('.');
    if (dot == std::string::npos) continue;
    auto c = configs.find(m.name.substr(0, dot));
    if (c == configs.end()) continue;
    const std::string local = m.name.substr(dot + 1);
    bool unsupported = false;
    const double r = pattern_value(c->second.rank_pattern, local, unsupported).value_or(c->second.r);
    const double a =
        pattern_value(c->second.alpha_pattern, local, unsupported).value_or(c->second.lora_alpha);
    if (unsupported) return bad("uses regular-expression patterns convert does not read");
    if (m.kind != LoraKind::kLora || m.rank == 0) continue;
    if (r != static_cast<double>(m.rank))
      return bad(fmt::format("gives module {} rank {:g} where its factors have rank {}", m.name,
                             r, m.rank));
    if (m.alpha) return bad(fmt::format("and an alpha tensor both scale module {}", m.name));
    const double scale = c->second.rslora ? a / std::sqrt(r) : a / r;
    m.alpha = scale * static_cast<double>(m.rank);
  }
  return Status::ok();
}

/// One input module's share of a written module: its down rows and up columns `cols`, up's
/// rows [m0, m1) of the base tensor, `fold` multiplied in (sqrt into each factor, the sign on
/// up).
struct Part {
  const TensorInfo* down;
  const TensorInfo* up;
  uint64_t m0, m1;
  double fold;
  std::string module;
  std::vector<uint64_t> cols;
};

/// One written module: the rows [o0, o1) of `tensor` and the input modules that land there.
struct Unit {
  std::string name;
  const TensorInfo* tensor = nullptr;
  uint64_t o0 = 0, o1 = 0;
  struct Member {
    size_t module;
    uint64_t m0, m1;  ///< the module's rows of the tensor
  };
  std::vector<Member> members;
};

/// A JSON string literal of `s`.
std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

std::string rows_text(uint64_t a, uint64_t b, const TensorInfo& t) {
  return a == 0 && b == t.shape[0] ? t.name : fmt::format("{} rows {}..{}", t.name, a, b);
}

}  // namespace

Result<LoraConvertReport> convert_lora(const std::string& in_path, const std::string& out_path,
                                       const LoraConvertOptions& options) {
  LoraFormat fmt_to;
  if (options.to == "kohya")
    fmt_to = LoraFormat::kKohya;
  else if (options.to == "diffusers")
    fmt_to = LoraFormat::kDiffusers;
  else if (options.to == "peft")
    fmt_to = LoraFormat::kPeft;
  else
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("--to {}: the formats are kohya, diffusers and peft", options.to));
  const bool kohya = fmt_to == LoraFormat::kKohya;
  CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, options.run.force));

  detail::OpenOptions lo;
  lo.limits.safetensors = options.limits;
  lo.allow_dangerous = options.allow_dangerous;
  lo.verb = "convert";
  CKPT_ASSIGN_OR_RETURN(detail::OpenedLora opened, detail::open_lora(in_path, out_path, lo));
  const std::unique_ptr<OpenedInput>& in = opened.input;
  const Checkpoint& lck = in->checkpoint();
  const Anatomy& la = opened.anatomy;
  LoraFile& lf = opened.lora;
  if (!lf.unknown_keys.empty())
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{} key(s) are no factor of a LoRA module (first: {}): they would "
                              "be lost",
                              lf.unknown_keys.size(), lf.unknown_keys[0]),
                  in_path);
  CKPT_RETURN_IF_ERROR(apply_adapter_metadata(lck, lf, in_path));

  LoraConvertReport report;
  report.from = lf.format;
  report.to = options.to;
  report.modules_in = lf.modules.size();

  // The base whose names the modules get: the user's, or the family's reference layout.
  std::unique_ptr<OpenedInput> base;
  Checkpoint reference;
  const Checkpoint* bck = nullptr;
  Anatomy ba;
  if (options.base) {
    detail::OpenOptions bo;
    bo.limits.safetensors = options.limits;
    bo.allow_dangerous = options.allow_dangerous;
    bo.verb = "name modules against";
    CKPT_ASSIGN_OR_RETURN(base, OpenedInput::open(*options.base, out_path, bo));
    bck = &base->checkpoint();
    ba = analyze(*bck, &base->file());
    if (ba.layout == "lora")
      return Status(ErrorCode::kInvalidArgument, "--base is itself a LoRA", *options.base);
    if (ba.family.empty())
      return Status(ErrorCode::kUnsupported,
                    fmt::format("the base model is not recognized ({})", ba.architecture),
                    *options.base);
    if (!same_family(la.lora_base, ba.family))
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("a LoRA for {} cannot be named against a {} model", la.lora_base,
                                ba.family),
                    in_path);
    report.names_from = *options.base;
  } else {
    // The family the LoRA's keys tell; else the one family whose reference every module lands
    // in (a FLUX file in diffusers names without single blocks, say).
    std::string family = la.lora_base;
    if (family.empty()) {
      std::vector<std::string> fits;
      for (const char* f : {"sd1", "sd2", "sdxl", "sd3", "flux"}) {
        CKPT_ASSIGN_OR_RETURN(Checkpoint ref, reference_checkpoint(f));
        const Anatomy ra = analyze(ref, nullptr);
        bool all = !lf.modules.empty();
        for (const LoraModuleMatch& mm : match_lora(lf, ref, ra))
          if (mm.base_tensor.empty()) all = false;
        if (all) fits.push_back(f);
      }
      if (fits.size() != 1)
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("the model family of this LoRA is not determinable from its "
                                  "keys{}; name a base model of its family with --base FILE",
                                  fits.empty() ? std::string()
                                               : fmt::format(" (its modules fit {})",
                                                             fmt::join(fits, ", "))),
                      in_path);
      family = fits[0];
      report.notes.push_back(fmt::format(
          "family {}: the only one whose reference layout holds a tensor for every module",
          family));
    }
    CKPT_ASSIGN_OR_RETURN(reference, reference_checkpoint(family));
    bck = &reference;
    ba = analyze(reference, nullptr);
    report.names_from = fmt::format("layout {}", reference_layout(family));
  }
  report.family = ba.family;
  // Every module's target.
  const std::vector<LoraModuleMatch> matches = match_lora(lf, *bck, ba);
  std::vector<std::string> unmatched;
  for (const LoraModuleMatch& mm : matches)
    if (mm.base_tensor.empty()) unmatched.push_back(fmt::format("{}: {}", mm.module, mm.why_not));
  if (!unmatched.empty())
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{} of {} modules land on no tensor of the {} base ({}), so they "
                              "have no name to convert to (first: {})",
                              unmatched.size(), lf.modules.size(), ba.family, report.names_from,
                              unmatched.front()),
                  in_path);

  // The requested convention's names: per (tensor, rows) the first, per tensor its slices.
  using Range = std::tuple<const TensorInfo*, uint64_t, uint64_t>;
  std::map<Range, std::string> exact;
  std::map<Range, std::string> reasons;
  std::map<const TensorInfo*, std::map<uint64_t, std::pair<uint64_t, std::string>>> slices;
  const detail::LoraNaming naming = detail::naming_of(fmt_to);
  for (const detail::LoraName& n : detail::lora_names(*bck, ba)) {
    if (n.naming != naming) continue;
    const TensorInfo* t = n.target.tensor;
    const uint64_t r0 = n.target.rows ? n.target.row0 : 0;
    const uint64_t r1 = n.target.rows ? n.target.row0 + n.target.rows : t->shape[0];
    if (!n.target.reason.empty()) {
      reasons.emplace(Range{t, r0, r1}, n.target.reason);
      continue;
    }
    exact.emplace(Range{t, r0, r1}, n.key);
    if (n.target.rows) slices[t].emplace(r0, std::make_pair(r1, n.key));
  }

  std::vector<Unit> units;
  std::map<std::string, size_t> unit_of;
  auto add_piece = [&](const std::string& name, const TensorInfo* t, uint64_t o0, uint64_t o1,
                       Unit::Member m) {
    auto [it, added] = unit_of.emplace(name, units.size());
    if (added) units.push_back(Unit{name, t, o0, o1, {}});
    units[it->second].members.push_back(m);
  };
  std::vector<Factors> factors;
  for (size_t mi = 0; mi < lf.modules.size(); ++mi) {
    const LoraModule& m = lf.modules[mi];
    const LoraModuleMatch& mm = matches[mi];
    factors.push_back(factors_of(m, lck));
    const TensorInfo* t = bck->find(mm.base_tensor);
    if (t == nullptr || t->shape.empty())
      return Status(ErrorCode::kInternal, fmt::format("module {}: no base tensor", m.name));
    const uint64_t m0 = mm.rows ? mm.rows->first : 0;
    const uint64_t m1 = mm.rows ? mm.rows->second : t->shape[0];
    const Unit::Member member{mi, m0, m1};
    // Split: the format names this whole tensor by row slices that tile it (its loaders
    // know no whole name for it; an alias matching accepts is not one its tools write).
    if (auto it = slices.find(t); it != slices.end() && m0 == 0 && m1 == t->shape[0]) {
      uint64_t at = 0;
      for (const auto& [r0, e] : it->second) {
        if (r0 != at) break;
        at = e.first;
      }
      if (at == t->shape[0]) {
        for (const auto& [r0, e] : it->second) add_piece(e.second, t, r0, e.first, member);
        continue;
      }
    }
    if (auto it = exact.find(Range{t, m0, m1}); it != exact.end()) {
      add_piece(it->second, t, m0, m1, member);
      continue;
    }
    // Fuse: the format names the whole tensor only.
    if (auto it = exact.find(Range{t, 0, t->shape[0]}); it != exact.end()) {
      add_piece(it->second, t, 0, t->shape[0], member);
      continue;
    }
    std::string why;
    if (auto it = reasons.find(Range{t, m0, m1}); it != reasons.end()) why = ": " + it->second;
    return Status(ErrorCode::kUnsupported,
                  fmt::format("module {} changes {}, which has no name in the {} convention{}",
                              m.name, rows_text(m0, m1, *t), options.to, why),
                  in_path);
  }

  // What each input module becomes: the units it contributes to.
  std::map<size_t, uint64_t> pieces_of;
  for (const Unit& u : units)
    for (const Unit::Member& mb : u.members) ++pieces_of[mb.module];
  for (const Unit& u : units) {
    const bool plain = u.members.size() == 1 && u.members[0].m0 == u.o0 && u.members[0].m1 == u.o1;
    for (const Unit::Member& mb : u.members) {
      const LoraModule& m = lf.modules[mb.module];
      const Factors& f = factors[mb.module];
      if (m.kind == LoraKind::kLora && !f.other.empty())
        return Status(ErrorCode::kUnsupported,
                      fmt::format("module {} has a {} factor, which convert does not carry over",
                                  m.name, f.other[0].first),
                      in_path);
      std::string kind;
      if (m.kind != LoraKind::kLora)
        kind = lora_kind_name(m.kind);
      else if (m.dora)
        kind = "DoRA";
      if (kind.empty()) continue;
      if (!kohya)
        return Status(ErrorCode::kUnsupported,
                      fmt::format("module {} ({}): only kohya naming carries it (PEFT and "
                                  "diffusers files hold low-rank lora_A/lora_B pairs only); use "
                                  "--to kohya",
                                  m.name, kind),
                      in_path);
      if (!plain)
        return Status(ErrorCode::kUnsupported,
                      fmt::format("module {} ({}) would have to be {} to be named in the kohya "
                                  "convention, which only plain LoRA modules can be",
                                  m.name, kind, pieces_of[mb.module] > 1 ? "split" : "fused"),
                      in_path);
    }
  }

  // The plan: each unit's factors.
  Plan plan;
  in->add_inputs(plan);
  const OpenedInput* src = in.get();
  auto scale_of = [&](size_t mi) {
    const LoraModule& m = lf.modules[mi];
    return m.alpha && m.rank ? *m.alpha / static_cast<double>(m.rank) : 1.0;
  };
  auto add_copy = [&](const std::string& name, const TensorInfo& t) {
    plan.tensors.push_back({name, t.dtype, t.shape, src->producer(t, t.dtype)});
  };
  auto add_alpha = [&](const std::string& name, double alpha) {
    const float a = static_cast<float>(alpha);
    plan.tensors.push_back({name, DType::F32, Shape{},
                            std::make_unique<ComputedProducer>(
                                [a](std::vector<float>& v) {
                                  v.assign(1, a);
                                  return Status::ok();
                                },
                                DType::F32, 1)});
  };
  uint64_t dropped = 0;
  for (const Unit& u : units) {
    LoraConvertReport::Output o;
    o.module = u.name;
    const Unit::Member& first = u.members[0];
    const LoraModule& m0 = lf.modules[first.module];
    const bool plain = u.members.size() == 1 && first.m0 == u.o0 && first.m1 == u.o1;
    for (const Unit::Member& mb : u.members) {
      const LoraModule& m = lf.modules[mb.module];
      o.from.push_back(m.name);
      o.rank_in.push_back(m.rank);
      o.alpha_in.push_back(m.alpha);
    }
    const detail::LoraFactorKeys keys = detail::lora_factor_keys(fmt_to, u.name);
    const Factors& f0 = factors[first.module];
    // A part of one wider input module is split; one module (or several) on rows of the
    // unit's tensor, fused (the rows no module changes zero).
    const bool wider = u.members.size() == 1 && first.m0 <= u.o0 && first.m1 >= u.o1;
    o.action = !plain ? (wider ? "split" : "fused")
               : u.name == m0.name && (m0.kind != LoraKind::kLora || f0.down->name == keys.down)
                   ? "kept"
                   : "renamed";
    if (m0.kind != LoraKind::kLora) {
      // LyCORIS / full modules, kohya naming: every factor under the new module name.
      for (size_t ti : m0.tensors) {
        const TensorInfo& t = lck.tensors[ti];
        std::string suffix = t.name.substr(m0.name.size());
        if (&t == f0.down) suffix = ".lora_down.weight";
        if (&t == f0.up) suffix = ".lora_up.weight";
        add_copy(u.name + suffix, t);
      }
      o.alpha = m0.alpha;
      o.rank = m0.rank;
      ++(o.action == "kept" ? report.kept : report.renamed);
      report.outputs.push_back(std::move(o));
      continue;
    }
    // The scale the unit keeps (kohya: alpha / rank; diffusers and PEFT: 1) and each part's
    // factor folded into its down rows and up columns (sqrt each, the sign on up).
    double keep = 1.0;
    if (kohya) {
      keep = scale_of(first.module);
      for (const Unit::Member& mb : u.members)
        if (scale_of(mb.module) != keep) keep = 1.0;
    }
    std::vector<double> fold;
    for (const Unit::Member& mb : u.members) {
      const LoraModule& m = lf.modules[mb.module];
      // kohya reads alpha 0 as alpha = rank, ComfyUI and bake as scale 0: kept as it is when
      // copied, never turned into one reading.
      if (m.alpha && *m.alpha == 0.0 && !(kohya && plain))
        return Status(ErrorCode::kUnsupported,
                      fmt::format("module {} has alpha 0, which kohya's loader reads as alpha = "
                                  "rank and ComfyUI as scale 0: convert does not pick one reading",
                                  m.name),
                      in_path);
      fold.push_back(keep == 0.0 ? 1.0 : scale_of(mb.module) / keep);
      if (fold.back() != 1.0) o.folded = true;
    }
    // Each part's rank columns: all of them, except for a module wider than the unit (a split),
    // where the columns of up that are zero on the unit's rows are left out: a block-diagonal up
    // (a fused module) splits back into its parts' own ranks, and a part it does not change is
    // not written at all.
    std::vector<Part> parts;
    uint64_t rank = 0;
    for (size_t i = 0; i < u.members.size(); ++i) {
      const Unit::Member& mb = u.members[i];
      const Factors& f = factors[mb.module];
      Part pt{f.down, f.up, mb.m0, mb.m1, fold[i], lf.modules[mb.module].name, {}};
      const uint64_t r = f.up->shape[1];
      if (mb.m0 < u.o0 || mb.m1 > u.o1) {
        std::vector<float> w;
        CKPT_RETURN_IF_ERROR(load_f32(*src, *f.up, pt.module, w));
        for (uint64_t k = 0; k < r; ++k)
          for (uint64_t row = std::max(mb.m0, u.o0); row < std::min(mb.m1, u.o1); ++row)
            if (w[(row - mb.m0) * r + k] != 0.0f) {
              pt.cols.push_back(k);
              break;
            }
      } else {
        for (uint64_t k = 0; k < r; ++k) pt.cols.push_back(k);
      }
      rank += pt.cols.size();
      parts.push_back(std::move(pt));
    }
    if (rank == 0) {
      ++dropped;
      continue;
    }
    o.rank = rank;
    if (kohya) o.alpha = keep * static_cast<double>(o.rank);
    if (plain && !o.folded) {
      add_copy(keys.down, *f0.down);
      add_copy(keys.up, *f0.up);
      if (m0.dora) add_copy(u.name + ".dora_scale", *f0.dora);
      if (kohya) {
        if (f0.alpha && m0.alpha && *m0.alpha == *o.alpha)
          add_copy(keys.alpha, *f0.alpha);
        else
          add_alpha(keys.alpha, *o.alpha);
      }
    } else {
      // down: the parts' (selected) rows one after another; up: rows [o0, o1), each part's
      // columns its own, nonzero on the rows the part changes.
      Shape down_shape = f0.down->shape, up_shape = f0.up->shape;
      DType down_dt = f0.down->dtype, up_dt = f0.up->dtype;
      for (const Unit::Member& mb : u.members) {
        const Factors& f = factors[mb.module];
        Shape a = f.down->shape, b = f0.down->shape;
        a[0] = b[0] = 0;
        if (a != b || f.up->shape.size() != f0.up->shape.size())
          return Status(ErrorCode::kInvalidArgument,
                        fmt::format("modules {} and {} land on {} but their down factors differ "
                                    "in shape ({} and {}): they cannot be fused",
                                    m0.name, lf.modules[mb.module].name, u.tensor->name,
                                    shape_to_string(f0.down->shape),
                                    shape_to_string(f.down->shape)),
                        in_path);
        if (f.down->dtype != down_dt) down_dt = DType::F32;
        if (f.up->dtype != up_dt) up_dt = DType::F32;
      }
      down_shape[0] = rank;
      up_shape[0] = u.o1 - u.o0;
      up_shape[1] = rank;
      const uint64_t down_n = shape_numel(down_shape).value_or(0);
      const uint64_t up_n = shape_numel(up_shape).value_or(0);
      plan.tensors.push_back(
          {keys.down, down_dt, down_shape,
           std::make_unique<ComputedProducer>(
               [src, parts](std::vector<float>& out) -> Status {
                 out.clear();
                 std::vector<float> d;
                 for (const Part& p : parts) {
                   CKPT_RETURN_IF_ERROR(load_f32(*src, *p.down, p.module, d));
                   const uint64_t len = d.size() / p.down->shape[0];
                   const float g = static_cast<float>(std::sqrt(std::fabs(p.fold)));
                   for (uint64_t k : p.cols)
                     for (uint64_t j = 0; j < len; ++j) {
                       const float x = d[k * len + j];
                       out.push_back(p.fold == 1.0 ? x : x * g);
                     }
                 }
                 return Status::ok();
               },
               down_dt, down_n)});
      const uint64_t o0 = u.o0, o1 = u.o1;
      plan.tensors.push_back(
          {keys.up, up_dt, up_shape,
           std::make_unique<ComputedProducer>(
               [src, parts, o0, o1, rank](std::vector<float>& out) -> Status {
                 out.assign((o1 - o0) * rank, 0.0f);
                 std::vector<float> w;
                 uint64_t col = 0;
                 for (const Part& p : parts) {
                   CKPT_RETURN_IF_ERROR(load_f32(*src, *p.up, p.module, w));
                   const uint64_t r = p.up->shape[1];
                   const float g = static_cast<float>(
                       std::copysign(std::sqrt(std::fabs(p.fold)), p.fold));
                   for (uint64_t row = std::max(p.m0, o0); row < std::min(p.m1, o1); ++row)
                     for (size_t j = 0; j < p.cols.size(); ++j) {
                       const float x = w[(row - p.m0) * r + p.cols[j]];
                       out[(row - o0) * rank + col + j] = p.fold == 1.0 ? x : x * g;
                     }
                   col += p.cols.size();
                 }
                 return Status::ok();
               },
               up_dt, up_n)});
      if (kohya) add_alpha(keys.alpha, *o.alpha);
    }
    if (o.action == "fused") ++report.fused;
    else if (o.action == "split") ++report.split;
    else if (o.action == "kept") ++report.kept;
    else ++report.renamed;
    if (o.folded) ++report.folded;
    report.outputs.push_back(std::move(o));
  }
  if (dropped > 0)
    report.notes.push_back(fmt::format(
        "{} split part(s) not written: the input changes none of their rows", dropped));
  uint64_t missing_alpha = 0;
  for (const LoraModule& m : lf.modules)
    if (!m.alpha && (m.kind == LoraKind::kLora || m.kind == LoraKind::kTucker ||
                     m.kind == LoraKind::kLoha))
      ++missing_alpha;
  if (missing_alpha > 0)
    report.notes.push_back(fmt::format("{} modules had no alpha: read at scale 1", missing_alpha));
  if (report.folded > 0)
    report.notes.push_back(fmt::format(
        "{} modules got their scale (alpha/rank) multiplied into their factors{}", report.folded,
        kohya ? " (parts of different scales fused: alpha = rank)"
              : " (diffusers and PEFT loaders read no alpha tensor)"));
  if (!kohya)
    report.notes.push_back(
        "lora_adapter_metadata records each module's rank with lora_alpha = rank (scale 1) for "
        "diffusers");
  plan.metadata = lck.metadata;
  if (lck.format != FileFormat::kSafetensors) plan.metadata.emplace("format", "pt");
  // Hashes of the input's bytes and an adapter config of its scales no longer hold.
  for (const char* k : {"modelspec.hash_sha256", "sshs_model_hash", "sshs_legacy_hash",
                        "lora_adapter_metadata"})
    plan.metadata.erase(k);
  if (!kohya) {
    std::vector<std::pair<std::string, uint64_t>> written;
    for (const LoraConvertReport::Output& o : report.outputs) written.emplace_back(o.module, o.rank);
    plan.metadata["lora_adapter_metadata"] = detail::lora_adapter_metadata(written);
  }
  const std::string names = report.names_from.starts_with("layout ")
                                ? report.names_from
                                : std::filesystem::path(report.names_from).filename().string();
  plan.metadata["ckptkit.lora_convert"] = fmt::format(
      "{{\"file\":{},\"from\":{},\"to\":{},\"names\":{},\"modules_in\":{},"
      "\"modules_out\":{},\"split\":{},\"fused\":{},\"scale_folded\":{}}}",
      json_string(std::filesystem::path(in_path).filename().string()), json_string(report.from),
      json_string(report.to), json_string(names), report.modules_in, report.outputs.size(),
      report.split, report.fused, report.folded);
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "converting";
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
  return report;
}

}  // namespace ckptkit
