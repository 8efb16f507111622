// split, assemble, swap, prune: plans that rename, regroup and drop tensors between a
// monolithic file and its parts. See ckptkit/ops.h.
#include <fmt/format.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <set>
#include <unordered_map>

#include "ckptkit/anatomy.h"
#include "ckptkit/cast.h"
#include "ckptkit/ops.h"
#include "io/errors.h"
#include "model/families.h"
#include "ops/input.h"
#include "ops/parts.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

namespace fs = std::filesystem;
using detail::FamilyLayout;
using detail::FamilySlot;
using detail::file_stem;
using detail::OpenedInput;
using detail::PartTensor;

constexpr size_t kListedNames = 20;

Result<std::unique_ptr<OpenedInput>> open_input(const std::string& path,
                                                const std::string& out_path,
                                                const ReshapeOptions& o, std::string_view verb,
                                                bool first) {
  detail::OpenOptions open;
  open.limits.safetensors = o.limits;
  open.allow_dangerous = o.allow_dangerous;
  if (first) open.verdict = o.verdict;
  open.verb = std::string(verb);
  return OpenedInput::open(path, out_path, open);
}

/// "sd1 (3 of 4 signatures; model.diffusion_model.x is missing)", for refusals.
std::string candidates_text(const Anatomy& a) {
  if (a.candidates.empty()) return "no known model or part comes close";
  std::string s = "nearest: ";
  for (size_t i = 0; i < a.candidates.size(); ++i) {
    const Candidate& c = a.candidates[i];
    s += fmt::format("{}{} ({} of {} signatures; {})", i ? "; " : "", c.architecture, c.matched,
                     c.total, c.why_not);
  }
  return s;
}

ReshapeReport report_for(const Anatomy& a, const Checkpoint& ck) {
  ReshapeReport r;
  r.architecture = a.architecture;
  r.family = a.family;
  r.input_bytes = ck.file_size;
  return r;
}

Status unknown_architecture(const std::string& path, const Anatomy& a, std::string_view what) {
  return Status(ErrorCode::kUnsupported,
                fmt::format("{}: the architecture is not recognized ({}), so {}",
                            a.layout == "unknown" ? "no known model part" : "unknown model",
                            candidates_text(a), what),
                path);
}

std::string title_of(const Checkpoint& ck, const std::string& path) {
  auto it = ck.metadata.find("modelspec.title");
  if (it != ck.metadata.end() && !it->second.empty()) return it->second;
  return file_stem(path);
}

/// Keys that describe the bytes or the training of the whole model, which a part no longer is.
bool applies_to_part_only_model(std::string_view key) {
  return key.starts_with("ss_") || key == "modelspec.resolution" ||
         key == "modelspec.prediction_type" || key == "modelspec.predict_key" ||
         key == "modelspec.trigger_phrase" || key == "modelspec.usage_hint" ||
         key == "modelspec.timestep_range" || key == "modelspec.merged_from";
}

/// The output's metadata: the source's where it still applies, plus ModelSpec.
std::map<std::string, std::string> metadata_for(const Checkpoint& src, bool whole_model,
                                                std::string_view architecture,
                                                std::string_view implementation,
                                                const std::string& title) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : src.metadata) {
    // Hashes describe the input's bytes, which the output does not have.
    if (k == "modelspec.hash_sha256" || k == "sshs_model_hash" || k == "sshs_legacy_hash") continue;
    if (!whole_model && applies_to_part_only_model(k)) continue;
    m[k] = v;
  }
  if (src.format != FileFormat::kSafetensors) m.emplace("format", "pt");
  m["modelspec.sai_model_spec"] = "1.0.0";
  if (!architecture.empty()) m["modelspec.architecture"] = std::string(architecture);
  if (!implementation.empty()) m["modelspec.implementation"] = std::string(implementation);
  m["modelspec.title"] = title;
  return m;
}

