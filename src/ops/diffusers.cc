// convert to and from diffusers folders: plans that rename a single file's parts into a
// folder's part files and back. See ckptkit/ops.h and docs/models.md.
//
// Both directions keep every tensor byte for byte: renames are kernel copies, the VAE's
// attention projections change only their shape (a 1×1 convolution and a linear layer hold the
// same bytes), OpenCLIP's fused q/k/v become row slices and are concatenated back. What a
// diffusers folder has no place for (EMA weights, schedule buffers, EMA counters, sampling
// markers, unknown tensors) goes into `ckptkit_extra.safetensors` at the folder's root under its
// single-file name, with the single file's metadata; diffusers never opens that file, and the
// reverse conversion puts it all back.
#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "ckptkit/anatomy.h"
#include "ckptkit/ops.h"
#include "io/errors.h"
#include "io/file.h"
#include "io/output.h"
#include "model/diffusers_config.h"
#include "model/dit_names.h"
#include "model/families.h"
#include "model/unet_names.h"
#include "model/vae_names.h"
#include "ops/input.h"
#include "ops/parts.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

namespace fs = std::filesystem;
using detail::DiffusersFamily;
using detail::DiffusersSlot;
using detail::OpenedInput;
using detail::PartTensor;

constexpr std::string_view kExtraFile = "ckptkit_extra.safetensors";
/// Metadata key that marks the extra file (and is not part of the single file's metadata).
constexpr std::string_view kExtraKey = "ckptkit.diffusers_extra";
/// Metadata key of the extra file: the single file's denoiser prefix where it is not the
/// family's usual one (a bare FLUX transformer file: "").
constexpr std::string_view kDenoiserPrefixKey = "ckptkit.diffusers_denoiser_prefix";
constexpr size_t kListed = 20;

Result<std::unique_ptr<OpenedInput>> open_input(const std::string& path,
                                                const std::string& out_path,
                                                const ReshapeOptions& o, bool first) {
  detail::OpenOptions open;
  open.limits.safetensors = o.limits;
  open.allow_dangerous = o.allow_dangerous;
  if (first) open.verdict = o.verdict;
  open.verb = "convert";
  return OpenedInput::open(path, out_path, open);
}

std::string supported_families() {
  return "Stable Diffusion 1.x and 2.x (StableDiffusionPipeline), SDXL base "
         "(StableDiffusionXLPipeline), the SDXL refiner (StableDiffusionXLImg2ImgPipeline), "
         "SD3/SD3.5 (StableDiffusion3Pipeline) and FLUX.1 dev and schnell (FluxPipeline)";
}

/// One output of the folder: a plan (weights) or text (a JSON file).
struct FolderFile {
  std::string relative;
  std::optional<Plan> plan;
  std::string text;
  std::string part;
  std::string source;
};

/// Bytes of a tensor's data.
uint64_t tensor_bytes(DType dtype, const Shape& shape) {
  return (shape.empty() ? 1 : shape_numel(shape).value_or(0)) * dtype_info(dtype).bits / 8;
}

bool is_denoiser(PartKind k) {
  return k == PartKind::kUNet || k == PartKind::kFluxDiT || k == PartKind::kMMDiT;
}

/// A weights file larger than `max` as shards, the way save_pretrained writes them:
/// `STEM-0000k-of-0000n.safetensors`, tensors in name order, a new shard when the next tensor
/// would pass `max` (a larger tensor gets a shard of its own), and `NAME.index.json`
/// ({"metadata": {"total_size": bytes}, "weight_map": {tensor: shard}}). Each shard is a plan
/// over the same producers: nothing is copied to shard.
std::vector<FolderFile> shard(FolderFile f, uint64_t max) {
  std::vector<FolderFile> out;
  uint64_t total = 0;
  for (const PlannedTensor& t : f.plan->tensors) total += tensor_bytes(t.dtype, t.shape);
  if (total <= max) {
    out.push_back(std::move(f));
    return out;
  }
  std::vector<PlannedTensor> ts = std::move(f.plan->tensors);
  std::sort(ts.begin(), ts.end(),
            [](const PlannedTensor& a, const PlannedTensor& b) { return a.name < b.name; });
  std::vector<std::vector<PlannedTensor>> groups(1);
  uint64_t in_group = 0;
  for (PlannedTensor& t : ts) {
    const uint64_t b = tensor_bytes(t.dtype, t.shape);
    if (!groups.back().empty() && in_group + b > max) {
      groups.emplace_back();
      in_group = 0;
    }
    in_group += b;
    groups.back().push_back(std::move(t));
  }
  const fs::path rel(f.relative);
  const std::string name = rel.filename().string();
  const std::string stem = name.substr(0, name.size() - std::string_view(".safetensors").size());
  std::string weight_map;
  std::vector<std::pair<std::string, std::string>> entries;
  for (size_t k = 0; k < groups.size(); ++k) {
    const std::string file =
        fmt::format("{}-{:05d}-of-{:05d}.safetensors", stem, k + 1, groups.size());
    for (const PlannedTensor& t : groups[k]) entries.emplace_back(t.name, file);
    Plan plan;
    plan.inputs = f.plan->inputs;
    plan.metadata = f.plan->metadata;
    plan.tensors = std::move(groups[k]);
    out.push_back({(rel.parent_path() / file).string(), std::move(plan), "", f.part, f.source});
  }
  std::sort(entries.begin(), entries.end());
  for (size_t i = 0; i < entries.size(); ++i)
    weight_map += fmt::format("    \"{}\": \"{}\"{}\n", entries[i].first, entries[i].second,
                              i + 1 < entries.size() ? "," : "");
  out.push_back({f.relative + ".index.json", std::nullopt,
                 fmt::format("{{\n  \"metadata\": {{\n    \"total_size\": {}\n  }},\n  "
                             "\"weight_map\": {{\n{}  }}\n}}\n",
                             total, weight_map),
                 fmt::format("{} index", f.part), f.source});
  return out;
}

