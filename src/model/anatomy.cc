// Detection from names and shapes. All model knowledge is in the tables at the top; the code
// below only applies them:
//
//   1. every key is assigned to a component by the prefix table (longest prefix wins); keys
//      with no known prefix form the "bare" group of a standalone part;
//   2. each group's kind (UNet, MMDiT, FLUX DiT, CLIP-L/G/H, T5, VAE) comes from the first
//      kind signature all of whose checks hold on its names with the prefix removed;
//   3. the diffusion model's architecture comes from the first architecture signature that
//      holds, then its variants (input width, markers) and metadata (distillation, v-pred).
#include "ckptkit/anatomy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <unordered_map>

#include "model/families.h"
#include "model/schedule.h"

namespace ckptkit {
namespace detail {
namespace {

// --- tables ------------------------------------------------------------------------------

/// One signature check on a name (relative to the component prefix). `shape`: nullptr means
/// the tensor must exist with any shape, "-" that it must not exist, otherwise comma-separated
/// dimensions where "*" matches any size.
struct Check {
  const char* key;
  const char* shape = nullptr;
};

struct KindRule {
  PartKind kind;
  Naming naming;
  std::vector<Check> checks;
};

const std::vector<KindRule>& kind_rules() {
  static const std::vector<KindRule> rules = {
      {PartKind::kUNet,
       Naming::kLdm,
       {{"input_blocks.0.0.weight"}, {"time_embed.0.weight"}, {"out.2.weight"}}},
      {PartKind::kUNet,
       Naming::kDiffusers,
       {{"conv_in.weight"},
        {"time_embedding.linear_1.weight"},
        {"down_blocks.0.resnets.0.conv1.weight"}}},
      {PartKind::kMMDiT,
       Naming::kLdm,
       {{"x_embedder.proj.weight"}, {"joint_blocks.0.x_block.attn.qkv.weight"}}},
      {PartKind::kMMDiT,
       Naming::kDiffusers,
       {{"pos_embed.proj.weight"}, {"transformer_blocks.0.attn.add_q_proj.weight"}}},
      {PartKind::kFluxDiT,
       Naming::kBfl,
       {{"img_in.weight"}, {"double_blocks.0.img_attn.qkv.weight"}}},
      {PartKind::kFluxDiT,
       Naming::kDiffusers,
       {{"x_embedder.weight"}, {"single_transformer_blocks.0.attn.to_q.weight"}}},
      {PartKind::kClipL,
       Naming::kHf,
       {{"text_model.embeddings.token_embedding.weight", "49408,768"},
        {"text_model.encoder.layers.11.self_attn.q_proj.weight", "768,768"}}},
      {PartKind::kClipG,
       Naming::kHf,
       {{"text_model.embeddings.token_embedding.weight", "49408,1280"},
        {"text_model.encoder.layers.31.self_attn.q_proj.weight", "1280,1280"}}},
      {PartKind::kClipH,
       Naming::kHf,
       {{"text_model.embeddings.token_embedding.weight", "49408,1024"},
        {"text_model.encoder.layers.23.self_attn.q_proj.weight", "1024,1024"}}},
      {PartKind::kClipG,
       Naming::kOpenClip,
       {{"token_embedding.weight", "49408,1280"},
        {"transformer.resblocks.31.attn.in_proj_weight", "3840,1280"}}},
      {PartKind::kClipH,
       Naming::kOpenClip,
       {{"token_embedding.weight", "49408,1024"},
        {"transformer.resblocks.23.attn.in_proj_weight", "3072,1024"}}},
      {PartKind::kT5xxl,
       Naming::kHf,
       {{"encoder.block.23.layer.0.SelfAttention.q.weight", "4096,4096"},
        {"encoder.final_layer_norm.weight", "4096"}}},
      {PartKind::kVae,
       Naming::kLdm,
       {{"decoder.conv_in.weight", "512,*,3,3"}, {"encoder.down.0.block.0.conv1.weight"}}},
      {PartKind::kVae,
       Naming::kDiffusers,
       {{"decoder.conv_in.weight", "512,*,3,3"}, {"encoder.down_blocks.0.resnets.0.conv1.weight"}}},
  };
  return rules;
}

struct ArchRule {
  const char* id;
  const char* display;
  const char* family;
  const char* modelspec;
  PartKind kind;
  Naming naming;
  std::vector<Check> checks;
};

// Context width of the first cross-attention tells SD1 (CLIP-L, 768) from SD2 (OpenCLIP-H,
// 1024); SDXL has a label embedding (pooled text + size conditioning, 2816 wide; the refiner
// 2560) and its distilled variants keep it but drop transformer blocks: per input level
// SDXL has depths 0/2/10, SSD-1B 0/2/4, Segmind Vega 0/1/2.
const std::vector<ArchRule>& arch_rules() {
  static const char* kSdAttn = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight";
  static const char* kSdAttnD = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";
  static const std::vector<ArchRule> rules = {
      {"sd1",
       "Stable Diffusion 1.x",
       "sd1",
       "stable-diffusion-v1",
       PartKind::kUNet,
       Naming::kLdm,
       {{kSdAttn, "320,768"}, {"label_emb.0.0.weight", "-"}}},
      {"sd2",
       "Stable Diffusion 2.x",
       "sd2",
       "stable-diffusion-v2",
       PartKind::kUNet,
       Naming::kLdm,
       {{kSdAttn, "320,1024"}, {"label_emb.0.0.weight", "-"}}},
      {"sdxl-base",
       "SDXL base",
       "sdxl",
       "stable-diffusion-xl-v1-base",
       PartKind::kUNet,
       Naming::kLdm,
       {{"label_emb.0.0.weight", "1280,2816"},
        {"input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", "640,640"},
        {"input_blocks.7.1.transformer_blocks.9.attn1.to_q.weight", "1280,1280"}}},
      {"ssd-1b",
       "SSD-1B (distilled SDXL)",
       "sdxl",
       "stable-diffusion-xl-v1-base",
       PartKind::kUNet,
       Naming::kLdm,
       {{"label_emb.0.0.weight", "1280,2816"},
        {"input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", "640,640"},
        {"input_blocks.7.1.transformer_blocks.3.attn1.to_q.weight", "1280,1280"},
        {"input_blocks.7.1.transformer_blocks.4.attn1.to_q.weight", "-"}}},
      {"segmind-vega",
       "Segmind Vega (distilled SDXL)",
       "sdxl",
       "stable-diffusion-xl-v1-base",
       PartKind::kUNet,
       Naming::kLdm,
       {{"label_emb.0.0.weight", "1280,2816"},
        {"input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", "640,640"},
        {"input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", "-"},
        {"input_blocks.7.1.transformer_blocks.1.attn1.to_q.weight", "1280,1280"},
        {"input_blocks.7.1.transformer_blocks.2.attn1.to_q.weight", "-"}}},
      {"sdxl-refiner",
       "SDXL refiner",
       "sdxl-refiner",
       "stable-diffusion-xl-v1-refiner",
       PartKind::kUNet,
       Naming::kLdm,
       {{"label_emb.0.0.weight", "1536,2560"}}},
      {"sd1",
       "Stable Diffusion 1.x",
       "sd1",
       "stable-diffusion-v1",
       PartKind::kUNet,
       Naming::kDiffusers,
       {{kSdAttnD, "320,768"}, {"add_embedding.linear_1.weight", "-"}}},
      {"sd2",
       "Stable Diffusion 2.x",
       "sd2",
       "stable-diffusion-v2",
       PartKind::kUNet,
       Naming::kDiffusers,
       {{kSdAttnD, "320,1024"}, {"add_embedding.linear_1.weight", "-"}}},
      {"sdxl-base",
       "SDXL base",
       "sdxl",
       "stable-diffusion-xl-v1-base",
       PartKind::kUNet,
       Naming::kDiffusers,
       {{"add_embedding.linear_1.weight", "1280,2816"}}},
      {"sdxl-refiner",
       "SDXL refiner",
       "sdxl-refiner",
       "stable-diffusion-xl-v1-refiner",
       PartKind::kUNet,
       Naming::kDiffusers,
       {{"add_embedding.linear_1.weight", "1536,2560"}}},
      // MMDiT: hidden size = 64 × depth; SD3.5 medium is MMDiT-X (a second attention in the
      // first 13 image blocks), SD3.5 large has 38 blocks of 2432.
      {"sd3-medium",
       "SD3 medium",
       "sd3",
       "stable-diffusion-v3-medium",
       PartKind::kMMDiT,
       Naming::kLdm,
       {{"x_embedder.proj.weight", "1536,16,2,2"},
        {"joint_blocks.23.x_block.attn.qkv.weight", "4608,1536"},
        {"joint_blocks.24.x_block.attn.qkv.weight", "-"},
        {"joint_blocks.0.x_block.attn2.qkv.weight", "-"}}},
      {"sd3.5-medium",
       "SD3.5 medium",
       "sd3",
       "stable-diffusion-v3.5-medium",
       PartKind::kMMDiT,
       Naming::kLdm,
       {{"x_embedder.proj.weight", "1536,16,2,2"},
        {"joint_blocks.23.x_block.attn.qkv.weight", "4608,1536"},
        {"joint_blocks.0.x_block.attn2.qkv.weight", "4608,1536"}}},
      {"sd3.5-large",
       "SD3.5 large",
       "sd3",
       "stable-diffusion-v3.5-large",
       PartKind::kMMDiT,
       Naming::kLdm,
       {{"x_embedder.proj.weight", "2432,16,2,2"},
        {"joint_blocks.37.x_block.attn.qkv.weight", "7296,2432"}}},
      // FLUX.1: dev is guidance-distilled and has the guidance embedding; schnell has not.
      {"flux1-dev",
       "FLUX.1 dev",
       "flux",
       "flux-1-dev",
       PartKind::kFluxDiT,
       Naming::kBfl,
       {{"double_blocks.18.img_attn.qkv.weight", "9216,3072"},
        {"single_blocks.37.linear1.weight", "21504,3072"},
        {"guidance_in.in_layer.weight", "3072,256"}}},
      {"flux1-schnell",
       "FLUX.1 schnell",
       "flux",
       "flux-1-schnell",
       PartKind::kFluxDiT,
       Naming::kBfl,
       {{"double_blocks.18.img_attn.qkv.weight", "9216,3072"},
        {"single_blocks.37.linear1.weight", "21504,3072"},
        {"guidance_in.in_layer.weight", "-"}}},
      {"flux1-dev",
       "FLUX.1 dev",
       "flux",
       "flux-1-dev",
       PartKind::kFluxDiT,
       Naming::kDiffusers,
       {{"transformer_blocks.18.attn.to_q.weight", "3072,3072"},
        {"single_transformer_blocks.37.attn.to_q.weight", "3072,3072"},
        {"time_text_embed.guidance_embedder.linear_1.weight", "3072,256"}}},
      {"flux1-schnell",
       "FLUX.1 schnell",
       "flux",
       "flux-1-schnell",
       PartKind::kFluxDiT,
       Naming::kDiffusers,
       {{"transformer_blocks.18.attn.to_q.weight", "3072,3072"},
        {"single_transformer_blocks.37.attn.to_q.weight", "3072,3072"},
        {"time_text_embed.guidance_embedder.linear_1.weight", "-"}}},
  };
  return rules;
}

/// The input width of the denoiser's first layer names conditioning variants.
struct VariantRule {
  PartKind kind;
  const char* key;
  const char* shape;
  const char* variant;
  const char* explanation;
};

const std::vector<VariantRule>& variant_rules() {
  static const std::vector<VariantRule> rules = {
      {PartKind::kUNet, "input_blocks.0.0.weight", "*,9,3,3", "inpaint",
       "9 input channels: latent + mask + masked image"},
      {PartKind::kUNet, "input_blocks.0.0.weight", "*,8,3,3", "instruct-pix2pix",
       "8 input channels: latent + image latent"},
      {PartKind::kUNet, "input_blocks.0.0.weight", "*,5,3,3", "depth",
       "5 input channels: latent + depth"},
      {PartKind::kUNet, "conv_in.weight", "*,9,3,3", "inpaint",
       "9 input channels: latent + mask + masked image"},
      {PartKind::kUNet, "conv_in.weight", "*,8,3,3", "instruct-pix2pix",
       "8 input channels: latent + image latent"},
      {PartKind::kFluxDiT, "img_in.weight", "3072,384", "fill",
       "384 input features: packed latent + masked image + mask (FLUX.1 Fill)"},
      {PartKind::kFluxDiT, "img_in.weight", "3072,128", "depth-or-canny",
       "128 input features: packed latent + control image (FLUX.1 Depth or Canny; the weights "
       "do not say which)"},
      {PartKind::kFluxDiT, "x_embedder.weight", "3072,384", "fill",
       "384 input features: packed latent + masked image + mask (FLUX.1 Fill)"},
      {PartKind::kFluxDiT, "x_embedder.weight", "3072,128", "depth-or-canny",
       "128 input features: packed latent + control image (FLUX.1 Depth or Canny)"},
  };
  return rules;
}

/// Where components sit in monolithic files. Longest prefix wins.
struct PrefixRule {
  std::string_view prefix;
  Role role;
  std::string_view inner;  ///< see FamilySlot::inner
};

const std::vector<PrefixRule>& prefix_rules() {
  static const std::vector<PrefixRule> rules = {
      {"model.diffusion_model.", Role::kDiffusionModel, ""},
      {"model_ema.", Role::kEma, ""},
      {"first_stage_model.", Role::kVae, ""},
      {"vae.", Role::kVae, ""},
      {"cond_stage_model.transformer.", Role::kTextEncoder, ""},
      {"cond_stage_model.model.", Role::kTextEncoder, ""},
      {"conditioner.embedders.0.transformer.", Role::kTextEncoder, ""},
      {"conditioner.embedders.0.model.", Role::kTextEncoder, ""},
      {"conditioner.embedders.1.transformer.", Role::kTextEncoder, ""},
      {"conditioner.embedders.1.model.", Role::kTextEncoder, ""},
      {"text_encoders.clip_l.", Role::kTextEncoder, "transformer."},
      {"text_encoders.clip_g.", Role::kTextEncoder, "transformer."},
      {"text_encoders.t5xxl.", Role::kTextEncoder, "transformer."},
      {"model.model_sampling.", Role::kTrainingExtra, ""},
      {"denoiser.", Role::kTrainingExtra, ""},
  };
  return rules;
}

/// Buffers LDM training code saves next to the weights (besides the DDPM schedule,
/// model/schedule.h); no loader needs them.
constexpr std::string_view kTrainingExtras[] = {
    "logvar",
    "model_ema.decay",
    "model_ema.num_updates",
};

/// Markers that change how a model is sampled; loaders (ComfyUI, Forge) read them.
constexpr std::string_view kModelConfigKeys[] = {
    "v_pred", "ztsnr", "edm_mean", "edm_std", "edm_vpred.sigma_min", "edm_vpred.sigma_max",
};

/// Words in metadata that name a distillation the weights cannot show.
struct DistillWord {
  std::string_view word;
  std::string_view name;
};
constexpr DistillWord kDistillWords[] = {
    {"turbo", "turbo"}, {"lightning", "lightning"}, {"hyper", "hyper"},
    {"lcm", "lcm"},     {"dmd2", "dmd2"},           {"schnell", "schnell"},
};
constexpr std::string_view kDistillKeys[] = {
    "modelspec.title", "modelspec.architecture", "modelspec.description", "ss_sd_model_name",
    "ss_output_name",  "ss_base_model_version",  "modelspec.usage_hint",
};

const std::vector<FamilyLayout> kFamilies = {
    {"sd1",
     "Stable Diffusion 1.x",
     "https://github.com/Stability-AI/generative-models",
     4,
     {{PartKind::kUNet, "model.diffusion_model.", "", Naming::kLdm, true},
      {PartKind::kClipL, "cond_stage_model.transformer.", "", Naming::kHf, true},
      {PartKind::kVae, "first_stage_model.", "", Naming::kLdm, true}}},
    {"sd2",
     "Stable Diffusion 2.x",
     "https://github.com/Stability-AI/generative-models",
     4,
     {{PartKind::kUNet, "model.diffusion_model.", "", Naming::kLdm, true},
      {PartKind::kClipH, "cond_stage_model.model.", "", Naming::kOpenClip, true},
      {PartKind::kVae, "first_stage_model.", "", Naming::kLdm, true}}},
    {"sdxl",
     "SDXL",
     "https://github.com/Stability-AI/generative-models",
     4,
     {{PartKind::kUNet, "model.diffusion_model.", "", Naming::kLdm, true},
      {PartKind::kClipL, "conditioner.embedders.0.transformer.", "", Naming::kHf, true},
      {PartKind::kClipG, "conditioner.embedders.1.model.", "", Naming::kOpenClip, true},
      {PartKind::kVae, "first_stage_model.", "", Naming::kLdm, true}}},
    {"sdxl-refiner",
     "SDXL refiner",
     "https://github.com/Stability-AI/generative-models",
     4,
     {{PartKind::kUNet, "model.diffusion_model.", "", Naming::kLdm, true},
      {PartKind::kClipG, "conditioner.embedders.0.model.", "", Naming::kOpenClip, true},
      {PartKind::kVae, "first_stage_model.", "", Naming::kLdm, true}}},
    {"sd3",
     "SD3",
     "https://github.com/Stability-AI/sd3.5",
     16,
     {{PartKind::kMMDiT, "model.diffusion_model.", "", Naming::kLdm, true},
      {PartKind::kClipL, "text_encoders.clip_l.", "transformer.", Naming::kHf, false},
      {PartKind::kClipG, "text_encoders.clip_g.", "transformer.", Naming::kHf, false},
      {PartKind::kT5xxl, "text_encoders.t5xxl.", "transformer.", Naming::kHf, false},
      {PartKind::kVae, "first_stage_model.", "", Naming::kLdm, true}}},
    {"flux",
     "FLUX.1",
     "https://github.com/black-forest-labs/flux",
     16,
     {{PartKind::kFluxDiT, "model.diffusion_model.", "", Naming::kBfl, true},
      {PartKind::kClipL, "text_encoders.clip_l.", "transformer.", Naming::kHf, false},
      {PartKind::kT5xxl, "text_encoders.t5xxl.", "transformer.", Naming::kHf, false},
      {PartKind::kVae, "vae.", "", Naming::kLdm, true}}},
};

// --- matching ----------------------------------------------------------------------------

using NameMap = std::unordered_map<std::string_view, const TensorInfo*>;

bool shape_matches(const Shape& shape, std::string_view spec) {
  size_t dim = 0;
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    const std::string_view part = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    if (dim >= shape.size()) return false;
    if (part != "*") {
      uint64_t v = 0;
      auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
      if (ec != std::errc() || p != part.data() + part.size() || v != shape[dim]) return false;
    }
    ++dim;
  }
  return dim == shape.size();
}

std::string spec_text(std::string_view spec) {
  std::string s = "[";
  for (char c : spec) s += c == ',' ? std::string(", ") : std::string(1, c);
  return s + "]";
}

/// nullopt when the check holds, else why not.
std::optional<std::string> check_fails(const NameMap& names, const Check& c,
                                       std::string_view prefix) {
  auto it = names.find(c.key);
  const bool absent = c.shape && std::string_view(c.shape) == "-";
  if (absent) {
    if (it == names.end()) return std::nullopt;
    return fmt::format("{}{} is present", prefix, c.key);
  }
  if (it == names.end()) return fmt::format("{}{} is missing", prefix, c.key);
  if (c.shape && !shape_matches(it->second->shape, c.shape))
    return fmt::format("{}{} is {}, expected {}", prefix, c.key, shape_to_string(it->second->shape),
                       spec_text(c.shape));
  return std::nullopt;
}

std::string check_text(const NameMap& names, const Check& c, std::string_view prefix) {
  if (c.shape && std::string_view(c.shape) == "-") return fmt::format("no {}{}", prefix, c.key);
  return fmt::format("{}{} {}", prefix, c.key, shape_to_string(names.at(c.key)->shape));
}

struct Score {
  unsigned matched = 0;
  std::string first_failure;
  /// For ranking near misses: a tensor that is there counts more than one that is absent as
  /// required (absence is weak evidence), and a tensor with another shape counts half.
  double closeness = 0;
};

Score score(const NameMap& names, const std::vector<Check>& checks, std::string_view prefix) {
  Score s;
  double got = 0;
  for (const Check& c : checks) {
    const bool absent_check = c.shape && std::string_view(c.shape) == "-";
    auto why = check_fails(names, c, prefix);
    if (!why) {
      ++s.matched;
      got += absent_check ? 0.25 : 1.0;
    } else {
      if (!absent_check && names.count(c.key)) got += 0.5;
      if (s.first_failure.empty()) s.first_failure = *why;
    }
  }
  s.closeness = checks.empty() ? 0 : got / static_cast<double>(checks.size());
  return s;
}

void keep_closest(std::vector<Candidate>& c) {
  std::stable_sort(c.begin(), c.end(), [](const Candidate& x, const Candidate& y) {
    return x.closeness > y.closeness;
  });
  if (c.size() > 3) c.resize(3);
}

bool in_list(std::string_view name, std::span<const std::string_view> list) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

/// `word` appears in `text` not inside a longer word ("turbo" in "sdxl_turbo", not "turbot").
bool has_word(std::string_view text, std::string_view word) {
  for (size_t at = text.find(word); at != std::string_view::npos; at = text.find(word, at + 1)) {
    const bool left = at == 0 || !std::isalpha(static_cast<unsigned char>(text[at - 1]));
    const size_t end = at + word.size();
    const bool right = end == text.size() || !std::isalpha(static_cast<unsigned char>(text[end]));
    if (left && right) return true;
  }
  return false;
}

const PrefixRule* prefix_of(std::string_view name) {
  const PrefixRule* best = nullptr;
  for (const PrefixRule& r : prefix_rules())
    if (name.starts_with(r.prefix) && (!best || r.prefix.size() > best->prefix.size())) best = &r;
  return best;
}

bool is_lora_key(std::string_view n) {
  return n.find(".lora_down.") != std::string_view::npos ||
         n.find(".lora_up.") != std::string_view::npos ||
         n.find(".lora_A.") != std::string_view::npos ||
         n.find(".lora_B.") != std::string_view::npos ||
         n.find(".lora.down.") != std::string_view::npos ||
         n.find(".lora.up.") != std::string_view::npos ||
         n.find(".lora_linear_layer.") != std::string_view::npos ||
         n.find(".lora_mid.") != std::string_view::npos ||
         n.find(".hada_") != std::string_view::npos ||
         n.find(".lokr_") != std::string_view::npos ||
         // XLabs (x-flux): double_blocks.N.processor.qkv_lora1.down.weight, …
         (n.find(".processor.") != std::string_view::npos &&
          (n.find("_lora1.") != std::string_view::npos ||
           n.find("_lora2.") != std::string_view::npos ||
           n.find("_lora.") != std::string_view::npos));
}

std::string human_bytes(uint64_t b) {
  if (b >= (1ull << 30)) return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1ull << 30));
  if (b >= (1ull << 20)) return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1ull << 20));
  return fmt::format("{} bytes", b);
}

