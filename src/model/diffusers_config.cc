// Diffusers folder layouts and config.json derivation (model/diffusers_config.h).
#include "model/diffusers_config.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <filesystem>

#include "io/errors.h"

namespace ckptkit::detail {
namespace {

// Scheduler settings as published with each base model (scheduler/scheduler_config.json of
// stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0): the DDPM schedule the UNet was
// trained on (scaled_linear, 0.00085 … 0.012, 1000 steps) and the sampler's defaults.
const std::vector<DiffusersFamily>& families() {
  using Settings = std::vector<std::pair<std::string_view, std::string_view>>;
  static const Settings kEuler = {{"beta_end", "0.012"},
                                  {"beta_schedule", "\"scaled_linear\""},
                                  {"beta_start", "0.00085"},
                                  {"clip_sample", "false"},
                                  {"interpolation_type", "\"linear\""},
                                  {"num_train_timesteps", "1000"},
                                  {"sample_max_value", "1.0"},
                                  {"set_alpha_to_one", "false"},
                                  {"skip_prk_steps", "true"},
                                  {"steps_offset", "1"},
                                  {"timestep_spacing", "\"leading\""},
                                  {"trained_betas", "null"},
                                  {"use_karras_sigmas", "false"}};
  // FLUX.1 (FluxPipeline): the transformer, CLIP-L (text_encoder), T5-XXL
  // (text_encoder_2), the 16-channel VAE. dev and schnell differ in the guidance
  // embedding and the scheduler: dev samples with a resolution-dependent shift.
  static const DiffusersFamily kFluxDev = {
      "flux",
      "FluxPipeline",
      "FluxFillPipeline",
      {{"transformer", PartKind::kFluxDiT, "diffusers", "FluxTransformer2DModel",
        "diffusion_pytorch_model.safetensors"},
       {"text_encoder", PartKind::kClipL, "transformers", "CLIPTextModel", "model.safetensors"},
       {"text_encoder_2", PartKind::kT5xxl, "transformers", "T5EncoderModel", "model.safetensors"},
       {"vae", PartKind::kVae, "diffusers", "AutoencoderKL",
        "diffusion_pytorch_model.safetensors"}},
      {"feature_extractor", "image_encoder", "tokenizer", "tokenizer_2"},
      {},
      "FlowMatchEulerDiscreteScheduler",
      {{"base_image_seq_len", "256"},
       {"base_shift", "0.5"},
       {"max_image_seq_len", "4096"},
       {"max_shift", "1.15"},
       {"num_train_timesteps", "1000"},
       {"shift", "3.0"},
       {"use_dynamic_shifting", "true"}},
      "",
      false,
      0,
      0,
      false,
      1024,
      "0.3611",
      true,
      "flux1-dev",
      "0.1159",
      false,
      true};
  static const DiffusersFamily kFluxSchnell = [] {
    DiffusersFamily f = kFluxDev;
    f.scheduler = {{"base_image_seq_len", "256"},    {"base_shift", "0.5"},
                   {"max_image_seq_len", "4096"},    {"max_shift", "1.15"},
                   {"num_train_timesteps", "1000"},  {"shift", "1.0"},
                   {"use_dynamic_shifting", "false"}};
    f.architecture = "flux1-schnell";
    return f;
  }();
  static const std::vector<DiffusersFamily> kFamilies = {
      {"sd1",
       "StableDiffusionPipeline",
       "StableDiffusionInpaintPipeline",
       {{"unet", PartKind::kUNet, "diffusers", "UNet2DConditionModel",
         "diffusion_pytorch_model.safetensors"},
        {"text_encoder", PartKind::kClipL, "transformers", "CLIPTextModel", "model.safetensors"},
        {"vae", PartKind::kVae, "diffusers", "AutoencoderKL",
         "diffusion_pytorch_model.safetensors"}},
       {"feature_extractor", "image_encoder", "safety_checker", "tokenizer"},
       {{"requires_safety_checker", "false"}},
       "PNDMScheduler",
       {{"beta_end", "0.012"},
        {"beta_schedule", "\"scaled_linear\""},
        {"beta_start", "0.00085"},
        {"clip_sample", "false"},
        {"num_train_timesteps", "1000"},
        {"set_alpha_to_one", "false"},
        {"skip_prk_steps", "true"},
        {"steps_offset", "1"},
        {"timestep_spacing", "\"leading\""},
        {"trained_betas", "null"}},
       "epsilon",
       false,
       64,
       64,
       false,
       512,
       "0.18215",
       false,
       "",
       "",
       true,
       false},
      // SD 2.x: OpenCLIP-H (text_encoder, 23 of its 24 layers), linear projections in the
      // UNet, 64-wide heads (stable-diffusion-2-1's and -2-1-base's configs).
      {"sd2",
       "StableDiffusionPipeline",
       "StableDiffusionInpaintPipeline",
       {{"unet", PartKind::kUNet, "diffusers", "UNet2DConditionModel",
         "diffusion_pytorch_model.safetensors"},
        {"text_encoder", PartKind::kClipH, "transformers", "CLIPTextModel", "model.safetensors"},
        {"vae", PartKind::kVae, "diffusers", "AutoencoderKL",
         "diffusion_pytorch_model.safetensors"}},
       {"feature_extractor", "image_encoder", "safety_checker", "tokenizer"},
       {{"requires_safety_checker", "false"}},
       "DDIMScheduler",
       {{"beta_end", "0.012"},
        {"beta_schedule", "\"scaled_linear\""},
        {"beta_start", "0.00085"},
        {"clip_sample", "false"},
        {"num_train_timesteps", "1000"},
        {"set_alpha_to_one", "false"},
        {"skip_prk_steps", "true"},
        {"steps_offset", "1"},
        {"timestep_spacing", "\"leading\""},
        {"trained_betas", "null"}},
       "v_prediction",
       true,
       64,
       96,
       true,
       768,
       "0.18215",
       false,
       "",
       "",
       true,
       false},
      {"sdxl",
       "StableDiffusionXLPipeline",
       "StableDiffusionXLInpaintPipeline",
       {{"unet", PartKind::kUNet, "diffusers", "UNet2DConditionModel",
         "diffusion_pytorch_model.safetensors"},
        {"text_encoder", PartKind::kClipL, "transformers", "CLIPTextModel", "model.safetensors"},
        {"text_encoder_2", PartKind::kClipG, "transformers", "CLIPTextModelWithProjection",
         "model.safetensors"},
        {"vae", PartKind::kVae, "diffusers", "AutoencoderKL",
         "diffusion_pytorch_model.safetensors"}},
       {"feature_extractor", "image_encoder", "tokenizer", "tokenizer_2"},
       {{"force_zeros_for_empty_prompt", "true"}},
       "EulerDiscreteScheduler",
       kEuler,
       "epsilon",
       false,
       128,
       128,
       true,
       1024,
       "0.13025",
       true,
       "",
       "",
       true,
       false},
      // The refiner has only OpenCLIP-G (text_encoder_2) and conditions on an aesthetic
      // score instead of the target size (stable-diffusion-xl-refiner-1.0's model_index.json).
      {"sdxl-refiner",
       "StableDiffusionXLImg2ImgPipeline",
       "StableDiffusionXLInpaintPipeline",
       {{"unet", PartKind::kUNet, "diffusers", "UNet2DConditionModel",
         "diffusion_pytorch_model.safetensors"},
        {"text_encoder_2", PartKind::kClipG, "transformers", "CLIPTextModelWithProjection",
         "model.safetensors"},
        {"vae", PartKind::kVae, "diffusers", "AutoencoderKL",
         "diffusion_pytorch_model.safetensors"}},
       {"feature_extractor", "image_encoder", "text_encoder", "tokenizer", "tokenizer_2"},
       {{"force_zeros_for_empty_prompt", "false"}, {"requires_aesthetics_score", "true"}},
       "EulerDiscreteScheduler",
       kEuler,
       "epsilon",
       false,
       128,
       128,
       true,
       1024,
       "0.13025",
       true,
       "",
       "",
       true,
       false},
      kFluxDev,
      kFluxSchnell,
      // SD3 and SD3.5 (StableDiffusion3Pipeline): the MMDiT, CLIP-L and CLIP-G with their
      // projections, T5-XXL, the 16-channel VAE (scripts/convert_sd3_to_diffusers.py: scaling
      // 1.5305, shift 0.0609, no quant convolutions), flow matching with shift 3.0.
      {"sd3",
       "StableDiffusion3Pipeline",
       "StableDiffusion3InpaintPipeline",
       {{"transformer", PartKind::kMMDiT, "diffusers", "SD3Transformer2DModel",
         "diffusion_pytorch_model.safetensors"},
        {"text_encoder", PartKind::kClipL, "transformers", "CLIPTextModelWithProjection",
         "model.safetensors"},
        {"text_encoder_2", PartKind::kClipG, "transformers", "CLIPTextModelWithProjection",
         "model.safetensors"},
        {"text_encoder_3", PartKind::kT5xxl, "transformers", "T5EncoderModel", "model.safetensors"},
        {"vae", PartKind::kVae, "diffusers", "AutoencoderKL",
         "diffusion_pytorch_model.safetensors"}},
       {"feature_extractor", "image_encoder", "tokenizer", "tokenizer_2", "tokenizer_3"},
       {},
       "FlowMatchEulerDiscreteScheduler",
       {{"num_train_timesteps", "1000"}, {"shift", "3.0"}},
       "",
       false,
       0,
       0,
       false,
       1024,
       "1.5305",
       true,
       "",
       "0.0609",
       false,
       true},
  };
  return kFamilies;
}

/// A JSON object, keys sorted as diffusers writes them (sort_keys), values already JSON.
class JsonObject {
 public:
  void set(std::string_view key, std::string value) {
    fields_[std::string(key)] = std::move(value);
  }
  void set(std::string_view key, uint64_t v) { set(key, std::to_string(v)); }
  void set_str(std::string_view key, std::string_view v) { set(key, fmt::format("\"{}\"", v)); }
  void set_bool(std::string_view key, bool v) { set(key, std::string(v ? "true" : "false")); }
  std::string text() const {
    std::string s = "{\n";
    size_t i = 0;
    for (const auto& [k, v] : fields_)
      s += fmt::format("  \"{}\": {}{}\n", k, v, ++i < fields_.size() ? "," : "");
    return s + "}\n";
  }

