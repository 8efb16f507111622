// lora_names: every name each LoRA convention gives each weight of a base model (names.h).
//
// Built from the base, the way loaders build theirs: for every weight of every part, the module
// names each LoRA flavour would give it (kohya: the module path with '.' -> '_' under
// lora_unet_/lora_teN_, in diffusers names for the SD1/SD2 UNet; diffusers/PEFT: unet.,
// text_encoder[_N]. plus the diffusers path; ComfyUI: the base's own names). OpenCLIP encoders
// are addressed by Hugging Face names, their q/k/v as row slices of the fused in_proj.
#include "io/json.h"
#include "lora/names.h"

#include <fmt/format.h>

#include <charconv>
#include <optional>
#include <tuple>
#include <unordered_map>

#include "ckptkit/anatomy.h"
#include "model/unet_names.h"
#include "ops/parts.h"

namespace ckptkit::detail {
namespace {

LoraTarget whole(const TensorInfo* t) { return LoraTarget{t, 0, 0, {}}; }

/// A FLUX weight's diffusers name(s): its BFL local name (no ".weight") -> (name, first row,
/// rows); rows 0: the whole tensor. The fused q/k/v (and single blocks' MLP input) are slices.
std::vector<std::tuple<std::string, uint64_t, uint64_t>> flux_as_diffusers(std::string_view bfl,
                                                                           uint64_t hidden) {
  std::vector<std::tuple<std::string, uint64_t, uint64_t>> out;
  auto block = [&](std::string_view head) -> std::optional<std::pair<unsigned, std::string_view>> {
    if (!bfl.starts_with(head)) return std::nullopt;
    std::string_view rest = bfl.substr(head.size());
    unsigned n = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), n);
    if (ec != std::errc() || p == rest.data() + rest.size() || *p != '.') return std::nullopt;
    return std::make_pair(n, rest.substr(static_cast<size_t>(p - rest.data()) + 1));
  };
  const uint64_t H = hidden;
  if (auto b = block("double_blocks.")) {
    const std::string d = fmt::format("transformer_blocks.{}.", b->first);
    static constexpr std::pair<std::string_view, std::string_view> kWhole[] = {
        {"img_attn.proj", "attn.to_out.0"},     {"txt_attn.proj", "attn.to_add_out"},
        {"img_mlp.0", "ff.net.0.proj"},         {"img_mlp.2", "ff.net.2"},
        {"txt_mlp.0", "ff_context.net.0.proj"}, {"txt_mlp.2", "ff_context.net.2"},
        {"img_mod.lin", "norm1.linear"},        {"txt_mod.lin", "norm1_context.linear"},
    };
    for (const auto& [from, to] : kWhole)
      if (b->second == from) out.emplace_back(d + std::string(to), 0, 0);
    if (b->second == "img_attn.qkv")
      for (int k = 0; k < 3; ++k)
        out.emplace_back(d + std::string(k == 0   ? "attn.to_q"
                                         : k == 1 ? "attn.to_k"
                                                  : "attn.to_v"),
                         k * H, H);
    if (b->second == "txt_attn.qkv")
      for (int k = 0; k < 3; ++k)
        out.emplace_back(d + std::string(k == 0   ? "attn.add_q_proj"
                                         : k == 1 ? "attn.add_k_proj"
                                                  : "attn.add_v_proj"),
                         k * H, H);
    return out;
  }
  if (auto b = block("single_blocks.")) {
    const std::string d = fmt::format("single_transformer_blocks.{}.", b->first);
    if (b->second == "linear1") {
      out.emplace_back(d + "attn.to_q", 0, H);
      out.emplace_back(d + "attn.to_k", H, H);
      out.emplace_back(d + "attn.to_v", 2 * H, H);
      out.emplace_back(d + "proj_mlp", 3 * H, 4 * H);
    }
    if (b->second == "linear2") out.emplace_back(d + "proj_out", 0, 0);
    if (b->second == "modulation.lin") out.emplace_back(d + "norm.linear", 0, 0);
    return out;
  }
  static constexpr std::pair<std::string_view, std::string_view> kTop[] = {
      {"img_in", "x_embedder"},
      {"txt_in", "context_embedder"},
      {"time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"},
      {"time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"},
      {"vector_in.in_layer", "time_text_embed.text_embedder.linear_1"},
      {"vector_in.out_layer", "time_text_embed.text_embedder.linear_2"},
      {"guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"},
      {"guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"},
      {"final_layer.linear", "proj_out"},
  };
  for (const auto& [from, to] : kTop)
    if (bfl == from) out.emplace_back(std::string(to), 0, 0);
  return out;
}

