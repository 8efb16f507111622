// read_lora: a LoRA file's keys grouped into modules (ckptkit/lora.h, docs/lora.md).
#include "ckptkit/lora.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string_view>
#include <unordered_map>

#include "lora/open.h"
#include "ops/input.h"

namespace ckptkit {
namespace {

enum class Factor : uint8_t {
  kDown, kUp, kMid, kAlpha, kDora, kUpBias,
  kHadaW1A, kHadaW1B, kHadaW2A, kHadaW2B, kHadaT1, kHadaT2,
  kLokrW1, kLokrW1A, kLokrW1B, kLokrW2, kLokrW2A, kLokrW2B, kLokrT2,
  kDiff, kDiffB,
  kCount,
};

struct Suffix {
  std::string_view text;
  Factor factor;
  std::string_view style;  ///< the key style it shows ("" when every style uses it)
};

// Each convention's factor names (sources in docs/lora.md). Matched longest first.
constexpr Suffix kSuffixes[] = {
    {".lora_linear_layer.down.weight", Factor::kDown, "diffusers"},
    {".lora_linear_layer.up.weight", Factor::kUp, "diffusers"},
    {".lora_down.weight", Factor::kDown, ""},
    {".lora_up.weight", Factor::kUp, ""},
    {".lora_mid.weight", Factor::kMid, ""},
    {".lora.down.weight", Factor::kDown, "diffusers"},
    {".lora.up.weight", Factor::kUp, "diffusers"},
    {".lora_A.weight", Factor::kDown, "peft"},
    {".lora_B.weight", Factor::kUp, "peft"},
    {".lora_B.bias", Factor::kUpBias, "peft"},
    {".down.weight", Factor::kDown, "xlabs"},
    {".up.weight", Factor::kUp, "xlabs"},
    {".dora_scale", Factor::kDora, ""},
    {".lora_magnitude_vector.weight", Factor::kDora, "peft"},
    {".lora_magnitude_vector", Factor::kDora, "peft"},
    {".alpha", Factor::kAlpha, ""},
    {".hada_w1_a", Factor::kHadaW1A, "lycoris"},
    {".hada_w1_b", Factor::kHadaW1B, "lycoris"},
    {".hada_w2_a", Factor::kHadaW2A, "lycoris"},
    {".hada_w2_b", Factor::kHadaW2B, "lycoris"},
    {".hada_t1", Factor::kHadaT1, "lycoris"},
    {".hada_t2", Factor::kHadaT2, "lycoris"},
    {".lokr_w1_a", Factor::kLokrW1A, "lycoris"},
    {".lokr_w1_b", Factor::kLokrW1B, "lycoris"},
    {".lokr_w2_a", Factor::kLokrW2A, "lycoris"},
    {".lokr_w2_b", Factor::kLokrW2B, "lycoris"},
    {".lokr_w1", Factor::kLokrW1, "lycoris"},
    {".lokr_w2", Factor::kLokrW2, "lycoris"},
    {".lokr_t2", Factor::kLokrT2, "lycoris"},
    {".diff_b", Factor::kDiffB, "lycoris"},
    {".diff", Factor::kDiff, "lycoris"},
};

struct Prefix {
  std::string_view text;
  LoraTarget target;
  std::string_view style;
};

// Longest first where one is a prefix of another.
constexpr Prefix kPrefixes[] = {
    {"lora_unet_", LoraTarget::kDiffusionModel, "kohya"},
    {"lora_te1_", LoraTarget::kTextEncoder1, "kohya"},
    {"lora_te2_", LoraTarget::kTextEncoder2, "kohya"},
    {"lora_te3_", LoraTarget::kTextEncoder3, "kohya"},
    {"lora_te_", LoraTarget::kTextEncoder1, "kohya"},
    {"lora_transformer_", LoraTarget::kDiffusionModel, "kohya"},  // OneTrainer
    {"lycoris_", LoraTarget::kDiffusionModel, "lycoris"},          // SimpleTuner LyCORIS
    {"model.diffusion_model.", LoraTarget::kDiffusionModel, "comfyui"},
    {"diffusion_model.", LoraTarget::kDiffusionModel, "comfyui"},
    {"text_encoders.clip_l.", LoraTarget::kTextEncoder1, "comfyui"},
    {"text_encoders.clip_g.", LoraTarget::kTextEncoder2, "comfyui"},
    {"text_encoders.t5xxl.", LoraTarget::kTextEncoder3, "comfyui"},
    {"text_encoder_2.", LoraTarget::kTextEncoder2, ""},
    {"text_encoder_3.", LoraTarget::kTextEncoder3, ""},
    {"text_encoder.", LoraTarget::kTextEncoder1, ""},
    {"unet.", LoraTarget::kDiffusionModel, ""},
    {"transformer.", LoraTarget::kDiffusionModel, ""},
    {"base_model.model.", LoraTarget::kDiffusionModel, ""},
    // XLabs and BFL control LoRAs use the bare BFL names.
    {"double_blocks.", LoraTarget::kDiffusionModel, ""},
    {"single_blocks.", LoraTarget::kDiffusionModel, ""},
};

struct Parts {
  std::array<int64_t, static_cast<size_t>(Factor::kCount)> at;
  Parts() { at.fill(-1); }
  int64_t operator[](Factor f) const { return at[static_cast<size_t>(f)]; }
  bool has(Factor f) const { return (*this)[f] >= 0; }
};

std::string alpha_text(double v) { return fmt::format("{:g}", v); }

}  // namespace

std::string_view lora_kind_name(LoraKind k) {
  switch (k) {
    case LoraKind::kLora:
      return "lora";
    case LoraKind::kTucker:
      return "locon-tucker";
    case LoraKind::kLoha:
      return "loha";
    case LoraKind::kLokr:
      return "lokr";
    case LoraKind::kFull:
      return "full";
  }
  return "lora";
}

std::string_view lora_target_name(LoraTarget t) {
  switch (t) {
    case LoraTarget::kDiffusionModel:
      return "diffusion_model";
    case LoraTarget::kTextEncoder1:
      return "text_encoder_1";
    case LoraTarget::kTextEncoder2:
      return "text_encoder_2";
    case LoraTarget::kTextEncoder3:
      return "text_encoder_3";
    case LoraTarget::kUnknown:
      break;
  }
  return "unknown";
}

LoraFile read_lora(const Checkpoint& ck, const InputFile* file) {
  LoraFile out;
  std::unordered_map<std::string, size_t> index;  // module name -> position
  std::vector<Parts> parts;
  std::map<std::string_view, bool> styles;
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const std::string& key = ck.tensors[i].name;
    const Suffix* hit = nullptr;
    for (const Suffix& s : kSuffixes)
      if (key.size() > s.text.size() && key.ends_with(s.text) &&
          (hit == nullptr || s.text.size() > hit->text.size()))
        hit = &s;
    // XLabs' bare .down/.up only inside its processor modules.
    if (hit != nullptr && hit->style == "xlabs" && key.find(".processor.") == std::string::npos)
      hit = nullptr;
    if (hit == nullptr) {
      out.unknown_keys.push_back(key);
      continue;
    }
    std::string module = key.substr(0, key.size() - hit->text.size());
    auto [it, added] = index.emplace(module, parts.size());
    if (added) {
      parts.emplace_back();
      LoraModule m;
      m.name = module;
      for (const Prefix& p : kPrefixes)
        if (module.starts_with(p.text)) {
          m.target = p.target;
          if (!p.style.empty()) styles[p.style] = true;
          break;
        }
      out.modules.push_back(std::move(m));
    }
    Parts& pt = parts[it->second];
    if (pt.has(hit->factor)) {
      out.errors.push_back({key, "a second tensor for the same factor of this module"});
      continue;
    }
    pt.at[static_cast<size_t>(hit->factor)] = static_cast<int64_t>(i);
    out.modules[it->second].tensors.push_back(i);
    if (!hit->style.empty()) styles[hit->style] = true;
  }