 private:
  std::map<std::string, std::string> fields_;
};

template <typename T>
std::string json_list(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, std::string>)
      s += fmt::format("{}\"{}\"", i ? ", " : "", v[i]);
    else
      s += fmt::format("{}{}", i ? ", " : "", v[i]);
  }
  return s + "]";
}

Status missing(const std::string& where, std::string_view name, std::string_view why) {
  return Status(ErrorCode::kInvalidArgument,
                fmt::format("the tensor '{}' is missing; it gives {}", name, why), where, kNoOffset,
                std::string(name));
}

/// The shape of `name`, which must have `rank` dimensions.
Result<Shape> shape_of(const ShapeMap& m, const std::string& name, size_t rank,
                       const std::string& where, std::string_view why) {
  auto it = m.find(name);
  if (it == m.end()) return missing(where, name, why);
  if (it->second.size() != rank)
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("the tensor '{}' has {} dimensions, {} expected", name,
                              it->second.size(), rank),
                  where, kNoOffset, name);
  return it->second;
}

/// How many of `fmt_name(0)`, `fmt_name(1)`, … exist, in a row.
template <typename F>
uint64_t count_of(const ShapeMap& m, F&& name_of) {
  uint64_t n = 0;
  while (m.count(name_of(n))) ++n;
  return n;
}

}  // namespace

