#include "cli/anatomy_report.h"

#include <fmt/format.h>

#include "cli/commands.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {
namespace {

std::string dtypes_text(const Component& c) {
  std::string s;
  for (const auto& [name, n] : c.dtypes)
    s += fmt::format("{}{}{}", s.empty() ? "" : ", ", name,
                     c.dtypes.size() > 1 ? fmt::format(" ({})", n) : "");
  return s;
}

}  // namespace

void write_anatomy_json(JsonWriter& w, const Anatomy& a, const Checkpoint& ck,
                        const std::vector<std::string>& fingerprints) {
  w.key("architecture").value(a.architecture);
  w.key("family").value(a.family);
  w.key("variant").value(a.variant);
  w.key("layout").value(a.layout);
  w.key("modelspec_architecture").value(a.modelspec);
  w.key("evidence").begin_object();
  w.key("confidence").value(a.confidence);
  w.key("decided_by").begin_array();
  for (const std::string& e : a.evidence) w.value(e);
  w.end_array();
  w.key("notes").begin_array();
  for (const std::string& n : a.notes) w.value(n);
  w.end_array();
  w.end_object();
  w.key("distillation").begin_object();
  if (a.distillation.empty()) {
    w.key("value").null();
    w.key("confidence").value("not determinable from weights");
  } else {
    w.key("value").value(a.distillation);
    w.key("confidence").value(ck.find(a.distillation_source) ? "keys" : "metadata");
    w.key("source").value(a.distillation_source);
  }
  w.end_object();
  w.key("components").begin_array();
  for (size_t ci = 0; ci < a.components.size(); ++ci) {
    const Component& c = a.components[ci];
    w.begin_object();
    w.key("role").value(role_name(c.role));
    w.key("kind").value(part_kind_name(c.kind));
    w.key("naming").value(naming_name(c.naming));
    w.key("prefix").value(c.prefix);
    w.key("detail").value(c.detail);
    w.key("tensors").value(static_cast<uint64_t>(c.tensors.size()));
    w.key("parameters").value(c.parameters);
    w.key("bytes").value(c.bytes);
    w.key("dtypes").begin_object();
    for (const auto& [name, n] : c.dtypes) w.key(name).value(n);
    w.end_object();
    if (ci < fingerprints.size()) w.key("sha256").value(fingerprints[ci]);
    if (c.role == Role::kUnknown || c.role == Role::kTrainingExtra ||
        c.role == Role::kModelConfig) {
      w.key("keys").begin_array();
      for (size_t i : c.tensors) w.value(ck.tensors[i].name);
      w.end_array();
    }
    w.end_object();
  }
  w.end_array();
  w.key("defects").begin_array();
  for (const Defect& d : a.defects) {
    w.begin_object();
    w.key("code").value(d.code);
    w.key("severity").value(d.severity);
    w.key("message").value(d.message);
    w.key("tensors").begin_array();
    for (const std::string& t : d.tensors) w.value(t);
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.key("candidates").begin_array();
  for (const Candidate& c : a.candidates) {
    w.begin_object();
    w.key("architecture").value(c.architecture);
    w.key("matched").value(static_cast<uint64_t>(c.matched));
    w.key("checks").value(static_cast<uint64_t>(c.total));
    w.key("why_not").value(c.why_not);
    w.end_object();
  }
  w.end_array();
  if (a.layout == "lora") {
    w.key("lora").begin_object();
    w.key("format").value(a.lora_format);
    w.key("base");
    if (a.lora_base.empty())
      w.null();
    else
      w.value(a.lora_base);
    w.key("rank").value(a.lora_rank);
    w.end_object();
  }
}

std::string anatomy_text(const Anatomy& a, const Checkpoint& ck,
                         const std::vector<std::string>& fingerprints) {
  std::string out;
  std::string arch = a.architecture;
  if (!a.variant.empty() && a.variant != "standard") arch += ", " + a.variant;
  if (a.layout == "lora")
    arch = fmt::format("LoRA ({}) for {}, rank {}", a.lora_format,
                       a.lora_base.empty() ? "an undetermined base" : a.lora_base, a.lora_rank);
  out += fmt::format("{:<12}{}{}\n", "model", arch,
                     a.confidence.empty()
                         ? ""
                         : fmt::format("  [{}; {}]", a.layout, "decided by " + a.confidence));
  if (!a.modelspec.empty()) out += fmt::format("{:<12}{}\n", "modelspec", a.modelspec);
  bool first = true;
  for (const std::string& e : a.evidence) {
    out += fmt::format("{:<12}{}\n", first ? "evidence" : "", e);
    first = false;
  }
  if (!a.distillation.empty())
    out += fmt::format("{:<12}{} (from {})\n", "distilled", a.distillation, a.distillation_source);
  first = true;
  for (const std::string& n : a.notes) {
    out += fmt::format("{:<12}{}\n", first ? "note" : "", n);
    first = false;
  }
  for (const Candidate& c : a.candidates)
    out += fmt::format("{:<12}{}: {} of {} signatures match; {}\n", "candidate", c.architecture,
                       c.matched, c.total, c.why_not);
  if (a.layout != "lora") {
    first = true;
    for (size_t ci = 0; ci < a.components.size(); ++ci) {
      const Component& c = a.components[ci];
      std::string what = std::string(role_name(c.role));
      if (c.kind != PartKind::kNone) what += fmt::format(" ({})", part_kind_name(c.kind));
      out += fmt::format("{:<12}{:<28} {:<38} {:>5} tensors {:>9} params {:>10}  {}{}\n",
                         first ? "components" : "", what,
                         c.prefix.empty() ? "(no prefix)" : c.prefix + "*", c.tensors.size(),
                         short_count(c.parameters), human_bytes(c.bytes), dtypes_text(c),
                         c.detail.empty() ? "" : "  " + c.detail);
      if (ci < fingerprints.size())
        out += fmt::format("{:<12}{:<28} sha256 {}\n", "", "", fingerprints[ci]);
      first = false;
    }
  }
  first = true;
  for (const Defect& d : a.defects) {
    out += fmt::format("{:<12}{}: {}\n", first ? "defects" : "", d.severity, d.message);
    const size_t shown = std::min<size_t>(d.tensors.size(), 8);
    for (size_t i = 0; i < shown; ++i) out += fmt::format("{:<14}{}\n", "", d.tensors[i]);
    if (d.tensors.size() > shown)
      out += fmt::format("{:<14}… and {} more (--json lists all)\n", "", d.tensors.size() - shown);
    first = false;
  }
  (void)ck;
  return out;
}

void write_diffusers_json(JsonWriter& w, const DiffusersFolder& d) {
  w.key("path").value(d.path);
  w.key("format").value("diffusers-folder");
  w.key("layout").value("diffusers-folder");
  w.key("pipeline").value(d.pipeline);
  w.key("diffusers_version").value(d.diffusers_version);
  w.key("architecture").value(d.architecture.empty() ? "unknown" : d.architecture);
  w.key("parts").begin_array();
  for (const DiffusersPart& p : d.parts) {
    w.begin_object();
    w.key("name").value(p.name);
    w.key("library").value(p.library);
    w.key("class").value(p.class_name);
    w.key("bytes").value(p.bytes);
    w.key("files").begin_array();
    for (const std::string& f : p.files) w.value(f);
    w.end_array();
    w.end_object();
  }
  w.end_array();
}

std::string diffusers_text(const DiffusersFolder& d) {
  std::string out;
  out += fmt::format("{:<12}{}\n", "folder", d.path);
  out += fmt::format("{:<12}diffusers ({}{})\n", "format", d.pipeline,
                     d.diffusers_version.empty() ? "" : ", diffusers " + d.diffusers_version);
  out += fmt::format("{:<12}{}\n", "model", d.architecture.empty() ? "unknown" : d.architecture);
  bool first = true;
  for (const DiffusersPart& p : d.parts) {
    out += fmt::format("{:<12}{:<16} {:<34} {:>10}  {}\n", first ? "parts" : "", p.name,
                       p.library + "." + p.class_name, human_bytes(p.bytes),
                       p.files.empty() ? std::string("(no weight file)")
                                       : fmt::format("{}", fmt::join(p.files, ", ")));
    first = false;
  }
  const bool convertible = d.pipeline == "StableDiffusionPipeline" ||
                           d.pipeline == "StableDiffusionInpaintPipeline" ||
                           d.pipeline == "StableDiffusionXLPipeline" ||
                           d.pipeline == "StableDiffusionXLInpaintPipeline" ||
                           d.pipeline == "StableDiffusionXLImg2ImgPipeline";
  if (convertible)
    out += fmt::format("{:<12}`ckptkit convert {} -o MODEL.safetensors` writes it as one file\n",
                       "note", d.path);
  else
    out += fmt::format(
        "{:<12}converting this pipeline to a single file is not supported yet; inspect\n"
        "{:<12}each weight file for its tensors\n",
        "note", "");
  return out;
}

}  // namespace ckptkit::cli