/// Adds `ts` to a safetensors plan. GGUF blocks, which safetensors cannot hold, are dequantized
/// exactly: to F32, or to `cast` when given.
void add_tensors(Plan& plan, const std::vector<PartTensor>& ts, ReshapeReport& report,
                 std::optional<DType> cast = std::nullopt) {
  for (const PartTensor& t : ts) {
    DType to = t.dtype;
    if (is_quantized(t.dtype)) {
      to = cast.value_or(DType::F32);
      ++report.dequantized;
    } else if (cast && is_float(t.dtype)) {
      to = *cast;
    }
    plan.tensors.push_back({t.name, to, t.shape, detail::part_producer(t, to)});
  }
}

void add_dropped(ReshapeReport& r, std::string what, const Checkpoint& ck,
                 const std::vector<size_t>& tensors) {
  if (tensors.empty()) return;
  DroppedGroup g{std::move(what), 0, 0, {}};
  for (size_t i : tensors) {
    const TensorInfo& t = ck.tensors[i];
    ++g.tensors;
    g.bytes += t.nbytes();
    if (g.names.size() < kListedNames) g.names.push_back(t.name);
  }
  r.dropped.push_back(std::move(g));
}

std::string_view dropped_name(Role role) {
  switch (role) {
    case Role::kEma:
      return "ema";
    case Role::kTrainingExtra:
      return "training_extra";
    default:
      break;
  }
  return "unknown";
}

/// A part in its standalone naming (HF for CLIP), read from component `c` of `in`.
struct LoadedPart {
  PartKind kind = PartKind::kNone;
  Naming naming = Naming::kNone;
  std::vector<PartTensor> tensors;
  const OpenedInput* input = nullptr;
  uint64_t channels = 0;
};

/// The part made of `tensors` (component `c`'s, its prefix removed), in its standalone naming.
Result<LoadedPart> load_part(std::vector<PartTensor> tensors, const Component& c,
                             const std::string& path, ReshapeReport& report,
                             bool note_naming = true) {
  LoadedPart p;
  p.kind = c.kind;
  p.naming = c.naming;
  p.channels = c.channels;
  p.tensors = std::move(tensors);
  if (c.naming == Naming::kOpenClip) {
    CKPT_ASSIGN_OR_RETURN(p.tensors, detail::openclip_to_hf(std::move(p.tensors), path));
    p.naming = Naming::kHf;
    if (note_naming)
      report.notes.push_back(fmt::format(
        "{} converted from OpenCLIP to Hugging Face names: in_proj split into q/k/v rows, "
        "text_projection transposed (exact and reversible)",
        part_display_name(c.kind)));
  }
  return p;
}

Result<LoadedPart> load_part(const OpenedInput& in, const Component& c, ReshapeReport& report) {
  CKPT_ASSIGN_OR_RETURN(LoadedPart p,
                        load_part(detail::component_tensors(in, c), c, in.file().path(), report));
  p.input = &in;
  return p;
}

/// The part's tensors under the names a monolithic file of the family gives them.
Result<std::vector<PartTensor>> to_slot(LoadedPart part, const FamilySlot& slot,
                                        const std::string& path, ReshapeReport& report) {
  const bool denoiser = part.kind == PartKind::kUNet || part.kind == PartKind::kMMDiT ||
                        part.kind == PartKind::kFluxDiT;
  if (part.naming == Naming::kDiffusers)
    return Status(ErrorCode::kUnsupported,
                  fmt::format("the {} uses diffusers names; converting diffusers names to the "
                              "single-file layout is not supported yet",
                              part_display_name(part.kind)),
                  path);
  if (denoiser && part.naming != slot.naming)
    return Status(ErrorCode::kUnsupported,
                  fmt::format("the {} uses {} names, the single-file layout needs {}",
                              part_display_name(part.kind), naming_name(part.naming),
                              naming_name(slot.naming)),
                  path);
  if (slot.naming == Naming::kOpenClip && part.naming == Naming::kHf) {
    std::vector<std::string> dropped;
    CKPT_ASSIGN_OR_RETURN(part.tensors,
                          detail::hf_to_openclip(std::move(part.tensors), path, &dropped));
    report.notes.push_back(fmt::format(
        "{} converted from Hugging Face to OpenCLIP names: q/k/v concatenated into in_proj, "
        "text_projection transposed (exact)",
        part_display_name(part.kind)));
    if (!dropped.empty())
      report.dropped.push_back({"no_openclip_name", dropped.size(), 0, dropped});
  }
  for (PartTensor& t : part.tensors) t.name = detail::add_component_prefix(t.name, slot);
  return std::move(part.tensors);
}