const DiffusersFamily* diffusers_family(std::string_view family, std::string_view architecture) {
  const DiffusersFamily* first = nullptr;
  for (const DiffusersFamily& f : families()) {
    if (f.family != family) continue;
    if (!first) first = &f;
    if (!architecture.empty() && f.architecture == architecture) return &f;
  }
  return first;
}

const DiffusersFamily* diffusers_family_of_pipeline(std::string_view pipeline,
                                                    bool has_text_encoder,
                                                    std::string_view architecture) {
  if (pipeline == "FluxPipeline" || pipeline == "FluxFillPipeline")
    return diffusers_family("flux", architecture);
  if (pipeline == "StableDiffusion3Pipeline") return diffusers_family("sd3");
  // SDXL's img2img and inpaint pipelines serve the base model (two text encoders) and the
  // refiner (OpenCLIP-G only): the folder's text_encoder entry tells them apart.
  if (pipeline == "StableDiffusionXLImg2ImgPipeline" ||
      pipeline == "StableDiffusionXLInpaintPipeline")
    return diffusers_family(has_text_encoder ? "sdxl" : "sdxl-refiner");
  for (const DiffusersFamily& f : families())
    if (f.pipeline == pipeline || f.inpaint_pipeline == pipeline) return &f;
  return nullptr;
}