// --- the analysis ------------------------------------------------------------------------

struct Group {
  Component comp;
  std::vector<std::string> stripped;  ///< names relative to the prefix (+ inner)
};

NameMap name_map(const Group& g, const Checkpoint& ck) {
  NameMap m;
  m.reserve(g.stripped.size());
  for (size_t i = 0; i < g.stripped.size(); ++i)
    m.emplace(g.stripped[i], &ck.tensors[g.comp.tensors[i]]);
  return m;
}

void add_tensor(Component& c, const TensorInfo& t, size_t index) {
  c.tensors.push_back(index);
  c.parameters += t.numel();
  c.bytes += t.nbytes();
  ++c.dtypes[std::string(dtype_name(t.dtype))];
}

/// Kind, naming and detail of a group from the kind signatures.
void classify(Group& g, const Checkpoint& ck, const NameMap& names) {
  for (const KindRule& r : kind_rules()) {
    if (score(names, r.checks, "").matched != r.checks.size()) continue;
    g.comp.kind = r.kind;
    g.comp.naming = r.naming;
    break;
  }
  auto shape_of = [&](std::string_view key) -> const Shape* {
    auto it = names.find(key);
    return it == names.end() ? nullptr : &it->second->shape;
  };
  auto count_blocks = [&](std::string_view head, std::string_view tail) {
    unsigned n = 0;
    while (names.count(fmt::format("{}{}{}", head, n, tail))) ++n;
    return n;
  };
  (void)ck;
  switch (g.comp.kind) {
    case PartKind::kVae: {
      const Shape* s = shape_of("decoder.conv_in.weight");
      g.comp.channels = s && s->size() > 1 ? (*s)[1] : 0;
      g.comp.detail = fmt::format("{}-channel latent{}", g.comp.channels,
                                  names.count("quant_conv.weight") ? "" : ", no quant_conv");
      break;
    }
    case PartKind::kClipL:
    case PartKind::kClipG:
    case PartKind::kClipH: {
      const bool hf = g.comp.naming == Naming::kHf;
      const Shape* s =
          shape_of(hf ? "text_model.embeddings.token_embedding.weight" : "token_embedding.weight");
      g.comp.channels = s && s->size() > 1 ? (*s)[1] : 0;
      const unsigned layers = hf ? count_blocks("text_model.encoder.layers.", ".layer_norm1.weight")
                                 : count_blocks("transformer.resblocks.", ".ln_1.weight");
      g.comp.detail = fmt::format("{} layers, width {}", layers, g.comp.channels);
      break;
    }
    case PartKind::kT5xxl: {
      const unsigned layers = count_blocks("encoder.block.", ".layer.0.SelfAttention.q.weight");
      auto it = names.find("encoder.block.0.layer.0.SelfAttention.q.weight");
      g.comp.channels = 4096;
      g.comp.detail = fmt::format("{} blocks, weights {}", layers,
                                  dtype_name(it != names.end() ? it->second->dtype : DType::F32));
      break;
    }
    case PartKind::kUNet: {
      const Shape* s = shape_of(g.comp.naming == Naming::kLdm ? "out.2.weight" : "conv_out.weight");
      g.comp.channels = s && !s->empty() ? (*s)[0] : 0;
      g.comp.detail = fmt::format("{}-channel latent", g.comp.channels);
      break;
    }
    case PartKind::kMMDiT: {
      const unsigned depth = count_blocks("joint_blocks.", ".x_block.attn.qkv.weight");
      g.comp.channels = 16;
      g.comp.detail = fmt::format("{} joint blocks", depth);
      break;
    }
    case PartKind::kFluxDiT: {
      const bool bfl = g.comp.naming == Naming::kBfl;
      const unsigned d = bfl ? count_blocks("double_blocks.", ".img_attn.qkv.weight")
                             : count_blocks("transformer_blocks.", ".attn.to_q.weight");
      const unsigned s = bfl ? count_blocks("single_blocks.", ".linear1.weight")
                             : count_blocks("single_transformer_blocks.", ".attn.to_q.weight");
      g.comp.channels = 16;
      g.comp.detail = fmt::format("{} double + {} single blocks", d, s);
      break;
    }
    case PartKind::kNone:
      break;
  }
}