/// An SD3/SD3.5 MMDiT weight's diffusers name(s) (diffusers' SD3 conversion): its local name
/// (no ".weight") -> (name, first row, rows); rows 0: the whole tensor. The fused q/k/v of each
/// attention are row slices. `rows` of the tensor tells the last block's context adaLN
/// (2·hidden rows, shift and scale only), which diffusers stores with its halves swapped:
/// returned with first row = UINT64_MAX, reported as not applied.
std::vector<std::tuple<std::string, uint64_t, uint64_t>> sd3_as_diffusers(std::string_view l,
                                                                          uint64_t hidden,
                                                                          uint64_t rows) {
  std::vector<std::tuple<std::string, uint64_t, uint64_t>> out;
  constexpr std::string_view kHead = "joint_blocks.";
  if (l.starts_with(kHead)) {
    std::string_view rest = l.substr(kHead.size());
    unsigned n = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), n);
    if (ec != std::errc() || p == rest.data() + rest.size() || *p != '.') return out;
    const std::string_view tail = rest.substr(static_cast<size_t>(p - rest.data()) + 1);
    const std::string d = fmt::format("transformer_blocks.{}.", n);
    const uint64_t H = hidden;
    auto qkv = [&](std::string_view q, std::string_view k, std::string_view v) {
      out.emplace_back(d + std::string(q), 0, H);
      out.emplace_back(d + std::string(k), H, H);
      out.emplace_back(d + std::string(v), 2 * H, H);
    };
    if (tail == "x_block.attn.qkv") qkv("attn.to_q", "attn.to_k", "attn.to_v");
    if (tail == "x_block.attn2.qkv") qkv("attn2.to_q", "attn2.to_k", "attn2.to_v");
    if (tail == "context_block.attn.qkv") qkv("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj");
    static constexpr std::pair<std::string_view, std::string_view> kWhole[] = {
        {"x_block.attn.proj", "attn.to_out.0"},
        {"x_block.attn2.proj", "attn2.to_out.0"},
        {"context_block.attn.proj", "attn.to_add_out"},
        {"x_block.mlp.fc1", "ff.net.0.proj"},
        {"x_block.mlp.fc2", "ff.net.2"},
        {"context_block.mlp.fc1", "ff_context.net.0.proj"},
        {"context_block.mlp.fc2", "ff_context.net.2"},
        {"x_block.adaLN_modulation.1", "norm1.linear"},
    };
    for (const auto& [from, to] : kWhole)
      if (tail == from) out.emplace_back(d + std::string(to), 0, 0);
    if (tail == "context_block.adaLN_modulation.1")
      out.emplace_back(d + "norm1_context.linear", rows == 2 * H ? UINT64_MAX : 0, 0);
    return out;
  }
  static constexpr std::pair<std::string_view, std::string_view> kTop[] = {
      {"x_embedder.proj", "pos_embed.proj"},
      {"context_embedder", "context_embedder"},
      {"t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"},
      {"t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"},
      {"y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"},
      {"y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"},
      {"final_layer.linear", "proj_out"},
  };
  for (const auto& [from, to] : kTop)
    if (l == from) out.emplace_back(std::string(to), 0, 0);
  if (l == "final_layer.adaLN_modulation.1") out.emplace_back("norm_out.linear", UINT64_MAX, 0);
  return out;
}

/// XLabs' (x-flux) FLUX LoRA processors: double_blocks.N.processor.{qkv,proj}_lora{1,2} on the
/// image (1) and text (2) attention. "" when the BFL name has none.
std::string xlabs_name(std::string_view bfl) {
  constexpr std::string_view kHead = "double_blocks.";
  if (!bfl.starts_with(kHead)) return "";
  const size_t dot = bfl.find('.', kHead.size());
  if (dot == std::string_view::npos) return "";
  const std::string block(bfl.substr(0, dot));
  const std::string_view tail = bfl.substr(dot + 1);
  if (tail == "img_attn.qkv") return block + ".processor.qkv_lora1";
  if (tail == "txt_attn.qkv") return block + ".processor.qkv_lora2";
  if (tail == "img_attn.proj") return block + ".processor.proj_lora1";
  if (tail == "txt_attn.proj") return block + ".processor.proj_lora2";
  return "";
}