Result<std::string> unet_config_json(const DiffusersFamily& fam, const ShapeMap& u,
                                     std::string_view prediction, const std::string& where) {
  JsonObject o;
  o.set_str("_class_name", "UNet2DConditionModel");
  o.set_str("_diffusers_version", kDiffusersVersion);
  CKPT_ASSIGN_OR_RETURN(Shape conv_in, shape_of(u, "conv_in.weight", 4, where, "in_channels"));
  CKPT_ASSIGN_OR_RETURN(Shape conv_out, shape_of(u, "conv_out.weight", 4, where, "out_channels"));
  const uint64_t levels = count_of(
      u, [](uint64_t l) { return fmt::format("down_blocks.{}.resnets.0.conv1.weight", l); });
  if (levels == 0)
    return missing(where, "down_blocks.0.resnets.0.conv1.weight", "block_out_channels");
  const uint64_t per_block = count_of(
      u, [](uint64_t j) { return fmt::format("down_blocks.0.resnets.{}.conv1.weight", j); });
  std::vector<uint64_t> channels, heads, depth;
  std::vector<std::string> down_types, up_types;
  for (uint64_t l = 0; l < levels; ++l) {
    const Shape& c = u.find(fmt::format("down_blocks.{}.resnets.0.conv1.weight", l))->second;
    channels.push_back(c[0]);
    heads.push_back(c[0] / 64);
    const bool attn = u.count(fmt::format("down_blocks.{}.attentions.0.proj_in.weight", l)) > 0;
    down_types.push_back(attn ? "CrossAttnDownBlock2D" : "DownBlock2D");
    const uint64_t d = count_of(u, [l](uint64_t k) {
      return fmt::format("down_blocks.{}.attentions.0.transformer_blocks.{}.attn1.to_q.weight", l,
                         k);
    });
    depth.push_back(attn ? d : 1);
    const bool up_attn = u.count(fmt::format("up_blocks.{}.attentions.0.proj_in.weight", l)) > 0;
    up_types.push_back(up_attn ? "CrossAttnUpBlock2D" : "UpBlock2D");
  }
  CKPT_ASSIGN_OR_RETURN(
      Shape to_k, shape_of(u, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", 2,
                           where, "cross_attention_dim"));
  auto proj_in = u.find("mid_block.attentions.0.proj_in.weight");
  if (proj_in == u.end())
    return missing(where, "mid_block.attentions.0.proj_in.weight", "use_linear_projection");
  o.set_str("act_fn", "silu");
  if (fam.heads_from_width)
    o.set("attention_head_dim", json_list(heads));
  else
    o.set("attention_head_dim", 8);
  o.set("block_out_channels", json_list(channels));
  o.set_bool("center_input_sample", false);
  o.set("cross_attention_dim", to_k[1]);
  o.set("down_block_types", json_list(down_types));
  o.set("downsample_padding", 1);
  o.set_bool("flip_sin_to_cos", true);
  o.set("freq_shift", 0);
  o.set("in_channels", conv_in[1]);
  o.set("layers_per_block", per_block);
  o.set("mid_block_scale_factor", 1);
  o.set("norm_eps", std::string("1e-05"));
  o.set("norm_num_groups", 32);
  o.set("out_channels", conv_out[0]);
  o.set("sample_size",
        prediction == "v_prediction" ? fam.unet_sample_size_v : fam.unet_sample_size);
  o.set("up_block_types", json_list(up_types));
  o.set_bool("use_linear_projection", proj_in->second.size() == 2);
  // diffusers builds the mid block with the last level's depth: one number when every level
  // with attention and the mid block share it (the refiner's 4), else one per level.
  const uint64_t mid_depth = count_of(u, [](uint64_t k) {
    return fmt::format("mid_block.attentions.0.transformer_blocks.{}.attn1.to_q.weight", k);
  });
  bool uniform = true;
  for (uint64_t l = 0; l < levels; ++l)
    if (down_types[l] != "DownBlock2D" && depth[l] != mid_depth) uniform = false;
  if (uniform) {
    if (mid_depth != 1) o.set("transformer_layers_per_block", mid_depth);
  } else {
    if (down_types.back() == "DownBlock2D") depth.back() = mid_depth;
    if (depth.back() != mid_depth)
      return Status(ErrorCode::kUnsupported,
                    fmt::format("the mid block has {} transformer blocks and the last level {}; "
                                "a diffusers config cannot say that",
                                mid_depth, depth.back()),
                    where);
    o.set("transformer_layers_per_block", json_list(depth));
  }
  if (auto add = u.find("add_embedding.linear_1.weight"); add != u.end()) {
    // SDXL's "text_time" conditioning: pooled text embedding + 6 (base) or 5 (refiner)
    // size/crop/aesthetic numbers, each a 256-wide sinusoidal embedding.
    if (add->second.size() != 2)
      return Status(ErrorCode::kInvalidArgument, "add_embedding.linear_1.weight is not a matrix",
                    where, kNoOffset, add->first);
    o.set_str("addition_embed_type", "text_time");
    o.set("addition_embed_type_num_heads", 64);
    o.set("addition_time_embed_dim", 256);
    o.set("projection_class_embeddings_input_dim", add->second[1]);
  }
  return o.text();
}