Role role_of_kind(PartKind k) {
  switch (k) {
    case PartKind::kUNet:
    case PartKind::kMMDiT:
    case PartKind::kFluxDiT:
      return Role::kDiffusionModel;
    case PartKind::kVae:
      return Role::kVae;
    case PartKind::kNone:
      return Role::kUnknown;
    default:
      return Role::kTextEncoder;
  }
}

void analyze_lora(const Checkpoint& ck, Anatomy& a) {
  a.layout = "lora";
  a.architecture = "lora";
  a.confidence = "keys";
  Component c;
  c.role = Role::kLora;
  bool kohya = false, diffusers = false, peft = false;
  uint64_t context = 0;
  bool te2 = false, flux = false, sd3 = false, sgm_unet = false;
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const TensorInfo& t = ck.tensors[i];
    add_tensor(c, t, i);
    std::string_view n = t.name;
    if (n.starts_with("lora_unet_") || n.starts_with("lora_te")) kohya = true;
    if (n.find(".lora.down.") != n.npos || n.find(".lora_linear_layer.") != n.npos)
      diffusers = true;
    if (n.find(".lora_A.") != n.npos) peft = true;
    if (n.starts_with("lora_te2_")) te2 = true;
    if (n.starts_with("lora_unet_input_blocks_") || n.starts_with("lora_unet_output_blocks_"))
      sgm_unet = true;
    if (n.find("double_blocks") != n.npos || n.find("single_transformer_blocks") != n.npos ||
        n.find("single_blocks") != n.npos)
      flux = true;
    if (n.find("joint_blocks") != n.npos || n.find("context_block") != n.npos) sd3 = true;
    const bool down = n.find("lora_down.weight") != n.npos || n.find("lora_A.weight") != n.npos ||
                      n.find("lora.down.weight") != n.npos ||
                      (n.find(".processor.") != n.npos && n.ends_with("lora1.down.weight")) ||
                      n.find("lora_linear_layer.down.weight") != n.npos;
    if (down && t.shape.size() >= 2) {
      if (a.lora_rank == 0) a.lora_rank = t.shape[0];
      // The cross-attention key projection reads the text context: its width names the base.
      if (context == 0 && n.find("attn2") != n.npos && (n.find("to_k") != n.npos))
        context = t.shape[1];
    }
  }
  a.lora_format = kohya ? "kohya" : diffusers ? "diffusers" : peft ? "peft" : "other";
  std::string why;
  if (flux) {
    a.lora_base = "flux", why = "FLUX block names (double/single blocks)";
  } else if (sd3) {
    a.lora_base = "sd3", why = "MMDiT block names (joint blocks)";
  } else if (te2) {
    a.lora_base = "sdxl", why = "a second text encoder (lora_te2_)";
  } else if (context == 2048) {
    a.lora_base = "sdxl", why = "cross-attention reads a 2048-wide context";
  } else if (context == 1024) {
    a.lora_base = "sd2", why = "cross-attention reads a 1024-wide context";
  } else if (context == 768) {
    a.lora_base = "sd1", why = "cross-attention reads a 768-wide context";
  } else if (sgm_unet) {
    a.lora_base = "sdxl", why = "SGM UNet module names (input_blocks/output_blocks)";
  }
  if (!why.empty())
    a.evidence.push_back(fmt::format("base model {}: {}", a.lora_base, why));
  else
    a.notes.push_back("the base model of this LoRA is not determinable from its keys");
  a.evidence.push_back(fmt::format("{} LoRA key names, rank {}", a.lora_format, a.lora_rank));
  static const std::map<std::string_view, std::string_view> kLoraSpec = {
      {"sd1", "stable-diffusion-v1/lora"},
      {"sd2", "stable-diffusion-v2-512/lora"},
      {"sdxl", "stable-diffusion-xl-v1-base/lora"},
      {"sd3", "stable-diffusion-v3-medium/lora"},
      {"flux", "flux-1-dev/lora"},
  };
  if (auto it = kLoraSpec.find(a.lora_base); it != kLoraSpec.end())
    a.modelspec = std::string(it->second);
  a.components.push_back(std::move(c));
}

}  // namespace