std::string underscored(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c == '.') c = '_';
  return out;
}

std::string_view without_weight(std::string_view n) {
  return n.ends_with(".weight") ? n.substr(0, n.size() - 7) : std::string_view();
}

/// OpenCLIP text-transformer local name (no ".weight") -> Hugging Face CLIP names, with the
/// q/k/v rows of the fused in_proj.
std::vector<std::pair<std::string, int>> openclip_as_hf(std::string_view oc) {
  std::vector<std::pair<std::string, int>> out;  // (hf name, q/k/v index or -1)
  constexpr std::string_view kHead = "transformer.resblocks.";
  if (!oc.starts_with(kHead)) return out;
  std::string_view rest = oc.substr(kHead.size());
  unsigned layer = 0;
  auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), layer);
  if (ec != std::errc() || p == rest.data() + rest.size() || *p != '.') return out;
  const std::string_view tail = rest.substr(static_cast<size_t>(p - rest.data()) + 1);
  const std::string hf = fmt::format("text_model.encoder.layers.{}.", layer);
  if (tail == "attn.in_proj") {
    out.emplace_back(hf + "self_attn.q_proj", 0);
    out.emplace_back(hf + "self_attn.k_proj", 1);
    out.emplace_back(hf + "self_attn.v_proj", 2);
  } else if (tail == "attn.out_proj") {
    out.emplace_back(hf + "self_attn.out_proj", -1);
  } else if (tail == "mlp.c_fc") {
    out.emplace_back(hf + "mlp.fc1", -1);
  } else if (tail == "mlp.c_proj") {
    out.emplace_back(hf + "mlp.fc2", -1);
  }
  return out;
}

}  // namespace