/// Adds every file to one OutputFolder (all checked and created first), writes them and links
/// them into place together: an error or a kill before the end leaves nothing.
Status write_folder(std::vector<FolderFile>& files, const std::string& root, const RunOptions& run,
                    ReshapeReport& report) {
  CKPT_ASSIGN_OR_RETURN(auto folder, OutputFolder::begin(root, OutputOptions{run.force, run.sync}));
  std::vector<OutputFile*> outs;
  for (FolderFile& f : files) {
    std::vector<const InputFile*> none;
    CKPT_ASSIGN_OR_RETURN(OutputFile * out,
                          folder->add(f.relative, f.plan ? f.plan->inputs : none));
    outs.push_back(out);
  }
  for (size_t i = 0; i < files.size(); ++i) {
    FolderFile& f = files[i];
    WrittenFile w{(fs::path(root) / f.relative).string(), f.part, 0, 0, f.source};
    if (f.plan) {
      RunOptions o = run;
      if (o.label == RunOptions{}.label) o.label = f.part;
      CKPT_ASSIGN_OR_RETURN(RunStats stats, write_plan(*f.plan, *outs[i], o));
      w.tensors = stats.tensors;
      w.bytes = stats.bytes_written;
      report.stats.tensors += stats.tensors;
      report.stats.bytes_written += stats.bytes_written;
      report.stats.bytes_read += stats.bytes_read;
      report.stats.buffer_bytes = std::max(report.stats.buffer_bytes, stats.buffer_bytes);
      report.stats.threads = std::max(report.stats.threads, stats.threads);
      report.stats.seconds += stats.seconds;
    } else {
      const auto* p = reinterpret_cast<const uint8_t*>(f.text.data());
      CKPT_RETURN_IF_ERROR(outs[i]->truncate(f.text.size()));
      CKPT_RETURN_IF_ERROR(outs[i]->pwrite_all({p, f.text.size()}, 0));
      w.bytes = f.text.size();
      report.stats.bytes_written += f.text.size();
    }
    report.outputs.push_back(std::move(w));
  }
  const auto t0 = std::chrono::steady_clock::now();
  CKPT_RETURN_IF_ERROR(folder->commit());
  report.stats.seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Status::ok();
}

void add_tensors(Plan& plan, const std::vector<PartTensor>& ts) {
  for (const PartTensor& t : ts)
    plan.tensors.push_back({t.name, t.dtype, t.shape, detail::part_producer(t, t.dtype)});
}

/// The shapes of tensors under their names, for the config derivation.
detail::ShapeMap shapes_of(const std::vector<PartTensor>& ts) {
  detail::ShapeMap m;
  for (const PartTensor& t : ts) m[t.name] = t.shape;
  return m;
}

Status quantized_refusal(const std::string& path, const PartTensor& t) {
  return Status(ErrorCode::kUnsupported,
                fmt::format("the tensor is stored as {} blocks; a diffusers folder holds plain "
                            "tensors: dequantize the file first (ckptkit convert IN.gguf -o "
                            "OUT.safetensors)",
                            dtype_name(t.dtype)),
                path, kNoOffset, t.name);
}

Status no_counterpart(const std::string& path, std::string_view name, std::string_view part,
                      std::string_view naming) {
  return Status(ErrorCode::kInvalidArgument,
                fmt::format("the {} tensor has no {} name (the mapping rules are in "
                            "docs/models.md)",
                            part, naming),
                path, kNoOffset, std::string(name));
}

/// The 1×1-convolution weight `t` as the linear weight diffusers holds, or back.
Status reshape_projection(PartTensor& t, bool to_linear, const std::string& path) {
  const Shape& s = t.shape;
  if (to_linear) {
    if (s.size() != 4 || s[2] != 1 || s[3] != 1)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("the VAE attention projection has shape [{}], a 1×1 convolution "
                                "[C, C, 1, 1] was expected",
                                shape_to_string(s)),
                    path, kNoOffset, t.name);
    t.shape = {s[0], s[1]};
  } else {
    if (s.size() != 2)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("the VAE attention projection has shape [{}], a linear weight "
                                "[C, C] was expected",
                                shape_to_string(s)),
                    path, kNoOffset, t.name);
    t.shape = {s[0], s[1], 1, 1};
  }
  return Status::ok();
}

