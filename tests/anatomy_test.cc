// Detection on the published layouts (data/layouts, embedded) and on variants derived from
// them the way the real variant files differ (input width, removed blocks, markers, metadata).
// Checkpoints are built in memory from the tables: names, dtypes and shapes are all detection
// reads.
#include "ckptkit/anatomy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>

#include "model/families.h"
#include "model/layouts.h"

namespace ckptkit {
namespace {

Checkpoint from_layouts(std::vector<TensorLayout> tensors) {
  Checkpoint ck;
  uint64_t at = 0;
  for (const TensorLayout& t : tensors) {
    TensorInfo info;
    info.name = t.name;
    info.dtype = t.dtype;
    info.shape = t.shape;
    info.begin = at;
    info.end = at + dtype_bytes(t.dtype, shape_numel(t.shape).value_or(0)).value_or(0);
    at = info.end;
    ck.tensors.push_back(std::move(info));
  }
  return ck;
}

std::vector<TensorLayout> layout(const std::string& name) {
  auto l = load_layout(name);
  EXPECT_TRUE(l.is_ok()) << name;
  return l.is_ok() ? *l : std::vector<TensorLayout>{};
}

using Edit = std::function<void(std::vector<TensorLayout>&)>;

void erase_if_name(std::vector<TensorLayout>& ts,
                   const std::function<bool(const std::string&)>& f) {
  ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const TensorLayout& t) { return f(t.name); }),
           ts.end());
}

void set_shape(std::vector<TensorLayout>& ts, const std::string& name, Shape shape) {
  for (TensorLayout& t : ts)
    if (t.name == name) {
      t.shape = std::move(shape);
      return;
    }
  ADD_FAILURE() << "no tensor " << name;
}

/// Removes transformer blocks [keep, …) of `block` (e.g. "input_blocks.7.1").
void keep_blocks(std::vector<TensorLayout>& ts, const std::string& block, unsigned keep) {
  const std::string head = "model.diffusion_model." + block + ".transformer_blocks.";
  erase_if_name(ts, [&](const std::string& n) {
    if (!n.starts_with(head)) return false;
    return std::stoul(n.substr(head.size())) >= keep;
  });
}

struct Case {
  const char* name;
  const char* base;
  Edit edit;
  const char* architecture;
  const char* variant;
  const char* layout;
  const char* family;
};