Result<std::string> vae_config_json(const DiffusersFamily& fam, const ShapeMap& v,
                                    const std::string& where) {
  JsonObject o;
  o.set_str("_class_name", "AutoencoderKL");
  o.set_str("_diffusers_version", kDiffusersVersion);
  CKPT_ASSIGN_OR_RETURN(Shape in, shape_of(v, "encoder.conv_in.weight", 4, where, "in_channels"));
  CKPT_ASSIGN_OR_RETURN(Shape out,
                        shape_of(v, "decoder.conv_out.weight", 4, where, "out_channels"));
  CKPT_ASSIGN_OR_RETURN(Shape z,
                        shape_of(v, "decoder.conv_in.weight", 4, where, "latent_channels"));
  const uint64_t levels = count_of(v, [](uint64_t l) {
    return fmt::format("encoder.down_blocks.{}.resnets.0.conv1.weight", l);
  });
  if (levels == 0)
    return missing(where, "encoder.down_blocks.0.resnets.0.conv1.weight", "block_out_channels");
  const uint64_t per_block = count_of(v, [](uint64_t j) {
    return fmt::format("encoder.down_blocks.0.resnets.{}.conv1.weight", j);
  });
  std::vector<uint64_t> channels;
  for (uint64_t l = 0; l < levels; ++l)
    channels.push_back(
        v.find(fmt::format("encoder.down_blocks.{}.resnets.0.conv1.weight", l))->second[0]);
  o.set_str("act_fn", "silu");
  o.set("block_out_channels", json_list(channels));
  o.set("down_block_types", json_list(std::vector<std::string>(levels, "DownEncoderBlock2D")));
  if (fam.vae_force_upcast) o.set_bool("force_upcast", true);
  o.set("in_channels", in[1]);
  o.set("latent_channels", z[1]);
  o.set("layers_per_block", per_block);
  o.set("norm_num_groups", 32);
  o.set("out_channels", out[0]);
  o.set("sample_size", fam.vae_sample_size);
  o.set("scaling_factor", std::string(fam.vae_scaling_factor));
  if (!fam.vae_shift_factor.empty()) o.set("shift_factor", std::string(fam.vae_shift_factor));
  o.set("up_block_types", json_list(std::vector<std::string>(levels, "UpDecoderBlock2D")));
  // The SD3/FLUX autoencoder has no 1×1 convolutions around the latent.
  if (!v.count("quant_conv.weight")) o.set_bool("use_quant_conv", false);
  if (!v.count("post_quant_conv.weight")) o.set_bool("use_post_quant_conv", false);
  return o.text();
}