/// The transformer's tensors in the other naming (model/dit_names.h): renames, and row slices
/// and concatenations of the inputs' byte ranges for the fused projections and the swapped
/// modulation halves.
Result<std::vector<PartTensor>> map_dit(std::string_view family, std::vector<PartTensor> ts,
                                        bool to_diffusers, const std::string& path) {
  std::map<std::string, const PartTensor*, std::less<>> by_name;
  detail::ShapeMap shapes;
  for (const PartTensor& t : ts) {
    by_name[t.name] = &t;
    shapes[t.name] = t.shape;
  }
  auto mapped = to_diffusers ? detail::dit_to_diffusers(family, shapes, path)
                             : detail::dit_from_diffusers(family, shapes, path);
  if (!mapped) return mapped.status();
  std::vector<PartTensor> out;
  out.reserve(mapped->size());
  for (const detail::MappedTensor& m : *mapped) {
    std::vector<PartTensor> parts;
    for (const detail::RowRange& r : m.from) {
      const PartTensor& src = *by_name.find(r.source)->second;
      if (r.begin == 0 && (src.shape.empty() || r.rows == src.shape[0])) {
        PartTensor whole = src;
        whole.name = m.name;
        parts.push_back(std::move(whole));
        continue;
      }
      if (dtype_info(src.dtype).bits % 8 != 0)
        return Status(ErrorCode::kUnsupported,
                      fmt::format("its dtype {} packs several values in a byte; its rows "
                                  "cannot be cut",
                                  dtype_name(src.dtype)),
                      path, kNoOffset, src.name);
      parts.push_back(detail::row_slice(src, r.begin, r.rows, m.name));
    }
    for (const PartTensor& p : parts)
      if (p.dtype != parts.front().dtype)
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("it is joined into '{}' with tensors of another dtype ({} and "
                                  "{})",
                                  m.name, dtype_name(p.dtype), dtype_name(parts.front().dtype)),
                      path, kNoOffset, m.from.front().source);
    out.push_back(parts.size() == 1 ? std::move(parts.front())
                                    : detail::concat_rows(std::move(parts), m.name));
  }
  return out;
}

const detail::FamilySlot* slot_for(const detail::FamilyLayout& fam, PartKind kind) {
  for (const detail::FamilySlot& s : fam.slots)
    if (s.kind == kind) return &s;
  return nullptr;
}

/// A small text file (a shard index), whole.
Result<std::string> read_small_text(const std::string& path) {
  CKPT_ASSIGN_OR_RETURN(InputFile f, InputFile::open(path));
  if (f.size() > (16u << 20))
    return Status(ErrorCode::kLimitExceeded,
                  fmt::format("{} bytes; a shard index is a few hundred kilobytes", f.size()),
                  path);
  std::string text(f.size(), '\0');
  CKPT_RETURN_IF_ERROR(
      f.pread_exact({reinterpret_cast<uint8_t*>(text.data()), text.size()}, 0, "the index"));
  return text;
}

/// A part's weights as a folder holds them, and the path messages name.
struct PartFiles {
  std::vector<PartTensor> tensors;
  std::string path;
};

/// The tensors of `slot`'s folder, from the first of these that is there (diffusers' and
/// transformers' file names; `STEM` is NAME without `.safetensors`):
///   NAME.safetensors                  one file
///   NAME.safetensors.index.json       shards (weight_map: tensor -> shard file)
///   STEM.fp16.safetensors             the fp16 variant
///   NAME.safetensors.index.fp16.json  the fp16 variant's shards (STEM.fp16-0000k-of-0000n...)
///   STEM.bin / pytorch_model.bin      a PyTorch file (scanned; nothing in it runs)
///   (that).index.json                 PyTorch shards, each scanned
/// Every file opened is added to `inputs`.
Result<PartFiles> read_part(const std::string& in_dir, const DiffusersSlot& slot,
                            const std::string& out_path, const ReshapeOptions& o,
                            std::vector<std::unique_ptr<OpenedInput>>& inputs,
                            ReshapeReport& report) {
  const fs::path dir = fs::path(in_dir) / slot.folder;
  const std::string plain = (dir / slot.weights).string();
  const std::string_view stem = slot.weights.substr(0, slot.weights.size() - 12);
  // PyTorch parts: diffusion_pytorch_model.bin (diffusers), pytorch_model.bin (transformers).
  const std::string bin =
      (dir / (stem == "model" ? std::string("pytorch_model.bin") : fmt::format("{}.bin", stem)))
          .string();
  struct Candidate {
    std::string path;
    bool sharded;
    std::string_view read_as;  // the report's note; empty for the plain names
  };
  const Candidate candidates[] = {
      {plain, false, ""},
      {plain + ".index.json", true, ""},
      {(dir / fmt::format("{}.fp16.safetensors", stem)).string(), false, "the fp16 variant"},
      {plain + ".index.fp16.json", true, "the fp16 variant's shards listed by"},
      {bin, false, "the PyTorch file (scanned first; nothing in it is run)"},
      {bin + ".index.json", true,
       "the PyTorch shards (each scanned first; nothing in them is run) listed by"},
  };
  std::error_code ec;
  const Candidate* chosen = nullptr;
  for (const Candidate& c : candidates)
    if (fs::is_regular_file(c.path, ec)) {
      chosen = &c;
      break;
    }
  if (!chosen)
    return Status(ErrorCode::kNotFound,
                  fmt::format("missing: the {} part's weights are this file (or its shards "
                              "{}.index.json, the fp16 variant {}.fp16.safetensors or its "
                              "shards, or {} or its shards)",
                              slot.folder, slot.weights, stem, fs::path(bin).filename().string()),
                  plain);
  if (!chosen->read_as.empty())
    report.notes.push_back(
        fmt::format("{}: read {} {}", slot.folder, chosen->read_as, chosen->path));
  auto add_file = [&](const std::string& path) -> Result<const OpenedInput*> {
    CKPT_ASSIGN_OR_RETURN(auto in, open_input(path, out_path, o, false));
    report.input_bytes += in->checkpoint().file_size;
    inputs.push_back(std::move(in));
    return inputs.back().get();
  };
  PartFiles out;
  if (!chosen->sharded) {
    CKPT_ASSIGN_OR_RETURN(const OpenedInput* in, add_file(chosen->path));
    for (const TensorInfo& t : in->checkpoint().tensors)
      out.tensors.push_back(detail::whole_tensor(*in, t));
    out.path = chosen->path;
    return out;
  }
  const std::string& index = chosen->path;
  // Sharded: the index names each tensor's shard; the shards must hold exactly those.
  out.path = index;
  CKPT_ASSIGN_OR_RETURN(std::string text, read_small_text(index));
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::object map;
  if (parser.parse(text).get(doc) || doc["weight_map"].get_object().get(map))
    return Status(ErrorCode::kCorrupt, "not a shard index: no weight_map object", index);
  std::map<std::string, std::set<std::string>> by_shard;
  for (auto field : map) {
    std::string_view file;
    if (field.value.get_string().get(file) || file.empty() ||
        file.find('/') != std::string_view::npos || file == "." || file == "..")
      return Status(ErrorCode::kCorrupt,
                    fmt::format("the weight_map entry of '{}' is not a file name in the "
                                "folder",
                                field.key),
                    index);
    by_shard[std::string(file)].insert(std::string(field.key));
  }
  for (const auto& [file, names] : by_shard)
    if (!fs::is_regular_file(dir / file, ec))
      return Status(ErrorCode::kNotFound,
                    fmt::format("missing: {} names this shard for {} tensors", index, names.size()),
                    (dir / file).string());
  std::set<std::string> seen;
  for (const auto& [file, names] : by_shard) {
    const std::string path = (dir / file).string();
    CKPT_ASSIGN_OR_RETURN(const OpenedInput* in, add_file(path));
    std::set<std::string> found;
    for (const TensorInfo& t : in->checkpoint().tensors) {
      if (!seen.insert(t.name).second)
        return Status(ErrorCode::kCorrupt, "two shards hold this tensor", path, kNoOffset, t.name);
      if (!names.count(t.name))
        return Status(ErrorCode::kCorrupt,
                      fmt::format("the shard holds a tensor that {} places elsewhere or not "
                                  "at all",
                                  index),
                      path, kNoOffset, t.name);
      found.insert(t.name);
      out.tensors.push_back(detail::whole_tensor(*in, t));
    }
    for (const std::string& n : names)
      if (!found.count(n))
        return Status(ErrorCode::kCorrupt,
                      fmt::format("{} places this tensor in the shard, which lacks it", index),
                      path, kNoOffset, n);
  }
  return out;
}

}  // namespace