std::vector<Case> cases() {
  auto none = [](std::vector<TensorLayout>&) {};
  return {
      {"sd15", "sd15-ldm", none, "sd1", "standard", "monolithic", "sd1"},
      {"sd2", "sd2-ldm", none, "sd2", "standard", "monolithic", "sd2"},
      {"sdxl", "sdxl-sgm", none, "sdxl-base", "standard", "monolithic", "sdxl"},
      {"sdxl_refiner", "sdxl-refiner-sgm", none, "sdxl-refiner", "standard", "monolithic",
       "sdxl-refiner"},
      {"sd3", "sd3-medium", none, "sd3-medium", "standard", "monolithic", "sd3"},
      {"sd3_notext", "sd3-medium-notext", none, "sd3-medium", "standard", "monolithic", "sd3"},
      {"flux_aio", "flux1-dev-comfy-fp8-aio", none, "flux1-dev", "standard", "monolithic", "flux"},
      {"flux_dev", "flux1-dev-transformer", none, "flux1-dev", "standard", "diffusion-model",
       "flux"},
      {"flux_schnell", "flux1-schnell-transformer", none, "flux1-schnell", "standard",
       "diffusion-model", "flux"},
      {"sd15_unet_diffusers", "sd15-diffusers-unet", none, "sd1", "standard", "diffusion-model",
       "sd1"},
      {"sdxl_unet_diffusers", "sdxl-diffusers-unet", none, "sdxl-base", "standard",
       "diffusion-model", "sdxl"},
      {"clip_l", "clip-l", none, "clip-l", "12 layers, width 768", "text-encoder", ""},
      {"clip_l_diffusers", "sd15-diffusers-text_encoder", none, "clip-l", "12 layers, width 768",
       "text-encoder", ""},
      {"clip_g", "clip-g", none, "clip-g", "32 layers, width 1280", "text-encoder", ""},
      {"t5", "t5xxl-encoder", none, "t5xxl", "24 blocks, weights F16", "text-encoder", ""},
      {"flux_vae", "flux1-vae", none, "vae", "16-channel latent, no quant_conv", "vae", ""},
      {"sd_vae_diffusers", "sd15-diffusers-vae", none, "vae", "4-channel latent", "vae", ""},
      {"lora_kohya_sd15", "lora-kohya-sd15", none, "lora", "", "lora", ""},
      {"lora_kohya_sdxl", "lora-kohya-sdxl", none, "lora", "", "lora", ""},
      {"lora_diffusers", "lora-diffusers-sd15", none, "lora", "", "lora", ""},
      // Variants by input width.
      {"sd15_inpaint", "sd15-ldm",
       [](auto& ts) {
         set_shape(ts, "model.diffusion_model.input_blocks.0.0.weight", {320, 9, 3, 3});
       },
       "sd1", "inpaint", "monolithic", "sd1"},
      {"sd15_ip2p", "sd15-ldm",
       [](auto& ts) {
         set_shape(ts, "model.diffusion_model.input_blocks.0.0.weight", {320, 8, 3, 3});
       },
       "sd1", "instruct-pix2pix", "monolithic", "sd1"},
      {"flux_fill", "flux1-dev-transformer",
       [](auto& ts) {
         set_shape(ts, "img_in.weight", {3072, 384});
       },
       "flux1-dev", "fill", "diffusion-model", "flux"},
      {"flux_depth", "flux1-dev-transformer",
       [](auto& ts) {
         set_shape(ts, "img_in.weight", {3072, 128});
       },
       "flux1-dev", "depth-or-canny", "diffusion-model", "flux"},
      // Distilled SDXL: transformer depth per level 0/2/4 (SSD-1B) and 0/1/2 (Vega), no
      // transformer in the middle block.
      {"ssd1b", "sdxl-sgm",
       [](auto& ts) {
         keep_blocks(ts, "input_blocks.7.1", 4);
         keep_blocks(ts, "input_blocks.8.1", 4);
         erase_if_name(ts, [](const std::string& n) {
           return n.starts_with("model.diffusion_model.middle_block.1.");
         });
       },
       "ssd-1b", "standard", "monolithic", "sdxl"},
      {"vega", "sdxl-sgm",
       [](auto& ts) {
         keep_blocks(ts, "input_blocks.4.1", 1);
         keep_blocks(ts, "input_blocks.5.1", 1);
         keep_blocks(ts, "input_blocks.7.1", 2);
         keep_blocks(ts, "input_blocks.8.1", 2);
       },
       "segmind-vega", "standard", "monolithic", "sdxl"},
      // Markers loaders read.
      {"playground", "sdxl-sgm",
       [](auto& ts) {
         ts.push_back({"edm_mean", DType::F32, {1, 4, 1, 1}});
         ts.push_back({"edm_std", DType::F32, {1, 4, 1, 1}});
       },
       "sdxl-base", "playground-2.5", "monolithic", "sdxl"},
      {"vpred", "sdxl-sgm",
       [](auto& ts) {
         ts.push_back({"v_pred", DType::F32, {0}});
         ts.push_back({"ztsnr", DType::F32, {0}});
       },
       "sdxl-base", "v-prediction+zero-terminal-snr", "monolithic", "sdxl"},
      // SD3.5: MMDiT-X (second attention in blocks 0..12) and the large model's width.
      {"sd35_medium", "sd3-medium",
       [](auto& ts) {
         for (int i = 0; i < 13; ++i)
           ts.push_back({"model.diffusion_model.joint_blocks." + std::to_string(i) +
                             ".x_block.attn2.qkv.weight",
                         DType::F16,
                         {4608, 1536}});
       },
       "sd3.5-medium", "standard", "monolithic", "sd3"},
      {"sd35_large", "sd3-medium",
       [](auto& ts) {
         set_shape(ts, "model.diffusion_model.x_embedder.proj.weight", {2432, 16, 2, 2});
         ts.push_back({"model.diffusion_model.joint_blocks.37.x_block.attn.qkv.weight",
                       DType::F16,
                       {7296, 2432}});
       },
       "sd3.5-large", "standard", "monolithic", "sd3"},
      // A context width no model has.
      {"odd_unet", "sd15-ldm",
       [](auto& ts) {
         set_shape(ts,
                   "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                   {320, 999});
       },
       "unknown", "", "monolithic", ""},
  };
}

class Detection : public ::testing::TestWithParam<Case> {};

TEST_P(Detection, FindsTheArchitecture) {
  const Case& c = GetParam();
  std::vector<TensorLayout> ts = layout(c.base);
  c.edit(ts);
  const Anatomy a = analyze(from_layouts(ts));
  EXPECT_EQ(a.architecture, c.architecture);
  EXPECT_EQ(a.variant, c.variant);
  EXPECT_EQ(a.layout, c.layout);
  EXPECT_EQ(a.family, c.family);
  if (std::string_view(c.architecture) != "unknown") {
    EXPECT_EQ(a.confidence, "keys");
    EXPECT_FALSE(a.evidence.empty());
  } else {
    ASSERT_FALSE(a.candidates.empty());
    EXPECT_EQ(a.candidates[0].architecture, "sd1");
    EXPECT_NE(a.candidates[0].why_not.find("attn2.to_k.weight is [320, 999]"), std::string::npos)
        << a.candidates[0].why_not;
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, Detection, ::testing::ValuesIn(cases()),
                         [](const auto& p) { return std::string(p.param.name); });

std::vector<TensorLayout> joined(const std::vector<std::string>& names) {
  std::vector<TensorLayout> out;
  for (const std::string& n : names) {
    auto l = layout(n);
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

bool has_defect(const Anatomy& a, std::string_view code) {
  return std::any_of(a.defects.begin(), a.defects.end(),
                     [&](const Defect& d) { return d.code == code; });
}

TEST(Anatomy, EveryTensorBelongsToExactlyOneComponent) {
  const Checkpoint ck = from_layouts(joined({"sd15-ldm", "sd15-ldm-ema"}));
  const Anatomy a = analyze(ck);
  std::vector<int> seen(ck.tensors.size(), 0);
  std::map<std::string, size_t> by_role;
  for (const Component& c : a.components) {
    by_role[std::string(role_name(c.role))] += c.tensors.size();
    for (size_t i : c.tensors) ++seen[i];
  }
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  EXPECT_EQ(by_role["diffusion_model"], 686u);
  EXPECT_EQ(by_role["ema"], 686u);
  EXPECT_EQ(by_role["text_encoder"], 197u);
  EXPECT_EQ(by_role["vae"], 248u);
  EXPECT_EQ(by_role["training_extra"], 14u);  // 12 DDPM buffers + model_ema.decay/num_updates
  EXPECT_TRUE(has_defect(a, "ema-duplicate"));
  EXPECT_FALSE(has_defect(a, "missing-component"));
}

TEST(Anatomy, MissingVaeIsADefectAndUnknownKeysAreListed) {
  std::vector<TensorLayout> ts = layout("sd15-ldm");
  erase_if_name(ts, [](const std::string& n) { return n.starts_with("first_stage_model."); });
  ts.push_back({"my_extra.weight", DType::F16, {4}});
  const Anatomy a = analyze(from_layouts(ts));
  EXPECT_EQ(a.architecture, "sd1");
  EXPECT_TRUE(has_defect(a, "missing-component"));
  ASSERT_TRUE(has_defect(a, "unknown-keys"));
  for (const Defect& d : a.defects)
    if (d.code == "unknown-keys") {
      EXPECT_EQ(d.tensors, std::vector<std::string>{"my_extra.weight"});
    }
}

TEST(Anatomy, F32DiffusionModelWhereF16IsUsual) {
  std::vector<TensorLayout> ts = layout("sdxl-sgm");
  for (TensorLayout& t : ts)
    if (t.name.starts_with("model.diffusion_model.")) t.dtype = DType::F32;
  EXPECT_TRUE(has_defect(analyze(from_layouts(ts)), "f32-unusual"));
  EXPECT_FALSE(has_defect(analyze(from_layouts(layout("sdxl-sgm"))), "f32-unusual"));
  // SD1's published file is F32: no defect.
  EXPECT_FALSE(has_defect(analyze(from_layouts(layout("sd15-ldm"))), "f32-unusual"));
}

TEST(Anatomy, LatentMismatchBetweenVaeAndDenoiser) {
  std::vector<TensorLayout> ts = layout("sd15-ldm");
  set_shape(ts, "first_stage_model.decoder.conv_in.weight", {512, 16, 3, 3});
  EXPECT_TRUE(has_defect(analyze(from_layouts(ts)), "latent-mismatch"));
}

TEST(Anatomy, LoraBaseFamilies) {
  struct L {
    const char* layout;
    const char* format;
    const char* base;
    uint64_t rank;
  };
  for (const L& l :
       {L{"lora-kohya-sd15", "kohya", "sd1", 32}, L{"lora-kohya-sdxl", "kohya", "sdxl", 32},
        L{"lora-kohya-sdxl-conv", "kohya", "sdxl", 32},
        L{"lora-diffusers-sd15", "diffusers", "sd1", 4}, L{"lora-peft-sd15", "peft", "sd1", 4}}) {
    const Anatomy a = analyze(from_layouts(layout(l.layout)));
    EXPECT_EQ(a.lora_format, l.format) << l.layout;
    EXPECT_EQ(a.lora_base, l.base) << l.layout;
    EXPECT_EQ(a.lora_rank, l.rank) << l.layout;
  }
}

TEST(Anatomy, DistillationOnlyFromMetadata) {
  Checkpoint ck = from_layouts(layout("sdxl-sgm"));
  Anatomy plain = analyze(ck);
  EXPECT_EQ(plain.distillation, "");
  EXPECT_TRUE(std::any_of(plain.notes.begin(), plain.notes.end(), [](const std::string& n) {
    return n.find("not determinable from the weights") != std::string::npos;
  }));
  ck.metadata["modelspec.title"] = "SDXL-Turbo 1.0";
  Anatomy turbo = analyze(ck);
  EXPECT_EQ(turbo.distillation, "turbo");
  EXPECT_EQ(turbo.distillation_source, "modelspec.title");
  ck.metadata["modelspec.title"] = "turbot fishing";  // a word that merely contains it
  EXPECT_EQ(analyze(ck).distillation, "");
}

TEST(Anatomy, Sd2PredictionTypeFromMetadataOnly) {
  Checkpoint ck = from_layouts(layout("sd2-ldm"));
  Anatomy a = analyze(ck);
  EXPECT_EQ(a.variant, "standard");
  EXPECT_EQ(a.modelspec, "stable-diffusion-v2-512");
  ck.metadata["modelspec.architecture"] = "stable-diffusion-v2-768-v";
  a = analyze(ck);
  EXPECT_EQ(a.variant, "v-prediction");
  EXPECT_EQ(a.modelspec, "stable-diffusion-v2-768-v");
}

}  // namespace
}  // namespace ckptkit