const std::vector<FamilyLayout>& family_layouts() { return kFamilies; }

const FamilyLayout* family_layout(std::string_view family) {
  for (const FamilyLayout& f : kFamilies)
    if (f.family == family) return &f;
  return nullptr;
}

bool is_model_config_key(std::string_view name) { return in_list(name, kModelConfigKeys); }

std::string strip_component_prefix(std::string_view name, std::string_view prefix,
                                   std::string_view inner) {
  name.remove_prefix(std::min(prefix.size(), name.size()));
  if (!inner.empty() && name.starts_with(inner)) name.remove_prefix(inner.size());
  return std::string(name);
}

std::string add_component_prefix(std::string_view part_name, const FamilySlot& slot) {
  if (slot.inner.empty() || part_name == "logit_scale")
    return fmt::format("{}{}", slot.prefix, part_name);
  return fmt::format("{}{}{}", slot.prefix, slot.inner, part_name);
}

std::string ema_key_for(std::string_view unet_name) {
  std::string out = "model_ema.diffusion_model";
  for (char c : unet_name)
    if (c != '.') out += c;
  return out;
}

Anatomy analyze_layout(const Checkpoint& ck) {
  Anatomy a;
  // LoRA files are named by their key style; nothing else applies to them.
  size_t lora_keys = 0;
  for (const TensorInfo& t : ck.tensors) lora_keys += is_lora_key(t.name);
  if (lora_keys > 0 && lora_keys * 3 >= ck.tensors.size()) {
    analyze_lora(ck, a);
    return a;
  }

  // 1. Groups by prefix.
  std::vector<Group> groups;
  std::map<std::string, size_t> by_prefix;
  Group bare, extras, config;
  bare.comp.role = Role::kUnknown;
  extras.comp.role = Role::kTrainingExtra;
  config.comp.role = Role::kModelConfig;
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const TensorInfo& t = ck.tensors[i];
    if (in_list(t.name, kTrainingExtras) || in_list(t.name, kDdpmBuffers)) {
      add_tensor(extras.comp, t, i);
      extras.stripped.push_back(t.name);
      continue;
    }
    if (in_list(t.name, kModelConfigKeys)) {
      add_tensor(config.comp, t, i);
      config.stripped.push_back(t.name);
      continue;
    }
    const PrefixRule* r = prefix_of(t.name);
    if (!r) {
      add_tensor(bare.comp, t, i);
      bare.stripped.push_back(t.name);
      continue;
    }
    auto [it, fresh] = by_prefix.emplace(std::string(r->prefix), groups.size());
    if (fresh) {
      groups.emplace_back();
      groups.back().comp.role = r->role;
      groups.back().comp.prefix = std::string(r->prefix);
    }
    Group& g = groups[it->second];
    add_tensor(g.comp, t, i);
    g.stripped.push_back(strip_component_prefix(t.name, r->prefix, r->inner));
  }
  if (!bare.comp.tensors.empty()) groups.push_back(std::move(bare));

  // 2. Kinds.
  std::vector<Component> unknown;
  for (Group& g : groups) {
    if (g.comp.role == Role::kEma || g.comp.role == Role::kTrainingExtra) {
      if (g.comp.role == Role::kEma) g.comp.kind = PartKind::kUNet, g.comp.detail = "EMA copy";
      a.components.push_back(std::move(g.comp));
      continue;
    }
    const NameMap names = name_map(g, ck);
    classify(g, ck, names);
    if (g.comp.kind != PartKind::kNone) {
      const Role expected = role_of_kind(g.comp.kind);
      if (g.comp.role == Role::kUnknown) g.comp.role = expected;
      if (g.comp.role != expected)
        a.defects.push_back(
            {"misplaced-component",
             "warning",
             fmt::format("{}* holds a {}, not the {} that prefix is for", g.comp.prefix,
                         part_display_name(g.comp.kind), role_name(g.comp.role)),
             {}});
    }
    a.components.push_back(std::move(g.comp));
  }
  if (!extras.comp.tensors.empty()) a.components.push_back(std::move(extras.comp));
  if (!config.comp.tensors.empty()) a.components.push_back(std::move(config.comp));

  // 3. The denoiser decides the architecture.
  std::vector<const Component*> denoisers;
  for (const Component& c : a.components)
    if (c.role == Role::kDiffusionModel && c.kind != PartKind::kNone) denoisers.push_back(&c);
  size_t parts = 0, unknown_parts = 0;
  for (const Component& c : a.components) {
    if (c.role == Role::kDiffusionModel || c.role == Role::kTextEncoder || c.role == Role::kVae)
      ++parts;
    if (c.kind == PartKind::kNone && (c.role == Role::kUnknown || c.role == Role::kDiffusionModel ||
                                      c.role == Role::kTextEncoder || c.role == Role::kVae))
      ++unknown_parts;
  }
  const Component* dm = denoisers.size() == 1 ? denoisers[0] : nullptr;
  if (denoisers.size() > 1) {
    a.defects.push_back(
        {"duplicate-component",
         "error",
         fmt::format("{} diffusion models in one file ({}): a loader takes one", denoisers.size(),
                     denoisers[0]->prefix.empty() ? "bare names" : denoisers[0]->prefix),
         {}});
  }
  if (dm) {
    Group view;
    view.comp = *dm;
    for (size_t i : dm->tensors)
      view.stripped.push_back(strip_component_prefix(ck.tensors[i].name, dm->prefix, ""));
    const NameMap names = name_map(view, ck);
    const ArchRule* hit = nullptr;
    std::vector<Candidate> near;
    for (const ArchRule& r : arch_rules()) {
      if (r.kind != dm->kind || r.naming != dm->naming) continue;
      const Score s = score(names, r.checks, dm->prefix);
      if (s.matched == r.checks.size()) {
        hit = &r;
        break;
      }
      near.push_back(
          {r.id, s.matched, static_cast<unsigned>(r.checks.size()), s.first_failure, s.closeness});
    }
    if (hit) {
      a.architecture = hit->id;
      a.family = hit->family;
      a.modelspec = hit->modelspec;
      a.confidence = "keys";
      for (const Check& c : hit->checks) a.evidence.push_back(check_text(names, c, dm->prefix));
      std::vector<std::string> variants;
      for (const VariantRule& v : variant_rules()) {
        if (v.kind != dm->kind) continue;
        auto it = names.find(v.key);
        if (it != names.end() && shape_matches(it->second->shape, v.shape)) {
          variants.push_back(v.variant);
          a.evidence.push_back(fmt::format("{}{} {}: {}", dm->prefix, v.key,
                                           shape_to_string(it->second->shape), v.explanation));
        }
      }
      auto has = [&](std::string_view k) { return ck.find(k) != nullptr; };
      if (has("edm_mean") && has("edm_std")) {
        variants.push_back("playground-2.5");
        a.evidence.push_back("edm_mean and edm_std: EDM latent statistics (Playground 2.5)");
      }
      if (has("edm_vpred.sigma_min") || has("edm_vpred.sigma_max")) {
        variants.push_back("v-prediction-edm");
        a.evidence.push_back("edm_vpred.sigma_*: v-prediction with EDM sigmas (CosXL style)");
      } else if (has("v_pred")) {
        variants.push_back("v-prediction");
        a.evidence.push_back("v_pred: v-prediction");
      }
      if (has("ztsnr")) {
        variants.push_back("zero-terminal-snr");
        a.evidence.push_back("ztsnr: zero terminal SNR schedule");
      }
      a.variant = variants.empty() ? "standard" : fmt::format("{}", fmt::join(variants, "+"));
    } else {
      keep_closest(near);
      a.candidates = std::move(near);
      a.notes.push_back(fmt::format("a {} ({} names) that matches no known architecture",
                                    part_display_name(dm->kind), naming_name(dm->naming)));
    }
  }

  // 4. Layout.
  bool has_te = false, has_vae = false;
  for (const Component& c : a.components) {
    has_te |= c.role == Role::kTextEncoder;
    has_vae |= c.role == Role::kVae;
  }
  if (denoisers.size() > 1) {
    a.layout = "partial";
  } else if (dm) {
    a.layout = (has_te || has_vae || !dm->prefix.empty()) ? "monolithic" : "diffusion-model";
  } else if (parts == 1 && unknown_parts == 0) {
    for (const Component& c : a.components) {
      if (c.role != Role::kTextEncoder && c.role != Role::kVae) continue;
      a.layout = c.role == Role::kVae ? "vae" : "text-encoder";
      a.architecture = c.kind == PartKind::kClipL   ? "clip-l"
                       : c.kind == PartKind::kClipG ? "clip-g"
                       : c.kind == PartKind::kClipH ? "clip-h"
                       : c.kind == PartKind::kT5xxl ? "t5xxl"
                                                    : "vae";
      a.confidence = "keys";
      a.variant = c.detail;
      a.evidence.push_back(fmt::format("{} ({} names): {}", part_display_name(c.kind),
                                       naming_name(c.naming), c.detail));
      if (c.kind == PartKind::kVae)
        a.notes.push_back(c.channels == 16
                              ? "a 16-channel latent VAE is used by SD3 and FLUX.1; their VAEs "
                                "differ in weights, not in shapes"
                              : "a 4-channel latent VAE is used by SD1, SD2 and SDXL; which "
                                "one is not determinable from shapes");
    }
  } else if (parts > 0) {
    a.layout = "partial";
  } else {
    a.layout = "unknown";
  }

  // Candidates when nothing was recognized: the kinds that came closest.
  if (a.architecture == "unknown" && a.candidates.empty()) {
    for (const Component& c : a.components) {
      if (c.kind != PartKind::kNone || c.role == Role::kTrainingExtra ||
          c.role == Role::kModelConfig || c.role == Role::kEma)
        continue;
      Group view;
      view.comp = c;
      for (size_t i : c.tensors)
        view.stripped.push_back(strip_component_prefix(ck.tensors[i].name, c.prefix, ""));
      const NameMap names = name_map(view, ck);
      for (const KindRule& r : kind_rules()) {
        const Score s = score(names, r.checks, c.prefix);
        if (s.closeness == 0) continue;
        a.candidates.push_back(
            {fmt::format("{} ({} names)", part_kind_name(r.kind), naming_name(r.naming)), s.matched,
             static_cast<unsigned>(r.checks.size()), s.first_failure, s.closeness});
      }
    }
    keep_closest(a.candidates);
  }

  // 5. Defects of a monolithic file.
  const FamilyLayout* fam = family_layout(a.family);
  if (fam && a.layout == "monolithic") {
    for (const FamilySlot& slot : fam->slots) {
      const bool present = a.find(slot.kind) != nullptr;
      if (present) continue;
      if (slot.required)
        a.defects.push_back(
            {"missing-component",
             "warning",
             fmt::format("no {} ({}*): {} files normally include one; a loader that expects a "
                         "single file will fail without it",
                         part_display_name(slot.kind), slot.prefix, fam->display),
             {}});
      else
        a.notes.push_back(fmt::format("no {} in the file; load it separately ({}*)",
                                      part_display_name(slot.kind), slot.prefix));
    }
    for (const Component& c : a.components) {
      if (c.role != Role::kTextEncoder || c.kind == PartKind::kNone) continue;
      bool fits = false;
      for (const FamilySlot& slot : fam->slots) fits |= slot.kind == c.kind;
      if (!fits)
        a.defects.push_back({"foreign-component",
                             "warning",
                             fmt::format("{} under {} is not a text encoder {} uses",
                                         part_display_name(c.kind), c.prefix, fam->display),
                             {}});
    }
  }
  // Latent channels must agree between denoiser and VAE.
  if (dm) {
    for (const Component& c : a.components)
      if (c.role == Role::kVae && c.kind == PartKind::kVae && dm->channels && c.channels &&
          c.channels != dm->channels)
        a.defects.push_back(
            {"latent-mismatch",
             "error",
             fmt::format("the VAE ({}*) has a {}-channel latent, the diffusion model denoises "
                         "{} channels",
                         c.prefix, c.channels, dm->channels),
             {}});
  }
  // EMA copies beside the denoiser.
  for (const Component& c : a.components) {
    if (c.role != Role::kEma || !dm) continue;
    std::unordered_map<std::string_view, bool> ema;
    for (size_t i : c.tensors) ema.emplace(ck.tensors[i].name, true);
    size_t pairs = 0;
    for (size_t i : dm->tensors)
      pairs += ema.count(ema_key_for(strip_component_prefix(ck.tensors[i].name, dm->prefix, "")));
    a.defects.push_back(
        {"ema-duplicate",
         "info",
         fmt::format("the file also holds an EMA copy of the diffusion model ({} tensors, {}; "
                     "{} of {} pair with the model's): `ckptkit prune` drops it, `--ema use` "
                     "keeps the EMA weights instead",
                     c.tensors.size(), human_bytes(c.bytes), pairs, dm->tensors.size()),
         {}});
  }
  // F32 where published files are half precision.
  for (const Component& c : a.components) {
    if (c.dtypes.size() != 1 || !c.dtypes.count("F32")) continue;
    const bool usual_half =
        (c.role == Role::kDiffusionModel && (a.family == "sdxl" || a.family == "sd3" ||
                                             a.family == "flux" || a.family == "sdxl-refiner")) ||
        c.kind == PartKind::kT5xxl || c.kind == PartKind::kClipG;
    if (usual_half)
      a.defects.push_back(
          {"f32-unusual",
           "info",
           fmt::format("the {} is F32 ({}); published files carry it in F16/BF16: `ckptkit "
                       "convert --dtype f16` halves it",
                       part_display_name(c.kind), human_bytes(c.bytes)),
           {}});
  }
  for (const Component& c : a.components) {
    if (c.role != Role::kUnknown || c.kind != PartKind::kNone) continue;
    std::vector<std::string> keys;
    for (size_t i : c.tensors) keys.push_back(ck.tensors[i].name);
    a.defects.push_back({"unknown-keys", "info",
                         fmt::format("{} tensors belong to no known component", keys.size()),
                         std::move(keys)});
  }

  // 6. Metadata: what the weights cannot say.
  for (const auto& [key, value] : ck.metadata) {
    if (!in_list(key, kDistillKeys)) continue;
    const std::string v = lower(value);
    for (const DistillWord& w : kDistillWords) {
      if (w.word == "schnell" && a.family == "flux") continue;  // keys decide that
      if (!has_word(v, w.word)) continue;
      if (a.distillation.empty()) {
        a.distillation = std::string(w.name);
        a.distillation_source = key;
        a.evidence.push_back(fmt::format("metadata {} = \"{}\" names a {} model", key,
                                         value.size() > 80 ? value.substr(0, 80) + "…" : value,
                                         w.name));
      }
    }
  }
  if (a.family == "sd2" && a.distillation.empty() && ck.find("denoiser.sigmas")) {
    a.distillation = "turbo";
    a.distillation_source = "denoiser.sigmas";
    a.evidence.push_back("denoiser.sigmas: the SD-Turbo (SD 2.1 distilled) sampler buffer");
  }
  if (a.family == "sdxl" && a.distillation.empty())
    a.notes.push_back(
        "whether this is a few-step distilled SDXL (Turbo, Lightning, Hyper, LCM) is not "
        "determinable from the weights, and no metadata names it");
  if (a.family == "sd2" && !a.architecture.empty()) {
    auto ms = ck.metadata.find("modelspec.architecture");
    auto pt = ck.metadata.find("modelspec.prediction_type");
    auto vp = ck.metadata.find("ss_v_parameterization");
    if (pt == ck.metadata.end()) pt = ck.metadata.find("modelspec.predict_key");
    std::string pred;
    std::string source;
    if (ms != ck.metadata.end() && ms->second.find("768-v") != std::string::npos)
      pred = "v", source = ms->first;
    else if (ms != ck.metadata.end() && ms->second.find("v2-512") != std::string::npos)
      pred = "epsilon", source = ms->first;
    else if (pt != ck.metadata.end())
      pred = lower(pt->second) == "v" ? "v" : lower(pt->second), source = pt->first;
    else if (vp != ck.metadata.end())
      pred = lower(vp->second) == "true" ? "v" : "epsilon", source = vp->first;
    if (pred.empty()) {
      a.notes.push_back(
          "epsilon vs v-prediction (SD2 512-base vs 768-v) is not in the weights and no "
          "metadata says which");
      a.modelspec = "stable-diffusion-v2-512";
    } else {
      a.variant = a.variant == "standard" ? fmt::format("{}-prediction", pred)
                                          : fmt::format("{}+{}-prediction", a.variant, pred);
      a.evidence.push_back(fmt::format("metadata {}: {}-prediction", source, pred));
      a.modelspec = pred == "v" ? "stable-diffusion-v2-768-v" : "stable-diffusion-v2-512";
    }
  }
  return a;
}

}  // namespace detail