Result<std::string> transformer_config_json(const DiffusersFamily& fam, const ShapeMap& t,
                                            const std::string& where) {
  JsonObject o;
  o.set_str("_diffusers_version", kDiffusersVersion);
  if (fam.family == "flux") {
    // FluxTransformer2DModel: every number but the patch size is a shape.
    o.set_str("_class_name", "FluxTransformer2DModel");
    CKPT_ASSIGN_OR_RETURN(Shape x,
                          shape_of(t, "x_embedder.weight", 2, where, "in_channels and the width"));
    CKPT_ASSIGN_OR_RETURN(Shape norm, shape_of(t, "transformer_blocks.0.attn.norm_q.weight", 1,
                                               where, "attention_head_dim"));
    CKPT_ASSIGN_OR_RETURN(Shape ctx,
                          shape_of(t, "context_embedder.weight", 2, where, "joint_attention_dim"));
    CKPT_ASSIGN_OR_RETURN(Shape pooled, shape_of(t, "time_text_embed.text_embedder.linear_1.weight",
                                                 2, where, "pooled_projection_dim"));
    CKPT_ASSIGN_OR_RETURN(Shape out, shape_of(t, "proj_out.weight", 2, where, "out_channels"));
    if (norm[0] == 0 || x[0] % norm[0] != 0)
      return Status(
          ErrorCode::kInvalidArgument,
          fmt::format("the width {} is not a whole number of {}-wide heads", x[0], norm[0]), where);
    o.set("attention_head_dim", norm[0]);
    o.set_bool("guidance_embeds", t.count("time_text_embed.guidance_embedder.linear_1.weight") > 0);
    o.set("in_channels", x[1]);
    o.set("joint_attention_dim", ctx[1]);
    o.set("num_attention_heads", x[0] / norm[0]);
    o.set("num_layers", count_of(t, [](uint64_t i) {
            return fmt::format("transformer_blocks.{}.attn.to_q.weight", i);
          }));
    o.set("num_single_layers", count_of(t, [](uint64_t i) {
            return fmt::format("single_transformer_blocks.{}.attn.to_q.weight", i);
          }));
    // Written only where it differs from in_channels (FLUX Fill), as published.
    if (out[0] != x[1]) o.set("out_channels", out[0]);
    o.set("patch_size", 1);
    o.set("pooled_projection_dim", pooled[1]);
    return o.text();
  }
  if (fam.family == "sd3") {
    // SD3Transformer2DModel (diffusers' convert_sd3_to_diffusers.py derives the same numbers).
    o.set_str("_class_name", "SD3Transformer2DModel");
    CKPT_ASSIGN_OR_RETURN(Shape proj, shape_of(t, "pos_embed.proj.weight", 4, where,
                                               "in_channels, patch_size and the width"));
    CKPT_ASSIGN_OR_RETURN(Shape pos,
                          shape_of(t, "pos_embed.pos_embed", 3, where, "pos_embed_max_size"));
    CKPT_ASSIGN_OR_RETURN(Shape ctx, shape_of(t, "context_embedder.weight", 2, where,
                                              "caption_projection_dim, joint_attention_dim"));
    CKPT_ASSIGN_OR_RETURN(Shape pooled, shape_of(t, "time_text_embed.text_embedder.linear_1.weight",
                                                 2, where, "pooled_projection_dim"));
    CKPT_ASSIGN_OR_RETURN(Shape out, shape_of(t, "proj_out.weight", 2, where, "out_channels"));
    // The head width: the q-norm's length where there is one (SD3.5), else 64 (SD3's).
    auto norm = t.find("transformer_blocks.0.attn.norm_q.weight");
    const uint64_t head = norm != t.end() && norm->second.size() == 1 ? norm->second[0] : 64;
    const uint64_t patch = proj[2];
    uint64_t side = 0;
    while ((side + 1) * (side + 1) <= pos[1]) ++side;
    if (side * side != pos[1] || head == 0 || proj[0] % head != 0 || patch == 0 ||
        out[0] % (patch * patch) != 0)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("the shapes do not make an MMDiT: {} positions (a square "
                                "expected), width {} in {}-wide heads, {} output rows for "
                                "{}×{} patches",
                                pos[1], proj[0], head, out[0], patch, patch),
                    where);
    std::vector<uint64_t> dual;
    const uint64_t layers = count_of(
        t, [](uint64_t i) { return fmt::format("transformer_blocks.{}.attn.to_q.weight", i); });
    for (uint64_t i = 0; i < layers; ++i)
      if (t.count(fmt::format("transformer_blocks.{}.attn2.to_q.weight", i))) dual.push_back(i);
    o.set("attention_head_dim", head);
    o.set("caption_projection_dim", ctx[0]);
    if (!dual.empty()) o.set("dual_attention_layers", json_list(dual));
    o.set("in_channels", proj[1]);
    o.set("joint_attention_dim", ctx[1]);
    o.set("num_attention_heads", proj[0] / head);
    o.set("num_layers", layers);
    o.set("out_channels", out[0] / (patch * patch));
    o.set("patch_size", patch);
    o.set("pooled_projection_dim", pooled[1]);
    o.set("pos_embed_max_size", side);
    if (norm != t.end()) o.set_str("qk_norm", "rms_norm");
    o.set("sample_size", 128);
    return o.text();
  }
  return Status(ErrorCode::kInternal, "no transformer config for the family", where);
}