  for (size_t mi = 0; mi < out.modules.size(); ++mi) {
    LoraModule& m = out.modules[mi];
    const Parts& p = parts[mi];
    auto shape = [&](Factor f) -> const Shape& { return ck.tensors[static_cast<size_t>(p[f])].shape; };
    auto bad = [&](std::string msg) { out.errors.push_back({m.name, std::move(msg)}); };
    m.dora = p.has(Factor::kDora);
    if (p.has(Factor::kHadaW1A) || p.has(Factor::kHadaW1B) || p.has(Factor::kHadaW2A) ||
        p.has(Factor::kHadaW2B)) {
      m.kind = LoraKind::kLoha;
      if (!p.has(Factor::kHadaW1A) || !p.has(Factor::kHadaW1B) || !p.has(Factor::kHadaW2A) ||
          !p.has(Factor::kHadaW2B)) {
        bad("LoHa needs hada_w1_a, hada_w1_b, hada_w2_a and hada_w2_b");
        continue;
      }
      const Shape &a1 = shape(Factor::kHadaW1A), &b1 = shape(Factor::kHadaW1B),
                  &a2 = shape(Factor::kHadaW2A), &b2 = shape(Factor::kHadaW2B);
      if (a1.size() != 2 || b1.size() != 2 || a2.size() != 2 || b2.size() != 2) {
        bad("LoHa factors must be matrices");
        continue;
      }
      const bool tucker = p.has(Factor::kHadaT1);
      m.rank = b1[0];
      if (tucker) {
        // w1_a (r, out), w1_b (r, in), t1 (r, r, kh, kw).
        const Shape& t1 = shape(Factor::kHadaT1);
        if (t1.size() != 4 || t1[0] != a1[0] || t1[1] != b1[0] || a1 != a2 || b1 != b2)
          bad("LoHa Tucker factors disagree in shape");
        else
          m.delta_shape = {a1[1], b1[1], t1[2], t1[3]}, m.conv = true;
      } else if (a1[1] != b1[0] || a2[1] != b2[0] || a1[0] != a2[0] || b1[1] != b2[1]) {
        bad(fmt::format("LoHa factors disagree: w1 {}x{} · {}x{}, w2 {}x{} · {}x{}", a1[0], a1[1],
                        b1[0], b1[1], a2[0], a2[1], b2[0], b2[1]));
      } else {
        m.delta_shape = {a1[0], b1[1]};
      }
    } else if (p.has(Factor::kLokrW1) || p.has(Factor::kLokrW1A) || p.has(Factor::kLokrW2) ||
               p.has(Factor::kLokrW2A)) {
      m.kind = LoraKind::kLokr;
      // Each side is a full factor or a low-rank pair; ΔW = w1 ⊗ w2.
      auto side = [&](Factor full, Factor fa, Factor fb, Shape& s, uint64_t& rank) {
        if (p.has(full)) {
          s = shape(full);
          return true;
        }
        if (!p.has(fa) || !p.has(fb)) return false;
        const Shape &a = shape(fa), &b = shape(fb);
        if (a.size() != 2 || b.size() < 2 || a[1] != b[0]) return false;
        s = b;
        s[0] = a[0];
        rank = a[1];
        return true;
      };
      Shape s1, s2;
      uint64_t r1 = 0, r2 = 0;
      // With a Tucker core t2 (r, r, kh, kw), w2_a is (r, out) and w2_b (r, in): w2 is
      // (out, in, kh, kw).
      auto tucker_side = [&](Shape& s, uint64_t& rank) {
        if (!p.has(Factor::kLokrT2) || !p.has(Factor::kLokrW2A) || !p.has(Factor::kLokrW2B))
          return false;
        const Shape &t = shape(Factor::kLokrT2), &a = shape(Factor::kLokrW2A),
                    &b = shape(Factor::kLokrW2B);
        if (t.size() != 4 || a.size() != 2 || b.size() != 2 || t[0] != a[0] || t[1] != b[0])
          return false;
        s = {a[1], b[1], t[2], t[3]};
        rank = t[0];
        return true;
      };
      const bool w2_ok = p.has(Factor::kLokrT2)
                             ? tucker_side(s2, r2)
                             : side(Factor::kLokrW2, Factor::kLokrW2A, Factor::kLokrW2B, s2, r2);
      if (!side(Factor::kLokrW1, Factor::kLokrW1A, Factor::kLokrW1B, s1, r1) || !w2_ok ||
          s1.size() != 2 || s2.size() < 2) {
        bad("LoKr needs lokr_w1 (or lokr_w1_a and lokr_w1_b) and lokr_w2 (or lokr_w2_a and "
            "lokr_w2_b) whose shapes agree");
        continue;
      }
      // ComfyUI's and LyCORIS's rank for alpha: the w2 pair's when w2 is decomposed.
      m.rank = r2 ? r2 : r1;
      m.delta_shape = {s1[0] * s2[0], s1[1] * s2[1]};
      for (size_t d = 2; d < s2.size(); ++d) m.delta_shape.push_back(s2[d]);
      m.conv = s2.size() == 4;
    } else if (p.has(Factor::kDiff)) {
      m.kind = LoraKind::kFull;
      m.delta_shape = shape(Factor::kDiff);
      m.conv = m.delta_shape.size() == 4;
    } else if (p.has(Factor::kDown) || p.has(Factor::kUp)) {
      m.kind = p.has(Factor::kMid) ? LoraKind::kTucker : LoraKind::kLora;
      if (!p.has(Factor::kDown) || !p.has(Factor::kUp)) {
        bad(p.has(Factor::kDown) ? "has a down factor but no up factor"
                                 : "has an up factor but no down factor");
        continue;
      }
      const Shape &d = shape(Factor::kDown), &u = shape(Factor::kUp);
      if (d.size() < 2 || u.size() < 2 || d.size() != u.size()) {
        bad(fmt::format("down {}-D and up {}-D: both must be matrices or both convolutions",
                        d.size(), u.size()));
        continue;
      }
      m.rank = d[0];
      m.conv = d.size() == 4;
      if (m.kind == LoraKind::kTucker) {
        const Shape& mid = shape(Factor::kMid);
        if (mid.size() != 4 || mid[0] != u[1] || mid[1] != d[0]) {
          bad("lora_mid disagrees with lora_up/lora_down");
          continue;
        }
        m.delta_shape = {u[0], d[1], mid[2], mid[3]};
      } else if (u[1] != d[0]) {
        bad(fmt::format("the up factor has {} columns, the down factor {} rows (the rank)", u[1],
                        d[0]));
        continue;
      } else {
        m.delta_shape = {u[0], d[1]};
        if (m.conv) {
          if (u[2] != 1 || u[3] != 1) {
            bad("a convolution's up factor must be 1x1");
            continue;
          }
          m.delta_shape.push_back(d[2]);
          m.delta_shape.push_back(d[3]);
        }
      }
    } else {
      bad("only alpha or dora_scale: no factors");
      continue;
    }
    if (m.rank == 0 && m.kind != LoraKind::kFull && m.kind != LoraKind::kLokr)
      bad("rank 0");
    if (p.has(Factor::kAlpha)) {
      const TensorInfo& t = ck.tensors[static_cast<size_t>(p[Factor::kAlpha])];
      if (t.numel() != 1) {
        bad(fmt::format("alpha holds {} values; it must be one", t.numel()));
      } else if (file != nullptr) {
        auto v = detail::read_small_values(ck, *file, t, 1);
        if (v && std::isfinite((*v)[0]))
          m.alpha = (*v)[0];
        else if (v)
          bad("alpha is not a finite number");
      }
    }
  }