std::vector<LoraName> lora_names(const Checkpoint& base, const Anatomy& a) {
  std::vector<LoraName> out;
  auto add = [&](std::string key, LoraNaming n, LoraTarget t) {
    out.push_back(LoraName{std::move(key), n, std::move(t)});
  };
  const bool flux = a.family == "flux";
  const bool sd1like = a.family == "sd1" || a.family == "sd2";
  for (const Component& c : a.components) {
    if (c.role != Role::kDiffusionModel && c.role != Role::kTextEncoder) continue;
    std::vector<std::string> locals;
    for (size_t i : c.tensors) locals.push_back(component_local_name(c, base.tensors[i].name));
    std::optional<UNetNames> unet;
    if (c.kind == PartKind::kUNet && c.naming == Naming::kLdm) unet.emplace(locals);
    // The kohya and diffusers prefixes of this part, the one its own tools write first.
    std::vector<std::string> kohya, diffusers;
    switch (c.kind) {
      case PartKind::kUNet:
      case PartKind::kMMDiT:
      case PartKind::kFluxDiT:
        kohya = {"lora_unet_"};
        diffusers = {c.kind == PartKind::kUNet ? "unet." : "transformer."};
        break;
      case PartKind::kClipL:
      case PartKind::kClipH:
        kohya = sd1like ? std::vector<std::string>{"lora_te_", "lora_te1_"}
                        : std::vector<std::string>{"lora_te1_", "lora_te_"};
        diffusers = {"text_encoder."};
        break;
      case PartKind::kClipG:
        kohya = {"lora_te2_"};
        diffusers = {"text_encoder_2."};
        break;
      case PartKind::kT5xxl:
        kohya = {"lora_te3_"};
        if (flux) kohya.push_back("lora_te2_");  // OneTrainer's FLUX files
        diffusers = {flux ? "text_encoder_2." : "text_encoder_3."};
        break;
      default:
        break;
    }
    for (size_t k = 0; k < c.tensors.size(); ++k) {
      const TensorInfo& t = base.tensors[c.tensors[k]];
      std::string_view local = without_weight(locals[k]);
      // OpenCLIP's fused projection is "attn.in_proj_weight" (an attribute, not a module).
      if (c.naming == Naming::kOpenClip && locals[k].ends_with(".attn.in_proj_weight"))
        local = std::string_view(locals[k]).substr(0, locals[k].size() - 7);
      if (local.empty() || t.shape.size() < 2) continue;
      // ComfyUI's own names: the base's, and without a leading "model.".
      const std::string full(t.name.substr(0, t.name.size() - (locals[k].size() - local.size())));
      add(full, LoraNaming::kComfy, whole(&t));
      if (full.starts_with("model.")) add(full.substr(6), LoraNaming::kComfy, whole(&t));
      if (c.naming == Naming::kOpenClip) {
        for (const auto& [hf, qkv] : openclip_as_hf(local)) {
          LoraTarget tg = whole(&t);
          if (qkv >= 0 && t.shape[0] % 3 == 0) {
            tg.rows = t.shape[0] / 3;
            tg.row0 = tg.rows * static_cast<uint64_t>(qkv);
          }
          for (const std::string& p : kohya) add(p + underscored(hf), LoraNaming::kKohya, tg);
          for (const std::string& p : diffusers) add(p + hf, LoraNaming::kDiffusers, tg);
        }
        continue;
      }
      std::string named(local);
      if (c.kind == PartKind::kFluxDiT && c.naming == Naming::kBfl && t.shape.size() == 2) {
        // diffusers/PEFT (transformer.), OneTrainer (lora_transformer_), SimpleTuner LyCORIS
        // (lycoris_): diffusers paths, q/k/v as slices of the fused BFL tensors.
        for (const auto& [dn, row0, rows] : flux_as_diffusers(local, t.shape[1])) {
          const LoraTarget tg{&t, row0, rows, ""};
          add("transformer." + dn, LoraNaming::kDiffusers, tg);
          add("lora_transformer_" + underscored(dn), LoraNaming::kOneTrainer, tg);
          add("lycoris_" + underscored(dn), LoraNaming::kLycoris, tg);
        }
        if (std::string x = xlabs_name(local); !x.empty())
          add(x, LoraNaming::kXlabs, whole(&t));
        if (local == "final_layer.adaLN_modulation.1") {
          const LoraTarget tg{
              &t, 0, 0,
              "diffusers' norm_out.linear holds (scale, shift) where the BFL "
              "tensor holds (shift, scale); the swapped halves are not applied yet"};
          add("transformer.norm_out.linear", LoraNaming::kDiffusers, tg);
          add("lora_transformer_norm_out_linear", LoraNaming::kOneTrainer, tg);
        }
      }
      if (c.kind == PartKind::kMMDiT && t.shape.size() >= 2) {
        // diffusers/PEFT (transformer.): diffusers paths, q/k/v as row slices.
        const uint64_t hidden = t.shape[1];
        for (const auto& [dn, row0, rows] : sd3_as_diffusers(local, hidden, t.shape[0])) {
          LoraTarget tg{&t, row0, rows, ""};
          if (row0 == UINT64_MAX)
            tg = LoraTarget{&t, 0, 0,
                            "diffusers stores this adaLN projection with its (shift, scale) "
                            "halves swapped; the swapped halves are not applied yet"};
          add("transformer." + dn, LoraNaming::kDiffusers, tg);
        }
      }
      if (unet) {
        auto d = unet->to_diffusers(std::string(local) + ".weight");
        if (d) {
          const std::string dn(without_weight(*d));
          add("unet." + dn, LoraNaming::kDiffusers, whole(&t));
          // kohya names SD1/SD2's UNet in diffusers paths, SDXL's in SGM ones.
          if (sd1like) add("lora_unet_" + underscored(dn), LoraNaming::kKohya, whole(&t));
        }
        if (!sd1like) add("lora_unet_" + underscored(local), LoraNaming::kKohya, whole(&t));
        continue;
      }
      for (const std::string& p : kohya) add(p + underscored(named), LoraNaming::kKohya, whole(&t));
      // "transformer." + an MMDiT's or a BFL DiT's own path is no diffusers name (diffusers
      // renames those models' weights, above), but some files use it: matched, never written.
      const bool own_paths = c.kind == PartKind::kMMDiT || c.kind == PartKind::kFluxDiT;
      for (const std::string& p : diffusers)
        add(p + named, own_paths ? LoraNaming::kComfy : LoraNaming::kDiffusers, whole(&t));
    }
  }
  return out;
}

