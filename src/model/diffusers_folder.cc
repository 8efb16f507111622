// A diffusers folder: model_index.json names the pipeline and its parts, one subfolder each.
// Only that file (and a part's config.json where it settles the architecture) is parsed; the
// weight files are listed, not read.
#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <filesystem>

#include "ckptkit/anatomy.h"
#include "io/errors.h"

namespace ckptkit {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMaxJsonBytes = 1u << 20;

Result<simdjson::dom::element> load_json(simdjson::dom::parser& parser, const fs::path& p) {
  std::error_code ec;
  const uint64_t size = fs::file_size(p, ec);
  if (ec)
    return Status(ErrorCode::kIoError, fmt::format("cannot read: {}", ec.message()), p.string());
  if (size > kMaxJsonBytes)
    return Status(ErrorCode::kLimitExceeded,
                  fmt::format("{} bytes; a model_index.json is a few hundred", size), p.string());
  simdjson::dom::element doc;
  if (auto err = parser.load(p.string()).get(doc))
    return Status(ErrorCode::kCorrupt,
                  fmt::format("not valid JSON: {}", simdjson::error_message(err)), p.string());
  return doc;
}

std::string string_field(simdjson::dom::element obj, std::string_view key) {
  std::string_view v;
  if (obj[key].get_string().get(v)) return {};
  return std::string(v);
}

/// A number or boolean field of a part's config.json, "" when absent.
std::string config_field(const fs::path& dir, std::string_view part, std::string_view key) {
  simdjson::dom::parser parser;
  auto doc = load_json(parser, dir / part / "config.json");
  if (!doc) return {};
  simdjson::dom::element v;
  if ((*doc)[key].get(v)) return {};
  if (v.is_bool()) return v.get_bool().value() ? "true" : "false";
  if (v.is_uint64()) return std::to_string(v.get_uint64().value());
  if (v.is_int64()) return std::to_string(v.get_int64().value());
  return {};
}

}  // namespace

Result<DiffusersFolder> read_diffusers_folder(const std::string& dir) {
  DiffusersFolder out;
  out.path = dir;
  const fs::path root(dir);
  simdjson::dom::parser parser;
  CKPT_ASSIGN_OR_RETURN(simdjson::dom::element doc, load_json(parser, root / "model_index.json"));
  simdjson::dom::object obj;
  if (doc.get_object().get(obj))
    return Status(ErrorCode::kCorrupt, "model_index.json is not a JSON object",
                  (root / "model_index.json").string());
  out.pipeline = string_field(doc, "_class_name");
  out.diffusers_version = string_field(doc, "_diffusers_version");
  for (auto field : obj) {
    const std::string_view key = field.key;
    if (key.starts_with('_')) continue;
    // A part is a subfolder: a key that is not a plain folder name ("", "..", "a/b") would
    // make us list files outside the model's folder.
    if (key.empty() || key == "." || key == ".." || key.find('/') != std::string_view::npos ||
        key.find('\0') != std::string_view::npos)
      continue;
    simdjson::dom::array arr;
    if (field.value.get_array().get(arr) || arr.size() != 2) continue;
    DiffusersPart p;
    p.name = std::string(key);
    std::string_view s;
    if (!arr.at(0).get_string().get(s)) p.library = std::string(s);
    if (!arr.at(1).get_string().get(s)) p.class_name = std::string(s);
    if (p.library.empty() && p.class_name.empty()) continue;  // [null, null]: not used
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root / p.name, ec)) {
      const std::string name = e.path().filename().string();
      for (std::string_view ext : {".safetensors", ".bin", ".pt", ".ckpt", ".gguf"})
        if (name.ends_with(ext)) {
          p.files.push_back(name);
          std::error_code ec2;
          p.bytes += e.file_size(ec2);
        }
    }
    std::sort(p.files.begin(), p.files.end());
    out.parts.push_back(std::move(p));
  }
  const std::string& c = out.pipeline;
  if (c == "StableDiffusionPipeline" || c == "StableDiffusionInpaintPipeline" ||
      c == "StableDiffusionImg2ImgPipeline") {
    const std::string ctx = config_field(root, "unet", "cross_attention_dim");
    out.architecture = ctx == "768" ? "sd1" : ctx == "1024" ? "sd2" : "sd1-or-sd2";
    const std::string in = config_field(root, "unet", "in_channels");
    if (in == "9") out.architecture += ", inpaint";
  } else if (c == "StableDiffusionXLPipeline" || c == "StableDiffusionXLInpaintPipeline") {
    out.architecture = "sdxl-base";
  } else if (c == "StableDiffusionXLImg2ImgPipeline") {
    const bool has_te1 =
        std::any_of(out.parts.begin(), out.parts.end(),
                    [](const DiffusersPart& p) { return p.name == "text_encoder"; });
    out.architecture = has_te1 ? "sdxl-base" : "sdxl-refiner";
  } else if (c == "StableDiffusion3Pipeline") {
    const std::string layers = config_field(root, "transformer", "num_layers");
    out.architecture = layers == "38" ? "sd3.5-large" : "sd3";
  } else if (c == "FluxPipeline" || c == "FluxFillPipeline" || c == "FluxControlPipeline") {
    const std::string g = config_field(root, "transformer", "guidance_embeds");
    out.architecture = g == "false" ? "flux1-schnell" : g == "true" ? "flux1-dev" : "flux1";
  }
  return out;
}

}  // namespace ckptkit