// --- single file -> diffusers folder ---------------------------------------------------------

Result<ReshapeReport> single_to_diffusers(const std::string& in_path, const std::string& out_dir,
                                          const DiffusersOptions& options) {
  const ReshapeOptions& o = options.common;
  if (!options.prediction_type.empty() && options.prediction_type != "epsilon" &&
      options.prediction_type != "v_prediction")
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("--prediction-type '{}': epsilon or v_prediction expected",
                              options.prediction_type));
  CKPT_RETURN_IF_ERROR(check_output_folder(out_dir));
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !o.run.force)
    return Status(ErrorCode::kInvalidArgument,
                  "the output folder exists; a diffusers folder is written into a new folder "
                  "(or give --force to write over the files of this one)",
                  out_dir);
  const std::string probe = (fs::path(out_dir) / "x").string();
  // The input: one file, or (with part files) the single file assemble would make of them.
  ReshapeReport report;
  std::unique_ptr<OpenedInput> file;
  detail::AssembledSingle assembled;
  std::unique_ptr<detail::TensorSource> source;
  const PartPaths& parts = options.parts;
  if (!parts.clip_l.empty() || !parts.clip_g.empty() || !parts.clip_h.empty() ||
      !parts.t5xxl.empty() || !parts.vae.empty()) {
    PartPaths with = parts;
    with.diffusion_model = in_path;
    CKPT_ASSIGN_OR_RETURN(assembled, detail::assemble_as_single(with, probe, o, true, report));
    report.notes.push_back(fmt::format(
        "the diffusion model and {} part file{} read as the single file `assemble` makes of them",
        assembled.inputs.size() - 1, assembled.inputs.size() == 2 ? "" : "s"));
    source = detail::TensorSource::of_tensors(in_path, std::move(assembled.tensors),
                                              std::move(assembled.metadata), assembled.inputs,
                                              report.input_bytes);
  } else {
    CKPT_ASSIGN_OR_RETURN(file, open_input(in_path, probe, o, true));
    source = detail::TensorSource::of_file(*file);
    report.input_bytes = file->checkpoint().file_size;
  }
  const detail::TensorSource& src = *source;
  const Checkpoint& ck = *src.ck;
  const Anatomy& a = src.a;
  report.architecture = a.architecture;
  report.family = a.family;
  const DiffusersFamily* fam = detail::diffusers_family(a.family, a.architecture);
  if (!fam)
    return Status(ErrorCode::kUnsupported,
                  fmt::format("the file is {} ({}); writing a diffusers folder is supported for "
                              "{}",
                              a.architecture, a.layout, supported_families()),
                  in_path);
  if (!fam->scheduler_prediction && !options.prediction_type.empty())
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("--prediction-type: the {} scheduler ({}) has no prediction type",
                              a.architecture, fam->scheduler_class),
                  in_path);

  // What the model predicts is not in the weights: metadata or a v_pred marker (the anatomy's
  // variant), the user, or the family's usual value.
  std::string prediction = options.prediction_type;
  if (prediction.empty()) {
    if (a.variant.find("v-prediction") != std::string::npos)
      prediction = "v_prediction";
    else if (a.variant.find("epsilon-prediction") != std::string::npos)
      prediction = "epsilon";
    else {
      prediction = std::string(fam->default_prediction);
      if (fam->family == "sd2")
        report.notes.push_back(
            "the file does not say whether it predicts epsilon (SD2 512-base) or v (768-v); "
            "v_prediction assumed, give --prediction-type epsilon for a 512-base model");
    }
  }

  std::vector<bool> placed(ck.tensors.size(), false);
  std::vector<FolderFile> files;
  std::vector<PartTensor> extra;
  std::vector<std::string_view> absent;
  std::string denoiser_prefix;
  const uint64_t diffusers_shard =
      options.max_shard_size ? options.max_shard_size : 10'000'000'000ull;
  const uint64_t transformers_shard =
      options.max_shard_size ? options.max_shard_size : 5'000'000'000ull;
  for (const DiffusersSlot& slot : fam->slots) {
    const Component* c = nullptr;
    for (const Component& comp : a.components)
      if (comp.kind == slot.kind && comp.role != Role::kEma) c = &comp;
    if (!c && fam->parts_optional && !is_denoiser(slot.kind)) {
      // A FLUX transformer file alone, or one without its text encoders: the folder says
      // [null, null] for the part, as diffusers writes an absent component.
      absent.push_back(slot.folder);
      report.notes.push_back(
          fmt::format("{}: the file has no {}; [null, null] in "
                      "model_index.json (give it to from_pretrained)",
                      slot.folder, part_display_name(slot.kind)));
      continue;
    }
    if (!c)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("the file has no {}; the {} folder needs one for {}/",
                                part_display_name(slot.kind), fam->pipeline, slot.folder),
                    in_path);
    const detail::FamilyLayout* layout = detail::family_layout(fam->family);
    const detail::FamilySlot* fs_slot = layout ? slot_for(*layout, slot.kind) : nullptr;
    if (is_denoiser(slot.kind) && fs_slot && c->prefix != fs_slot->prefix)
      denoiser_prefix = c->prefix.empty() ? std::string("-") : c->prefix;
    for (size_t i : c->tensors) placed[i] = true;
    std::vector<PartTensor> ts = src.component(*c);
    for (const PartTensor& t : ts)
      if (is_quantized(t.dtype)) return quantized_refusal(in_path, t);
    if (fam->text_drops_last_layer && c->naming == Naming::kOpenClip) {
      // SD2: the folder's text encoder ends one layer early; the last layer, the projection
      // and logit_scale stay in the extra file, in their single-file form.
      int last = -1;
      for (const PartTensor& t : ts)
        if (t.name.starts_with("transformer.resblocks."))
          last = std::max(last, std::atoi(t.name.c_str() + 22));
      const std::string last_block = fmt::format("transformer.resblocks.{}.", last);
      std::vector<PartTensor> keep;
      for (size_t k = 0; k < ts.size(); ++k) {
        const std::string& n = ts[k].name;
        if (n.starts_with(last_block) || n == "text_projection" || n == "logit_scale")
          extra.push_back(src.tensor(c->tensors[k]));
        else
          keep.push_back(std::move(ts[k]));
      }
      ts = std::move(keep);
      report.notes.push_back(fmt::format(
          "{}: layer {}, text_projection and logit_scale are not in a diffusers {} text "
          "encoder (the pipeline uses the penultimate layer); kept in {}",
          slot.folder, last, fam->pipeline, kExtraFile));
    }
    std::vector<PartTensor> out;
    std::string config;
    const std::string where = fmt::format("{}/{}", out_dir, slot.folder);
    if (slot.kind == PartKind::kUNet) {
      std::vector<std::string> names;
      for (const PartTensor& t : ts) names.push_back(t.name);
      const detail::UNetNames map(names);
      for (PartTensor& t : ts) {
        auto d = map.to_diffusers(t.name);
        if (!d) return no_counterpart(in_path, t.name, "UNet", "diffusers");
        t.name = *d;
        out.push_back(std::move(t));
      }
      CKPT_ASSIGN_OR_RETURN(config,
                            detail::unet_config_json(*fam, shapes_of(out), prediction, where));
    } else if (slot.kind == PartKind::kVae) {
      std::vector<std::string> names;
      for (const PartTensor& t : ts) names.push_back(t.name);
      const detail::VaeNames map(names);
      for (PartTensor& t : ts) {
        auto d = map.to_diffusers(t.name);
        if (!d) return no_counterpart(in_path, t.name, "VAE", "diffusers");
        t.name = d->name;
        if (d->conv_as_linear) CKPT_RETURN_IF_ERROR(reshape_projection(t, true, in_path));
        out.push_back(std::move(t));
      }
      CKPT_ASSIGN_OR_RETURN(config, detail::vae_config_json(*fam, shapes_of(out), where));
    } else if (slot.kind == PartKind::kFluxDiT || slot.kind == PartKind::kMMDiT) {
      CKPT_ASSIGN_OR_RETURN(out, map_dit(fam->family, std::move(ts), true, in_path));
      CKPT_ASSIGN_OR_RETURN(config, detail::transformer_config_json(*fam, shapes_of(out), where));
    } else if (slot.kind == PartKind::kT5xxl) {
      // T5EncoderModel ties encoder.embed_tokens to shared and saves shared.weight alone
      // (transformers' _tied_weights_keys): the single file's copy, and anything else a
      // T5EncoderModel has no place for (logit_scale), stay in the extra file.
      for (PartTensor& t : ts) {
        if (t.name == "shared.weight" ||
            (t.name.starts_with("encoder.") && t.name != "encoder.embed_tokens.weight")) {
          out.push_back(std::move(t));
          continue;
        }
        t.name = fs_slot ? detail::add_component_prefix(t.name, *fs_slot) : c->prefix + t.name;
        extra.push_back(std::move(t));
      }
      CKPT_ASSIGN_OR_RETURN(
          config, detail::t5_config_json(shapes_of(out),
                                         out.empty() ? DType::F32 : out.front().dtype, where));
    } else {
      // CLIP text encoders: Hugging Face names already, or OpenCLIP's, converted exactly.
      if (c->naming == Naming::kOpenClip) {
        CKPT_ASSIGN_OR_RETURN(ts, detail::openclip_to_hf(std::move(ts), in_path));
        report.notes.push_back(
            fmt::format("{}: OpenCLIP in_proj split into q/k/v rows{} (exact)", slot.folder,
                        fam->text_drops_last_layer ? "" : ", text_projection transposed"));
      }
      const bool keeps_projection = slot.class_name == "CLIPTextModelWithProjection";
      for (PartTensor& t : ts) {
        if (t.name.starts_with("text_model.") ||
            (keeps_projection && t.name == "text_projection.weight")) {
          out.push_back(std::move(t));
          continue;
        }
        // logit_scale, a projection CLIPTextModel has no place for: kept for the way back,
        // under its single-file name. Only names that the OpenCLIP conversion did not change
        // can be put back that way.
        if (c->naming == Naming::kOpenClip && t.name != "logit_scale")
          return no_counterpart(in_path, t.name, part_display_name(slot.kind), "diffusers");
        t.name = fs_slot ? detail::add_component_prefix(t.name, *fs_slot) : c->prefix + t.name;
        extra.push_back(std::move(t));
      }
      if (keeps_projection && std::none_of(out.begin(), out.end(), [](const PartTensor& t) {
            return t.name == "text_projection.weight";
          }))
        return Status(ErrorCode::kUnsupported,
                      fmt::format("the {} under '{}' has no text_projection.weight, which a "
                                  "diffusers {} needs (diffusers' own loader puts an identity "
                                  "matrix there; ckptkit writes only tensors the file has)",
                                  part_display_name(slot.kind), c->prefix, slot.class_name),
                      in_path);
      if (out.empty())
        return Status(ErrorCode::kUnsupported,
                      fmt::format("the {} under '{}' has no Hugging Face text_model.* names "
                                  "(an old layout without the text_model level?), which a "
                                  "diffusers {} needs",
                                  part_display_name(slot.kind), c->prefix, slot.class_name),
                      in_path);
      const DType dtype = out.front().dtype;
      CKPT_ASSIGN_OR_RETURN(config,
                            detail::clip_config_json(slot.kind, shapes_of(out), dtype, where));
    }
    Plan plan;
    src.add_inputs(plan);
    add_tensors(plan, out);
    plan.metadata = {{"format", "pt"}};
    for (FolderFile& f :
         shard({fmt::format("{}/{}", slot.folder, slot.weights), std::move(plan), "",
                std::string(slot.folder), in_path},
               slot.library == "transformers" ? transformers_shard : diffusers_shard))
      files.push_back(std::move(f));
    files.push_back({fmt::format("{}/config.json", slot.folder), std::nullopt, config,
                     fmt::format("{} config", slot.folder), in_path});
  }
  // What the folder has no place for.
  DroppedGroup kept{"kept_in_extra_file", 0, 0, {}};
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    if (placed[i]) continue;
    extra.push_back(src.tensor(i));
  }
  for (const PartTensor& t : extra) {
    if (is_quantized(t.dtype)) return quantized_refusal(in_path, t);
    ++kept.tensors;
    kept.bytes += t.shape.empty() ? dtype_info(t.dtype).bits / 8
                                  : shape_numel(t.shape).value_or(0) * dtype_info(t.dtype).bits / 8;
    if (kept.names.size() < kListed) kept.names.push_back(t.name);
  }
  {
    Plan plan;
    src.add_inputs(plan);
    add_tensors(plan, extra);
    plan.metadata = ck.metadata;
    plan.metadata[std::string(kExtraKey)] =
        "tensors and metadata of the single file that a diffusers folder has no place for; "
        "`ckptkit convert FOLDER -o FILE.safetensors` puts them back";
    if (!denoiser_prefix.empty()) plan.metadata[std::string(kDenoiserPrefixKey)] = denoiser_prefix;
    files.push_back({std::string(kExtraFile), std::move(plan), "", "extra", in_path});
  }
  files.push_back({"scheduler/scheduler_config.json", std::nullopt,
                   detail::scheduler_config_json(*fam, prediction), "scheduler", in_path});
  std::vector<std::string> tokenizers;
  for (const DiffusersSlot& slot : fam->slots)
    if (slot.folder.starts_with("text_encoder") &&
        std::find(absent.begin(), absent.end(), slot.folder) == absent.end())
      tokenizers.push_back(detail::tokenizer_of(slot.folder));
  if (!options.tokenizers_from.empty()) {
    // Tokenizer files are vocabularies, not weights: copied as they are from a folder that
    // has them.
    for (const std::string& t : tokenizers) {
      const fs::path from = fs::path(options.tokenizers_from) / t;
      std::vector<std::string> names;
      for (const auto& e : fs::directory_iterator(from, ec))
        if (e.is_regular_file(ec)) names.push_back(e.path().filename().string());
      if (names.empty())
        return Status(ErrorCode::kNotFound,
                      fmt::format("--tokenizers-from: expected the {} folder of a diffusers "
                                  "model here (vocab.json, merges.txt, …)",
                                  t),
                      from.string());
      std::sort(names.begin(), names.end());
      for (const std::string& n : names) {
        CKPT_ASSIGN_OR_RETURN(std::string text, read_small_text((from / n).string()));
        files.push_back(
            {fmt::format("{}/{}", t, n), std::nullopt, std::move(text), t, (from / n).string()});
      }
    }
  }
  const std::string_view pipeline = a.variant == "inpaint" ? fam->inpaint_pipeline : fam->pipeline;
  files.push_back(
      {"model_index.json", std::nullopt,
       detail::model_index_json(
           *fam, pipeline,
           options.tokenizers_from.empty() ? std::vector<std::string>{} : tokenizers, absent),
       "model_index", in_path});
  if (kept.tensors > 0) report.dropped.push_back(kept);
  if (options.tokenizers_from.empty() && !tokenizers.empty())
    report.notes.push_back(fmt::format(
        "not included: {} (a tokenizer cannot be derived from weights: give --tokenizers-from "
        "a diffusers folder that has it, or pass it to from_pretrained)",
        fmt::join(tokenizers, ", ")));
  RunOptions run = o.run;
  CKPT_RETURN_IF_ERROR(write_folder(files, out_dir, run, report));
  return report;
}