Result<std::string> t5_config_json(const ShapeMap& c, DType dtype, const std::string& where) {
  JsonObject o;
  CKPT_ASSIGN_OR_RETURN(Shape shared,
                        shape_of(c, "shared.weight", 2, where, "vocab_size and d_model"));
  CKPT_ASSIGN_OR_RETURN(
      Shape bias,
      shape_of(c, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 2, where,
               "num_heads and relative_attention_num_buckets"));
  CKPT_ASSIGN_OR_RETURN(
      Shape q, shape_of(c, "encoder.block.0.layer.0.SelfAttention.q.weight", 2, where, "d_kv"));
  const bool gated = c.count("encoder.block.0.layer.1.DenseReluDense.wi_0.weight") > 0;
  CKPT_ASSIGN_OR_RETURN(Shape wi,
                        shape_of(c,
                                 gated ? "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
                                       : "encoder.block.0.layer.1.DenseReluDense.wi.weight",
                                 2, where, "d_ff"));
  const uint64_t layers = count_of(c, [](uint64_t k) {
    return fmt::format("encoder.block.{}.layer.0.SelfAttention.q.weight", k);
  });
  if (bias[1] == 0 || q[0] % bias[1] != 0)
    return Status(
        ErrorCode::kInvalidArgument,
        fmt::format("{} attention rows are not a whole number of {} heads", q[0], bias[1]), where);
  o.set("architectures", json_list(std::vector<std::string>{"T5EncoderModel"}));
  o.set("classifier_dropout", std::string("0.0"));
  o.set("d_ff", wi[0]);
  o.set("d_kv", q[0] / bias[1]);
  o.set("d_model", shared[1]);
  o.set("decoder_start_token_id", 0);
  o.set_str("dense_act_fn", gated ? "gelu_new" : "relu");
  o.set("dropout_rate", std::string("0.1"));
  o.set("eos_token_id", 1);
  o.set_str("feed_forward_proj", gated ? "gated-gelu" : "relu");
  o.set("initializer_factor", std::string("1.0"));
  o.set_bool("is_encoder_decoder", true);
  o.set_bool("is_gated_act", gated);
  o.set("layer_norm_epsilon", std::string("1e-06"));
  o.set_str("model_type", "t5");
  o.set("num_decoder_layers", layers);
  o.set("num_heads", bias[1]);
  o.set("num_layers", layers);
  o.set_bool("output_past", true);
  o.set("pad_token_id", 0);
  o.set("relative_attention_max_distance", 128);
  o.set("relative_attention_num_buckets", bias[0]);
  o.set_bool("tie_word_embeddings", false);
  const char* torch_dtype = dtype == DType::F16    ? "float16"
                            : dtype == DType::BF16 ? "bfloat16"
                                                   : "float32";
  o.set_str("torch_dtype", torch_dtype);
  o.set_str("transformers_version", "4.44.0");
  o.set_bool("use_cache", true);
  o.set("vocab_size", shared[0]);
  return o.text();
}