const FamilySlot* slot_for(const FamilyLayout& fam, PartKind kind) {
  for (const FamilySlot& s : fam.slots)
    if (s.kind == kind) return &s;
  return nullptr;
}

/// The command-line flag that gives a part: --clip-l, --t5xxl, --vae.
std::string flag_of(PartKind k) {
  std::string t(part_file_tag(k));
  for (char& c : t)
    if (c == '_') c = '-';
  return "--" + t;
}

std::string slots_text(const FamilyLayout& fam) {
  std::string s;
  for (const FamilySlot& slot : fam.slots) {
    if (!s.empty()) s += ", ";
    s += part_display_name(slot.kind);
  }
  return s;
}

/// The family of an analyzed diffusion model, or a refusal that says why not.
Result<const FamilyLayout*> family_of(const Anatomy& a, const std::string& path,
                                      std::string_view what) {
  if (a.layout == "lora")
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("this is a LoRA, not a model, so {}", what), path);
  if (a.family.empty()) return unknown_architecture(path, a, what);
  return detail::family_layout(a.family);
}

/// Runs the plans of all outputs into temporaries under `root`, then links them into place
/// together (OutputFolder): an error or a kill before that leaves nothing.
Status run_all(std::vector<std::pair<Plan, WrittenFile>>& outs, const std::string& root,
               const RunOptions& run, ReshapeReport& report) {
  CKPT_ASSIGN_OR_RETURN(auto folder, OutputFolder::begin(root, OutputOptions{run.force, run.sync}));
  // Every destination is checked (and its temporary made) before the first byte is written.
  std::vector<OutputFile*> files;
  for (auto& [plan, file] : outs) {
    const std::string relative = fs::path(file.path).lexically_relative(root).string();
    CKPT_ASSIGN_OR_RETURN(OutputFile * out, folder->add(relative, plan.inputs));
    files.push_back(out);
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    auto& [plan, file] = outs[i];
    RunOptions o = run;
    if (o.label == RunOptions{}.label) o.label = file.part;
    CKPT_ASSIGN_OR_RETURN(RunStats stats, write_plan(plan, *files[i], o));
    file.tensors = stats.tensors;
    file.bytes = stats.bytes_written;
    report.stats.tensors += stats.tensors;
    report.stats.bytes_written += stats.bytes_written;
    report.stats.bytes_read += stats.bytes_read;
    report.stats.buffer_bytes = std::max(report.stats.buffer_bytes, stats.buffer_bytes);
    report.stats.threads = std::max(report.stats.threads, stats.threads);
    report.stats.seconds += stats.seconds;
  }
  if (report.dequantized > 0)
    report.notes.push_back(fmt::format(
        "{} GGUF-quantized tensors were dequantized exactly (safetensors holds no GGUF blocks)",
        report.dequantized));
  const auto t0 = std::chrono::steady_clock::now();
  CKPT_RETURN_IF_ERROR(folder->commit());
  report.stats.seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (auto& out : outs) report.outputs.push_back(out.second);
  return Status::ok();
}

/// run_all for an op with one output file.
Status run_one(std::vector<std::pair<Plan, WrittenFile>>& outs, const RunOptions& run,
               ReshapeReport& report) {
  const std::string dir = fs::path(outs.front().second.path).parent_path().string();
  return run_all(outs, dir.empty() ? "." : dir, run, report);
}

std::vector<size_t> model_config_tensors(const Anatomy& a) {
  const Component* c = a.find(Role::kModelConfig);
  return c ? c->tensors : std::vector<size_t>{};
}

}  // namespace

// --- split -----------------------------------------------------------------------------------