LoraNaming naming_of(LoraFormat f) {
  return f == LoraFormat::kKohya ? LoraNaming::kKohya : LoraNaming::kDiffusers;
}

LoraFactorKeys lora_factor_keys(LoraFormat f, const std::string& module) {
  switch (f) {
    case LoraFormat::kKohya:
      return {module + ".lora_down.weight", module + ".lora_up.weight", module + ".alpha"};
    case LoraFormat::kPeft:
      // PEFT's state dict (get_peft_model_state_dict), under diffusers' component prefixes.
      return {module + ".lora_A.weight", module + ".lora_B.weight", ""};
    case LoraFormat::kDiffusers: {
      // What diffusers' save_lora_weights holds: the UNet pipelines' training scripts pass the
      // PEFT state dict through convert_state_dict_to_diffusers (PEFT_TO_DIFFUSERS in
      // diffusers/utils/state_dict_utils.py: text-encoder q/k/v/out projections ->
      // lora_linear_layer.down/up, attention to_q/to_k/to_v/to_out.0 -> lora.down/up, the rest
      // kept as lora_A/lora_B); the transformer pipelines (SD3, FLUX) save the PEFT keys as they
      // are, and their loader reads no other (convert_unet_state_dict_to_peft).
      if (!module.starts_with("transformer.")) {
        for (std::string_view p : {".q_proj", ".k_proj", ".v_proj", ".out_proj"})
          if (module.ends_with(p))
            return {module + ".lora_linear_layer.down.weight",
                    module + ".lora_linear_layer.up.weight", ""};
        for (std::string_view p : {"to_k", "to_q", "to_v", "to_out.0"})
          if (module.ends_with(p))
            return {module + ".lora.down.weight", module + ".lora.up.weight", ""};
      }
      return {module + ".lora_A.weight", module + ".lora_B.weight", ""};
    }
  }
  return {};
}

/// lora_adapter_metadata for a diffusers or PEFT output whose scales are all folded (scale 1):
/// per component r = lora_alpha = the most common rank, the others in rank_pattern and
/// alpha_pattern, target_modules every module; what diffusers' get_peft_kwargs would infer,
/// except that it sets lora_alpha once from the first module's rank, which applies a file of
/// mixed ranks at (that rank / rank) to the other modules.
std::string lora_adapter_metadata(const std::vector<std::pair<std::string, uint64_t>>& modules) {
  std::map<std::string, std::vector<std::pair<std::string, uint64_t>>> by_component;
  for (const auto& [name, rank] : modules) {
    const size_t dot = name.find('.');
    if (dot == std::string::npos) continue;
    by_component[name.substr(0, dot)].emplace_back(name.substr(dot + 1), rank);
  }
  std::string out = "{";
  auto quoted = [](std::string_view s) {
    std::string q;
    append_json_string(q, s);
    return q;
  };
  for (const auto& [comp, mods] : by_component) {
    std::map<uint64_t, uint64_t> count;
    for (const auto& [n, r] : mods) ++count[r];
    uint64_t common = 0, most = 0;
    for (const auto& [r, c] : count)
      if (c > most) common = r, most = c;
    std::string pattern, targets;
    for (const auto& [n, r] : mods) {
      targets += fmt::format("{}{}", targets.empty() ? "" : ",", quoted(n));
      if (r != common) pattern += fmt::format("{}{}:{}", pattern.empty() ? "" : ",", quoted(n), r);
    }
    out += fmt::format(
        "{}\"{c}.alpha_pattern\":{{{p}}},\"{c}.lora_alpha\":{r},\"{c}.r\":{r},"
        "\"{c}.rank_pattern\":{{{p}}},\"{c}.target_modules\":[{t}]",
        out.size() > 1 ? "," : "", fmt::arg("c", comp), fmt::arg("p", pattern),
        fmt::arg("r", common), fmt::arg("t", targets));
  }
  return out + "}";
}

}  // namespace ckptkit::detail