// --- diffusers folder -> single file ---------------------------------------------------------

Result<detail::FolderAsSingle> detail::read_folder_as_single(const std::string& in_dir,
                                                            const std::string& out_path,
                                                            const ReshapeOptions& o,
                                                            ReshapeReport& report) {
  CKPT_ASSIGN_OR_RETURN(DiffusersFolder folder, read_diffusers_folder(in_dir));
  const std::string index = (fs::path(in_dir) / "model_index.json").string();
  const bool has_text_encoder =
      std::any_of(folder.parts.begin(), folder.parts.end(),
                  [](const DiffusersPart& p) { return p.name == "text_encoder"; });
  const DiffusersFamily* fam =
      detail::diffusers_family_of_pipeline(folder.pipeline, has_text_encoder, folder.architecture);
  // SD1 and SD2 share their pipeline classes: the UNet's cross-attention width (its config,
  // which inspect reads) tells them apart; the weights are checked against it below.
  if (fam && fam->family == "sd1" && folder.architecture.starts_with("sd2"))
    fam = detail::diffusers_family("sd2");
  if (!fam)
    return Status(ErrorCode::kUnsupported,
                  fmt::format("the pipeline is '{}'; converting a diffusers folder to a single "
                              "file is supported for {}",
                              folder.pipeline, supported_families()),
                  index);
  const detail::FamilyLayout* layout = detail::family_layout(fam->family);
  if (!layout) return Status(ErrorCode::kInternal, "no single-file layout for the family", index);
  report.family = std::string(fam->family);

  std::vector<std::unique_ptr<OpenedInput>> inputs;
  std::vector<PartTensor> all;
  // What the folder has no place for, from ckptkit_extra.safetensors when the folder came from
  // a single file: its tensors, its metadata and where the denoiser sat.
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::optional<std::string> denoiser_prefix;
  const std::string extra_path = (fs::path(in_dir) / kExtraFile).string();
  std::error_code ec;
  if (fs::exists(extra_path, ec)) {
    CKPT_ASSIGN_OR_RETURN(auto in, open_input(extra_path, out_path, o, false));
    for (const TensorInfo& t : in->checkpoint().tensors)
      all.push_back(detail::whole_tensor(*in, t));
    metadata = in->checkpoint().metadata;
    metadata.erase(std::string(kExtraKey));
    if (auto it = metadata.find(std::string(kDenoiserPrefixKey)); it != metadata.end()) {
      denoiser_prefix = it->second == "-" ? std::string() : it->second;
      metadata.erase(it);
    }
    report.notes.push_back(fmt::format("{} tensors and the single file's metadata restored from {}",
                                       in->checkpoint().tensors.size(), kExtraFile));
    report.input_bytes += in->checkpoint().file_size;
    inputs.push_back(std::move(in));
  }
  for (const DiffusersSlot& slot : fam->slots) {
    const bool listed = std::any_of(folder.parts.begin(), folder.parts.end(),
                                    [&](const DiffusersPart& p) { return p.name == slot.folder; });
    if (!listed && fam->parts_optional && !is_denoiser(slot.kind)) {
      report.notes.push_back(
          fmt::format("{}: [null, null] in model_index.json; the single file "
                      "has no {}",
                      slot.folder, part_display_name(slot.kind)));
      continue;
    }
    if (!listed)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("model_index.json has no '{}' entry; a {} folder needs {}/{}",
                                slot.folder, fam->pipeline, slot.folder, slot.weights),
                    index);
    CKPT_ASSIGN_OR_RETURN(PartFiles part, read_part(in_dir, slot, out_path, o, inputs, report));
    const std::string& path = part.path;
    const detail::FamilySlot* fslot = slot_for(*layout, slot.kind);
    if (!fslot) return Status(ErrorCode::kInternal, "no single-file slot for the part", path);
    std::vector<PartTensor> ts = std::move(part.tensors);
    std::vector<std::string> names;
    for (const PartTensor& t : ts) {
      names.push_back(t.name);
      if (is_quantized(t.dtype)) return quantized_refusal(path, t);
    }
    if (ts.empty())
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("the {} part holds no tensors", slot.folder), path);
    {
      // The part's config.json must describe these weights (else the folder is not what its
      // model_index.json says, or was edited by hand).
      const detail::ShapeMap shapes = shapes_of(ts);
      const std::string config = (fs::path(in_dir) / slot.folder / "config.json").string();
      Result<std::string> derived =
          slot.kind == PartKind::kUNet    ? detail::unet_config_json(*fam, shapes, "epsilon", path)
          : slot.kind == PartKind::kVae   ? detail::vae_config_json(*fam, shapes, path)
          : slot.kind == PartKind::kT5xxl ? detail::t5_config_json(shapes, ts.front().dtype, path)
          : is_denoiser(slot.kind)
              ? detail::transformer_config_json(*fam, shapes, path)
              : detail::clip_config_json(slot.kind, shapes, ts.front().dtype, path);
      if (!derived) return derived.status();
      CKPT_RETURN_IF_ERROR(detail::check_config_against_weights(config, *derived));
    }
    std::vector<PartTensor> out;
    if (slot.kind == PartKind::kUNet) {
      if (fam->family == "sd1" || fam->family == "sd2") {
        // Without a unet/config.json the pipeline class alone cannot tell SD1 from SD2.
        const uint64_t want = fam->family == "sd1" ? 768 : 1024;
        for (const PartTensor& t : ts)
          if (t.name.ends_with("attn2.to_k.weight") && t.shape.size() == 2 && t.shape[1] != want)
            return Status(ErrorCode::kInvalidArgument,
                          fmt::format("the UNet attends to {}-wide text, the folder was taken "
                                      "for {} ({} wide) from its model_index.json and "
                                      "unet/config.json",
                                      t.shape[1], fam->family, want),
                          path, kNoOffset, t.name);
      }
      const detail::UNetNames map = detail::UNetNames::from_diffusers(names);
      for (PartTensor& t : ts) {
        auto l = map.to_ldm(t.name);
        if (!l) return no_counterpart(path, t.name, "UNet", "single-file");
        t.name = *l;
        out.push_back(std::move(t));
      }
    } else if (slot.kind == PartKind::kVae) {
      const detail::VaeNames map(names);
      for (PartTensor& t : ts) {
        auto l = map.to_ldm(t.name);
        if (!l) return no_counterpart(path, t.name, "VAE", "single-file");
        t.name = l->name;
        if (l->conv_as_linear) CKPT_RETURN_IF_ERROR(reshape_projection(t, false, path));
        out.push_back(std::move(t));
      }
    } else if (slot.kind == PartKind::kFluxDiT || slot.kind == PartKind::kMMDiT) {
      // The transformer's config was checked against these shapes above, so its rows divide
      // as the rules say.
      CKPT_ASSIGN_OR_RETURN(out, map_dit(fam->family, std::move(ts), false, path));
    } else if (slot.kind == PartKind::kT5xxl) {
      for (const PartTensor& t : ts)
        if (t.name != "shared.weight" && !t.name.starts_with("encoder."))
          return no_counterpart(path, t.name, part_display_name(slot.kind), "single-file");
      out = std::move(ts);
    } else {
      for (const PartTensor& t : ts)
        if (!t.name.starts_with("text_model.") && t.name != "text_projection.weight")
          return no_counterpart(path, t.name, part_display_name(slot.kind), "single-file");
      if (fslot->naming == Naming::kOpenClip) {
        std::vector<std::string> dropped;
        CKPT_ASSIGN_OR_RETURN(ts, detail::hf_to_openclip(std::move(ts), path, &dropped));
        if (!dropped.empty())
          report.dropped.push_back({"no_openclip_name", dropped.size(), 0, dropped});
      }
      out = std::move(ts);
    }
    detail::FamilySlot dest = *fslot;
    if (is_denoiser(slot.kind) && denoiser_prefix) dest.prefix = *denoiser_prefix;
    for (PartTensor& t : out) t.name = detail::add_component_prefix(t.name, dest);
    for (PartTensor& t : out) all.push_back(std::move(t));
  }
  std::set<std::string_view> seen;
  for (const PartTensor& t : all)
    if (!seen.insert(t.name).second)
      return Status(ErrorCode::kInvalidArgument,
                    "two parts of the folder give the same single-file tensor", in_dir, kNoOffset,
                    t.name);
  report.architecture = folder.architecture;
  return FolderAsSingle{std::move(inputs), std::move(all), std::move(metadata)};
}

Result<ReshapeReport> diffusers_to_single(const std::string& in_dir, const std::string& out_path,
                                          const ReshapeOptions& o) {
  CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, o.run.force));
  ReshapeReport report;
  CKPT_ASSIGN_OR_RETURN(detail::FolderAsSingle f,
                        detail::read_folder_as_single(in_dir, out_path, o, report));
  Plan plan;
  for (const auto& in : f.inputs) in->add_inputs(plan);
  add_tensors(plan, f.tensors);
  plan.metadata = std::move(f.metadata);
  RunOptions run = o.run;
  if (run.label == RunOptions{}.label) run.label = "converting";
  CKPT_ASSIGN_OR_RETURN(RunStats stats, execute_plan(plan, out_path, run));
  report.stats = stats;
  report.outputs.push_back({out_path, "model", stats.tensors, stats.bytes_written, in_dir});
  return report;
}

}  // namespace ckptkit