namespace {

Result<ReshapeReport> split_source(const detail::TensorSource& src, const std::string& out_dir,
                                   const SplitOptions& options) {
  const ReshapeOptions& o = options.common;
  const std::string& in_path = src.path;
  const Checkpoint& ck = *src.ck;
  const Anatomy& a = src.a;
  ReshapeReport report = report_for(a, ck);
  if (a.layout == "lora")
    return Status(ErrorCode::kInvalidArgument, "this is a LoRA: it has no parts to split", in_path);
  if (a.find(Role::kDiffusionModel) && a.family.empty())
    return unknown_architecture(in_path, a, "its parts cannot be named");
  std::map<PartKind, const Component*> parts;
  for (const Component& c : a.components) {
    const bool part_role =
        c.role == Role::kDiffusionModel || c.role == Role::kTextEncoder || c.role == Role::kVae;
    if (!part_role) continue;
    if (c.kind == PartKind::kNone)
      return Status(ErrorCode::kUnsupported,
                    fmt::format("the {} under '{}' is not a recognized part, so it cannot be "
                                "named as one ({})",
                                role_name(c.role), c.prefix, candidates_text(a)),
                    in_path);
    if (!parts.emplace(c.kind, &c).second)
      return Status(ErrorCode::kUnsupported,
                    fmt::format("the file holds two {}s ('{}' and '{}'); split one of them "
                                "out first is not possible automatically",
                                part_display_name(c.kind), parts[c.kind]->prefix, c.prefix),
                    in_path);
  }
  if (parts.empty())
    return unknown_architecture(in_path, a, "there is nothing to split into parts");

  const std::string stem = options.name.empty() ? file_stem(in_path) : options.name;
  const std::string title = o.title.empty() ? title_of(ck, in_path) : o.title;
  const FamilyLayout* fam = detail::family_layout(a.family);
  std::vector<std::pair<Plan, WrittenFile>> outs;
  for (const auto& [kind, comp] : parts) {
    const bool denoiser = comp->role == Role::kDiffusionModel;
    std::string dir = denoiser                 ? "diffusion_models"
                      : kind == PartKind::kVae ? "vae"
                                               : "text_encoders";
    std::string file = denoiser ? stem : fmt::format("{}-{}", stem, part_file_tag(kind));
    WrittenFile w;
    w.part = std::string(part_file_tag(kind));
    w.source = in_path;
    if (options.gguf && (denoiser || kind == PartKind::kT5xxl)) {
      if (!src.in)
        return Status(ErrorCode::kUnsupported,
                      "--quant takes a single file; convert the diffusers folder to one first "
                      "(ckptkit convert DIR -o MODEL.safetensors)",
                      in_path);
      // The parts GGUF loaders take: ComfyUI-GGUF's Unet and CLIP loaders, stable-diffusion.cpp's
      // --diffusion-model and --t5xxl. The file name carries the type, as published GGUFs do.
      ConvertReport gr;
      CKPT_ASSIGN_OR_RETURN(
          Plan plan, detail::gguf_plan(*src.in, a, {comp, kind == PartKind::kT5xxl},
                                       *options.gguf, in_path, gr));
      std::string type = options.gguf->quant;
      for (char& ch : type) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      w.path = (fs::path(out_dir) / dir / fmt::format("{}-{}.gguf", file, type)).string();
      std::string types;
      for (const auto& [t, n] : gr.gguf_types)
        types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, t);
      report.notes.push_back(fmt::format("{} as GGUF: {}{}", part_display_name(kind), types,
                                         gr.gguf_reshaped ? fmt::format(" ({} stored as rows of 256)",
                                                                        gr.gguf_reshaped)
                                                          : ""));
      for (std::string& n : gr.notes)
        report.notes.push_back(fmt::format("{}: {}", part_display_name(kind), n));
      if (denoiser) add_dropped(report, "sampling_markers", ck, model_config_tensors(a));
      outs.emplace_back(std::move(plan), std::move(w));
      continue;
    }
    // A folder's CLIP-G has Hugging Face names already: its round trip through OpenCLIP
    // names (the single file it stands for) is not worth a note.
    CKPT_ASSIGN_OR_RETURN(LoadedPart part, load_part(src.component(*comp), *comp, in_path, report,
                                                     src.in != nullptr));
    w.path = (fs::path(out_dir) / dir / (file + ".safetensors")).string();
    Plan plan;
    src.add_inputs(plan);
    add_tensors(plan, part.tensors, report);
    if (denoiser) {
      // Sampling markers (v_pred, ztsnr, edm_*) belong to the denoiser; they travel with it.
      std::vector<PartTensor> markers;
      for (size_t i : model_config_tensors(a)) markers.push_back(src.tensor(i));
      add_tensors(plan, markers, report);
    }
    std::string spec;
    if (!a.modelspec.empty())
      spec = denoiser ? a.modelspec : fmt::format("{}/{}", a.modelspec, part_kind_name(kind));
    plan.metadata =
        metadata_for(ck, denoiser, spec, fam ? fam->implementation : "",
                     denoiser ? title : fmt::format("{} ({})", title, part_display_name(kind)));
    outs.emplace_back(std::move(plan), std::move(w));
  }
  for (const Component& c : a.components)
    if (c.role == Role::kEma || c.role == Role::kTrainingExtra ||
        (c.role == Role::kUnknown && c.kind == PartKind::kNone))
      add_dropped(report, std::string(dropped_name(c.role)), ck, c.tensors);
  CKPT_RETURN_IF_ERROR(run_all(outs, out_dir, o.run, report));
  return report;
}

}  // namespace