  for (const LoraModule& m : out.modules) {
    ++out.kinds[m.kind];
    ++out.targets[m.target];
    if (m.rank) ++out.ranks[m.rank];
    if (m.conv) ++out.conv_modules;
    if (m.dora) ++out.dora_modules;
    const bool low_rank = m.kind == LoraKind::kLora || m.kind == LoraKind::kTucker ||
                          m.kind == LoraKind::kLoha;
    if (m.alpha) {
      ++out.alphas[alpha_text(*m.alpha)];
    } else if (low_rank) {
      ++out.alphas["none"];
      ++out.missing_alpha;
    }
  }
  const bool lycoris = styles.count("lycoris") > 0;
  std::vector<std::string_view> named;
  for (std::string_view s : {"kohya", "comfyui", "peft", "diffusers", "xlabs"})
    if (styles.count(s)) named.push_back(s);
  if (named.empty())
    out.format = lycoris ? "lycoris" : "unknown";
  else if (named.size() == 1)
    out.format = named[0] == "kohya" && lycoris ? "lycoris" : std::string(named[0]);
  else
    out.format = "mixed";

  // Training facts from kohya's ss_* keys and ModelSpec.
  auto get = [&](std::string_view k) -> std::string {
    auto it = ck.metadata.find(std::string(k));
    return it == ck.metadata.end() ? std::string() : it->second;
  };
  LoraTraining& tr = out.training;
  tr.base_model = get("ss_sd_model_name");
  if (tr.base_model.empty()) tr.base_model = get("ss_base_model_version");
  tr.network = get("ss_network_module");
  tr.network_dim = get("ss_network_dim");
  tr.network_alpha = get("ss_network_alpha");
  tr.resolution = get("ss_resolution");
  tr.epochs = get("ss_epoch");
  if (tr.epochs.empty()) tr.epochs = get("ss_num_epochs");
  tr.steps = get("ss_steps");
  tr.trigger = get("modelspec.trigger_phrase");
  tr.output_name = get("ss_output_name");
  if (std::string tags = get("ss_tag_frequency"); !tags.empty()) {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(tags).get(doc) == simdjson::SUCCESS && doc.is_object()) {
      std::map<std::string, uint64_t> sum;
      for (auto [dataset, freq] : doc.get_object()) {
        (void)dataset;
        simdjson::dom::object o;
        if (freq.get_object().get(o) != simdjson::SUCCESS) continue;
        for (auto [tag, count] : o) {
          int64_t n = 0;
          if (count.get_int64().get(n) == simdjson::SUCCESS && n > 0)
            sum[std::string(tag)] += static_cast<uint64_t>(n);
        }
      }
      std::vector<std::pair<std::string, uint64_t>> v(sum.begin(), sum.end());
      std::stable_sort(v.begin(), v.end(),
                       [](const auto& a, const auto& b) { return a.second > b.second; });
      if (v.size() > 10) v.resize(10);
      tr.top_tags = std::move(v);
    }
  }
  return out;
}

namespace detail {

Result<OpenedLora> open_lora(const std::string& path, const std::string& out_path,
                             const OpenOptions& options) {
  OpenedLora out;
  CKPT_ASSIGN_OR_RETURN(out.input, OpenedInput::open(path, out_path, options));
  const Checkpoint& ck = out.input->checkpoint();
  out.anatomy = analyze(ck, &out.input->file());
  if (out.anatomy.layout != "lora")
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("not a LoRA: it is {}", out.anatomy.architecture), path);
  out.lora = read_lora(ck, &out.input->file());
  const LoraFile& lf = out.lora;
  if (!lf.errors.empty())
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{} module(s) are inconsistent (first: {}: {}); `ckptkit inspect` "
                              "lists them",
                              lf.errors.size(), lf.errors[0].key, lf.errors[0].message),
                  path);
  return out;
}

}  // namespace detail
}  // namespace ckptkit