Result<std::string> clip_config_json(PartKind kind, const ShapeMap& c, DType dtype,
                                     const std::string& where) {
  JsonObject o;
  CKPT_ASSIGN_OR_RETURN(Shape tok, shape_of(c, "text_model.embeddings.token_embedding.weight", 2,
                                            where, "vocab_size and hidden_size"));
  CKPT_ASSIGN_OR_RETURN(Shape pos, shape_of(c, "text_model.embeddings.position_embedding.weight", 2,
                                            where, "max_position_embeddings"));
  const uint64_t layers = count_of(
      c, [](uint64_t k) { return fmt::format("text_model.encoder.layers.{}.mlp.fc1.weight", k); });
  CKPT_ASSIGN_OR_RETURN(Shape fc1, shape_of(c, "text_model.encoder.layers.0.mlp.fc1.weight", 2,
                                            where, "intermediate_size"));
  auto proj = c.find("text_projection.weight");
  const bool with_projection = proj != c.end();
  o.set("architectures", json_list(std::vector<std::string>{
                             with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel"}));
  o.set("attention_dropout", std::string("0.0"));
  o.set("bos_token_id", 0);
  o.set("dropout", std::string("0.0"));
  o.set("eos_token_id", 2);
  // OpenAI's CLIP-L uses the sigmoid approximation of GELU; OpenCLIP's G and H the exact one.
  o.set_str("hidden_act", kind == PartKind::kClipL ? "quick_gelu" : "gelu");
  o.set("hidden_size", tok[1]);
  o.set("initializer_factor", std::string("1.0"));
  o.set("initializer_range", std::string("0.02"));
  o.set("intermediate_size", fc1[0]);
  o.set("layer_norm_eps", std::string("1e-05"));
  o.set("max_position_embeddings", pos[0]);
  o.set_str("model_type", "clip_text_model");
  // Every CLIP text encoder of these families has 64-wide attention heads.
  o.set("num_attention_heads", tok[1] / 64);
  o.set("num_hidden_layers", layers);
  o.set("pad_token_id", 1);
  o.set("projection_dim", with_projection && proj->second.size() == 2 ? proj->second[0] : tok[1]);
  const char* torch_dtype = dtype == DType::F16    ? "float16"
                            : dtype == DType::BF16 ? "bfloat16"
                                                   : "float32";
  o.set_str("torch_dtype", torch_dtype);
  o.set_str("transformers_version", "4.44.0");
  o.set("vocab_size", tok[0]);
  return o.text();
}

std::string scheduler_config_json(const DiffusersFamily& fam, std::string_view prediction) {
  JsonObject o;
  if (fam.scheduler_prediction) o.set_str("prediction_type", prediction);
  o.set_str("_class_name", fam.scheduler_class);
  o.set_str("_diffusers_version", kDiffusersVersion);
  for (const auto& [k, v] : fam.scheduler) o.set(k, std::string(v));
  return o.text();
}

std::string tokenizer_of(std::string_view text_encoder_folder) {
  // text_encoder → tokenizer, text_encoder_2 → tokenizer_2, …
  return fmt::format("tokenizer{}",
                     text_encoder_folder.substr(std::string_view("text_encoder").size()));
}

std::vector<std::string> tokenizers_of(const DiffusersFamily& fam) {
  std::vector<std::string> out;
  for (const DiffusersSlot& s : fam.slots)
    if (s.folder.starts_with("text_encoder")) out.push_back(tokenizer_of(s.folder));
  return out;
}

std::string model_index_json(const DiffusersFamily& fam, std::string_view pipeline,
                             const std::vector<std::string>& tokenizers,
                             const std::vector<std::string_view>& absent) {
  JsonObject o;
  o.set_str("_class_name", pipeline);
  o.set_str("_diffusers_version", kDiffusersVersion);
  for (std::string_view n : fam.null_parts) o.set(n, std::string("[null, null]"));
  for (const DiffusersSlot& s : fam.slots) {
    if (!s.folder.starts_with("text_encoder")) continue;
    const std::string t = tokenizer_of(s.folder);
    if (std::find(tokenizers.begin(), tokenizers.end(), t) != tokenizers.end())
      o.set(t, fmt::format("[\"transformers\", \"{}\"]",
                           s.kind == PartKind::kT5xxl ? "T5TokenizerFast" : "CLIPTokenizer"));
  }
  for (const auto& [k, v] : fam.pipeline_flags) o.set(k, std::string(v));
  o.set("scheduler", fmt::format("[\"diffusers\", \"{}\"]", fam.scheduler_class));
  for (const DiffusersSlot& s : fam.slots) {
    const bool missing = std::find(absent.begin(), absent.end(), s.folder) != absent.end();
    o.set(s.folder, missing ? std::string("[null, null]")
                            : fmt::format("[\"{}\", \"{}\"]", s.library, s.class_name));
  }
  return o.text();
}

Status check_config_against_weights(const std::string& config_path, const std::string& derived) {
  // The keys each config derivation takes from shapes (unet, vae, CLIP).
  static constexpr std::string_view kFromShapes[] = {
      "in_channels",
      "out_channels",
      "latent_channels",
      "block_out_channels",
      "layers_per_block",
      "cross_attention_dim",
      "down_block_types",
      "up_block_types",
      "use_linear_projection",
      "projection_class_embeddings_input_dim",
      "hidden_size",
      "intermediate_size",
      "num_hidden_layers",
      "vocab_size",
      "max_position_embeddings",
      "num_layers",
      "num_single_layers",
      "joint_attention_dim",
      "pooled_projection_dim",
      "guidance_embeds",
      "caption_projection_dim",
      "pos_embed_max_size",
      "dual_attention_layers",
      "d_model",
      "d_ff",
      "d_kv",
      "num_heads",
      "relative_attention_num_buckets",
  };
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(config_path, ec);
  if (ec) return Status::ok();  // no config: the weights alone decide
  if (size > (1u << 20))
    return Status(ErrorCode::kLimitExceeded,
                  fmt::format("{} bytes; a config.json is a few kilobytes", size), config_path);
  simdjson::dom::parser theirs_parser, ours_parser;
  simdjson::dom::element theirs, ours;
  if (auto err = theirs_parser.load(config_path).get(theirs))
    return Status(ErrorCode::kCorrupt,
                  fmt::format("not valid JSON: {}", simdjson::error_message(err)), config_path);
  if (ours_parser.parse(derived).get(ours))
    return Status(ErrorCode::kInternal, "the derived config is not JSON", config_path);
  for (std::string_view key : kFromShapes) {
    simdjson::dom::element a, b;
    if (theirs[key].get(a) || ours[key].get(b)) continue;
    const std::string va = simdjson::minify(a), vb = simdjson::minify(b);
    if (va != vb)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("the config disagrees with the weights: {} is {} there, the "
                                "weights give {}",
                                key, va, vb),
                    config_path);
  }
  return Status::ok();
}

}  // namespace ckptkit::detail