Result<ReshapeReport> split_file(const std::string& in_path, const std::string& out_dir,
                                 const SplitOptions& options) {
  const ReshapeOptions& o = options.common;
  CKPT_RETURN_IF_ERROR(check_output_folder(out_dir));
  const std::string probe = (fs::path(out_dir) / "x").string();
  std::error_code ec;
  if (fs::is_directory(in_path, ec) && fs::is_regular_file(fs::path(in_path) / "model_index.json", ec)) {
    // A diffusers folder: split the single file it converts to, without writing that file.
    ReshapeReport read;
    CKPT_ASSIGN_OR_RETURN(detail::FolderAsSingle f,
                          detail::read_folder_as_single(in_path, probe, o, read));
    auto src = detail::TensorSource::of_tensors(in_path, std::move(f.tensors),
                                                std::move(f.metadata), f.inputs, read.input_bytes);
    CKPT_ASSIGN_OR_RETURN(ReshapeReport report, split_source(*src, out_dir, options));
    report.notes.insert(report.notes.begin(), read.notes.begin(), read.notes.end());
    report.dropped.insert(report.dropped.begin(), read.dropped.begin(), read.dropped.end());
    report.input_bytes = read.input_bytes;
    return report;
  }
  CKPT_ASSIGN_OR_RETURN(auto in, open_input(in_path, probe, o, "split", true));
  return split_source(*detail::TensorSource::of_file(*in), out_dir, options);
}

// --- assemble and swap -----------------------------------------------------------------------

namespace {

struct Requested {
  PartKind kind;
  const std::string* path;
};

std::vector<Requested> requested_parts(const PartPaths& p) {
  std::vector<Requested> r;
  auto add = [&](PartKind k, const std::string& s) {
    if (!s.empty()) r.push_back({k, &s});
  };
  add(PartKind::kClipL, p.clip_l);
  add(PartKind::kClipG, p.clip_g);
  add(PartKind::kClipH, p.clip_h);
  add(PartKind::kT5xxl, p.t5xxl);
  add(PartKind::kVae, p.vae);
  return r;
}

/// Opens each requested part, checks it fits the family and returns its monolithic tensors.
/// `inputs` keeps the files open for the plan.
Result<std::map<PartKind, std::vector<PartTensor>>> gather_parts(
    const std::vector<Requested>& req, const FamilyLayout& fam, const std::string& out_path,
    const ReshapeOptions& o, std::vector<std::unique_ptr<OpenedInput>>& inputs,
    ReshapeReport& report) {
  std::map<PartKind, std::vector<PartTensor>> out;
  for (const Requested& r : req) {
    const FamilySlot* slot = slot_for(fam, r.kind);
    if (!slot)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("{} does not use a {} (its parts are: {})", fam.display,
                                part_display_name(r.kind), slots_text(fam)),
                    *r.path);
    CKPT_ASSIGN_OR_RETURN(auto in, open_input(*r.path, out_path, o, "use", false));
    const Anatomy pa = analyze(in->checkpoint(), &in->file());
    const Component* c = pa.find(r.kind);
    if (!c) {
      std::string is = pa.architecture;
      if (pa.layout != "unknown" && pa.layout != pa.architecture) is += " (" + pa.layout + ")";
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("the file holds no {}; it is {}", part_display_name(r.kind), is),
                    *r.path);
    }
    if (r.kind == PartKind::kVae && c->channels != fam.latent_channels)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("this VAE has a {}-channel latent; {} needs a {}-channel one",
                                c->channels, fam.display, fam.latent_channels),
                    *r.path);
    CKPT_ASSIGN_OR_RETURN(LoadedPart part, load_part(*in, *c, report));
    CKPT_ASSIGN_OR_RETURN(out[r.kind], to_slot(std::move(part), *slot, *r.path, report));
    inputs.push_back(std::move(in));
  }
  return out;
}

}  // namespace