std::string_view role_name(Role r) {
  switch (r) {
    case Role::kDiffusionModel:
      return "diffusion_model";
    case Role::kTextEncoder:
      return "text_encoder";
    case Role::kVae:
      return "vae";
    case Role::kEma:
      return "ema";
    case Role::kTrainingExtra:
      return "training_extra";
    case Role::kModelConfig:
      return "model_config";
    case Role::kLora:
      return "lora";
    case Role::kUnknown:
      break;
  }
  return "unknown";
}

std::string_view part_kind_name(PartKind k) {
  switch (k) {
    case PartKind::kUNet:
      return "unet";
    case PartKind::kMMDiT:
      return "mmdit";
    case PartKind::kFluxDiT:
      return "flux-dit";
    case PartKind::kClipL:
      return "clip-l";
    case PartKind::kClipG:
      return "clip-g";
    case PartKind::kClipH:
      return "clip-h";
    case PartKind::kT5xxl:
      return "t5xxl";
    case PartKind::kVae:
      return "vae";
    case PartKind::kNone:
      break;
  }
  return "unknown";
}

std::string_view part_display_name(PartKind k) {
  switch (k) {
    case PartKind::kClipL:
      return "CLIP-L";
    case PartKind::kClipG:
      return "CLIP-G";
    case PartKind::kClipH:
      return "OpenCLIP-H";
    case PartKind::kT5xxl:
      return "T5-XXL";
    case PartKind::kVae:
      return "VAE";
    case PartKind::kUNet:
      return "UNet";
    case PartKind::kMMDiT:
      return "MMDiT";
    case PartKind::kFluxDiT:
      return "FLUX DiT";
    case PartKind::kNone:
      break;
  }
  return "unknown part";
}

std::string_view part_file_tag(PartKind k) {
  switch (k) {
    case PartKind::kClipL:
      return "clip_l";
    case PartKind::kClipG:
      return "clip_g";
    case PartKind::kClipH:
      return "clip_h";
    case PartKind::kT5xxl:
      return "t5xxl";
    case PartKind::kVae:
      return "vae";
    default:
      break;
  }
  return "diffusion_model";
}

std::string_view naming_name(Naming n) {
  switch (n) {
    case Naming::kLdm:
      return "ldm";
    case Naming::kBfl:
      return "bfl";
    case Naming::kHf:
      return "hf";
    case Naming::kOpenClip:
      return "openclip";
    case Naming::kDiffusers:
      return "diffusers";
    case Naming::kNone:
      break;
  }
  return "unknown";
}

const Component* Anatomy::find(PartKind kind) const {
  for (const Component& c : components)
    if (c.kind == kind && c.role != Role::kEma) return &c;
  return nullptr;
}

const Component* Anatomy::find(Role role) const {
  for (const Component& c : components)
    if (c.role == role) return &c;
  return nullptr;
}

}  // namespace ckptkit