Result<detail::AssembledSingle> detail::assemble_as_single(const PartPaths& paths,
                                                          const std::string& out_path,
                                                          const ReshapeOptions& o,
                                                          bool allow_missing,
                                                          ReshapeReport& report) {
  if (paths.diffusion_model.empty())
    return Status(ErrorCode::kInvalidArgument, "--diffusion-model is required");
  AssembledSingle out;
  CKPT_ASSIGN_OR_RETURN(auto dm_in,
                        open_input(paths.diffusion_model, out_path, o, "assemble", true));
  const Checkpoint& ck = dm_in->checkpoint();
  const Anatomy a = analyze(ck, &dm_in->file());
  CKPT_ASSIGN_OR_RETURN(const FamilyLayout* fam,
                        family_of(a, paths.diffusion_model, "no single-file layout can be chosen"));
  const Component* dm = a.find(Role::kDiffusionModel);
  report = report_for(a, ck);

  const std::vector<Requested> req = requested_parts(paths);
  std::vector<std::unique_ptr<OpenedInput>> inputs;
  CKPT_ASSIGN_OR_RETURN(auto parts, gather_parts(req, *fam, out_path, o, inputs, report));
  std::vector<std::string> missing;
  for (const FamilySlot& s : fam->slots)
    if (s.required && s.kind != dm->kind && !parts.count(s.kind))
      missing.push_back(flag_of(s.kind));
  if (!missing.empty() && !allow_missing)
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("a {} file also needs {} (or --allow-missing to write it without)",
                              fam->display, fmt::join(missing, ", ")),
                  paths.diffusion_model);

  CKPT_ASSIGN_OR_RETURN(LoadedPart dpart, load_part(*dm_in, *dm, report));
  CKPT_ASSIGN_OR_RETURN(out.tensors,
                        to_slot(std::move(dpart), fam->slots[0], paths.diffusion_model, report));
  for (size_t i : model_config_tensors(a))
    out.tensors.push_back(detail::whole_tensor(*dm_in, ck.tensors[i]));
  for (auto& [kind, ts] : parts)
    for (PartTensor& t : ts) out.tensors.push_back(std::move(t));
  out.metadata = metadata_for(ck, true, a.modelspec, fam->implementation,
                              o.title.empty() ? title_of(ck, paths.diffusion_model) : o.title);
  for (const auto& in : inputs) report.input_bytes += in->checkpoint().file_size;
  out.inputs.push_back(std::move(dm_in));
  for (auto& in : inputs) out.inputs.push_back(std::move(in));
  return out;
}

Result<ReshapeReport> assemble_files(const PartPaths& paths, const std::string& out_path,
                                     const AssembleOptions& options) {
  const ReshapeOptions& o = options.common;
  if (paths.diffusion_model.empty())
    return Status(ErrorCode::kInvalidArgument, "--diffusion-model is required");
  CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, o.run.force));
  ReshapeReport report;
  CKPT_ASSIGN_OR_RETURN(detail::AssembledSingle single,
                        detail::assemble_as_single(paths, out_path, o, options.allow_missing,
                                                   report));
  Plan plan;
  for (const auto& in : single.inputs) in->add_inputs(plan);
  add_tensors(plan, single.tensors, report);
  plan.metadata = std::move(single.metadata);
  std::vector<std::pair<Plan, WrittenFile>> outs;
  outs.emplace_back(std::move(plan), WrittenFile{out_path, "model", 0, 0, paths.diffusion_model});
  RunOptions run = o.run;
  if (run.label == RunOptions{}.label) run.label = "assembling";
  CKPT_RETURN_IF_ERROR(run_one(outs, run, report));
  return report;
}

Result<ReshapeReport> swap_parts(const std::string& in_path, const PartPaths& paths,
                                 const std::string& out_path, const AssembleOptions& options) {
  const ReshapeOptions& o = options.common;
  if (!paths.diffusion_model.empty())
    return Status(ErrorCode::kInvalidArgument,
                  "swap replaces text encoders and the VAE; to change the diffusion model, "
                  "assemble a new file");
  const std::vector<Requested> req = requested_parts(paths);
  if (req.empty())
    return Status(ErrorCode::kInvalidArgument,
                  "nothing to swap: give at least one of --vae, --clip-l, --clip-g, --clip-h, "
                  "--t5xxl");
  CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, o.run.force));
  CKPT_ASSIGN_OR_RETURN(auto in, open_input(in_path, out_path, o, "swap parts of", true));
  const Checkpoint& ck = in->checkpoint();
  const Anatomy a = analyze(ck, &in->file());
  CKPT_ASSIGN_OR_RETURN(const FamilyLayout* fam,
                        family_of(a, in_path, "it is not known where its parts sit"));
  ReshapeReport report = report_for(a, ck);
  std::vector<std::unique_ptr<OpenedInput>> inputs;
  CKPT_ASSIGN_OR_RETURN(auto parts, gather_parts(req, *fam, out_path, o, inputs, report));

  std::vector<bool> replaced(ck.tensors.size(), false);
  for (const auto& [kind, ts] : parts) {
    const Component* old = a.find(kind);
    if (!old) {
      report.notes.push_back(
          fmt::format("the input had no {}; it is added", part_display_name(kind)));
      continue;
    }
    for (size_t i : old->tensors) replaced[i] = true;
    add_dropped(report, fmt::format("replaced_{}", part_file_tag(kind)), ck, old->tensors);
  }
  Plan plan;
  in->add_inputs(plan);
  for (const auto& p : inputs) p->add_inputs(plan);
  std::vector<PartTensor> kept;
  for (size_t i = 0; i < ck.tensors.size(); ++i)
    if (!replaced[i]) kept.push_back(detail::whole_tensor(*in, ck.tensors[i]));
  add_tensors(plan, kept, report);
  for (auto& [kind, ts] : parts) add_tensors(plan, ts, report);
  plan.metadata = metadata_for(ck, true, a.modelspec, fam->implementation,
                               o.title.empty() ? title_of(ck, in_path) : o.title);
  std::vector<std::pair<Plan, WrittenFile>> outs;
  outs.emplace_back(std::move(plan), WrittenFile{out_path, "model", 0, 0, in_path});
  RunOptions run = o.run;
  if (run.label == RunOptions{}.label) run.label = "swapping";
  CKPT_RETURN_IF_ERROR(run_one(outs, run, report));
  for (const auto& p : inputs) report.input_bytes += p->checkpoint().file_size;
  return report;
}

// --- prune -----------------------------------------------------------------------------------

Result<ReshapeReport> prune_file(const std::string& in_path, const std::string& out_path,
                                 const PruneOptions& options) {
  const ReshapeOptions& o = options.common;
  CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, o.run.force));
  CKPT_ASSIGN_OR_RETURN(auto in, open_input(in_path, out_path, o, "prune", true));
  const Checkpoint& ck = in->checkpoint();
  const Anatomy a = analyze(ck, &in->file());
  ReshapeReport report = report_for(a, ck);
  if (options.dtype)
    for (const TensorInfo& t : ck.tensors)
      if (is_float(t.dtype) && t.dtype != *options.dtype && !can_cast(t.dtype, *options.dtype))
        return Status(ErrorCode::kUnsupported,
                      fmt::format("{} values cannot be converted to {}", dtype_name(t.dtype),
                                  dtype_name(*options.dtype)),
                      in_path, ck.data_offset + t.begin, t.name);

  std::vector<Role> role(ck.tensors.size(), Role::kUnknown);
  for (const Component& c : a.components)
    for (size_t i : c.tensors) role[i] = c.role;
  const Component* dm = a.find(Role::kDiffusionModel);
  const Component* ema = a.find(Role::kEma);
  std::unordered_map<std::string_view, size_t> ema_index;
  if (options.ema == EmaMode::kUse) {
    if (!ema || !dm)
      return Status(ErrorCode::kInvalidArgument,
                    ema ? "--ema use: the file has EMA weights but no diffusion model to put "
                          "them in"
                        : "--ema use: the file has no EMA weights (model_ema.*)",
                    in_path);
    for (size_t i : ema->tensors) ema_index.emplace(ck.tensors[i].name, i);
  }

  std::vector<size_t> dropped_ema, dropped_extra;
  std::vector<PartTensor> out;
  uint64_t from_ema = 0, no_ema = 0;
  std::vector<std::string> no_ema_names;
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const TensorInfo& t = ck.tensors[i];
    if (role[i] == Role::kEma && options.ema != EmaMode::kKeep) {
      dropped_ema.push_back(i);
      continue;
    }
    if (role[i] == Role::kTrainingExtra && !options.keep_training_extras) {
      dropped_extra.push_back(i);
      continue;
    }
    PartTensor p = detail::whole_tensor(*in, t);
    if (options.ema == EmaMode::kUse && role[i] == Role::kDiffusionModel) {
      const std::string key =
          detail::ema_key_for(detail::strip_component_prefix(t.name, dm->prefix, ""));
      auto it = ema_index.find(key);
      if (it != ema_index.end() && ck.tensors[it->second].shape == t.shape) {
        PartTensor e = detail::whole_tensor(*in, ck.tensors[it->second]);
        e.name = t.name;
        p = std::move(e);
        ++from_ema;
      } else {
        ++no_ema;
        if (no_ema_names.size() < kListedNames) no_ema_names.push_back(t.name);
      }
    }
    out.push_back(std::move(p));
  }
  if (out.empty())
    // A file that is only an EMA copy (or only buffers) would become a file with no tensors,
    // which no loader takes; say what the file holds instead of writing it.
    return Status(ErrorCode::kInvalidArgument,
                  dm == nullptr && ema != nullptr
                      ? fmt::format("the file holds only an EMA copy ({} tensors under '{}') and "
                                    "no diffusion model, so pruning would leave nothing; "
                                    "--ema keep writes it unchanged",
                                    ema->tensors.size(), ema->prefix)
                      : std::string("pruning would leave no tensors (the file holds only what "
                                    "prune drops); --ema keep / --keep-training-extras keep them"),
                  in_path);
  add_dropped(report, "ema", ck, dropped_ema);
  add_dropped(report, "training_extra", ck, dropped_extra);
  if (options.ema == EmaMode::kUse) {
    report.notes.push_back(
        fmt::format("{} diffusion-model tensors now hold their EMA weights", from_ema));
    if (no_ema > 0)
      report.notes.push_back(fmt::format(
          "{} diffusion-model tensors had no EMA counterpart and keep the model's weights "
          "(first: {})",
          no_ema, no_ema_names.front()));
  }
  Plan plan;
  in->add_inputs(plan);
  add_tensors(plan, out, report, options.dtype);
  const FamilyLayout* fam = detail::family_layout(a.family);
  plan.metadata = metadata_for(ck, true, a.modelspec, fam ? fam->implementation : "",
                               o.title.empty() ? title_of(ck, in_path) : o.title);
  std::vector<std::pair<Plan, WrittenFile>> outs;
  outs.emplace_back(std::move(plan), WrittenFile{out_path, "model", 0, 0, in_path});
  RunOptions run = o.run;
  if (run.label == RunOptions{}.label) run.label = "pruning";
  CKPT_RETURN_IF_ERROR(run_one(outs, run, report));
  return report;
}

}  // namespace ckptkit
