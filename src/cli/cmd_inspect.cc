// `ckptkit inspect FILE [--json] [--tensors]` — reads only the header.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "ckptkit/anatomy.h"
#include "ckptkit/gguf.h"
#include "ckptkit/lora.h"
#include "ckptkit/reader.h"
#include "ckptkit/safetensors.h"
#include "ckptkit/scan.h"
#include "cli/anatomy_report.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/inspect_report.h"
#include "cli/json_writer.h"
#include "cli/scan_report.h"
#include "io/file.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {
namespace {

struct DTypeStats {
  uint64_t tensors = 0, parameters = 0, bytes = 0;
};

std::string with_commas(uint64_t v) {
  const std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

bool is_torch(const Checkpoint& ck) {
  return ck.format == FileFormat::kTorchZip || ck.format == FileFormat::kTorchLegacy;
}

/// One GGUF value as JSON: a number, a bool, a string, or an array of them (whole).
void write_gguf_value(JsonWriter& w, const GgufKV& kv, uint64_t i) {
  if (kv.elem == GgufType::kString) {
    const std::string* s = kv.string_at(i);
    w.value(s ? std::string_view(*s) : std::string_view());
  } else if (kv.elem == GgufType::kBool) {
    w.value(kv.uint_at(i).value_or(0) != 0);
  } else if (kv.elem == GgufType::kF32 || kv.elem == GgufType::kF64) {
    w.value(kv.number_at(i).value_or(0));
  } else if (auto u = kv.uint_at(i)) {
    w.value(*u);
  } else {
    w.value(kv.number_at(i).value_or(0));  // a negative integer
  }
}

void write_gguf_json(JsonWriter& w, const Checkpoint& ck) {
  w.key("gguf").begin_object();
  w.key("version").value(static_cast<uint64_t>(ck.gguf.version));
  w.key("alignment").value(static_cast<uint64_t>(ck.gguf.alignment));
  w.key("kv").begin_array();
  for (const GgufKV& kv : ck.gguf.kv) {
    w.begin_object();
    w.key("key").value(kv.key);
    w.key("type").value(gguf_type_name(kv.is_array() ? kv.elem : kv.type));
    if (kv.is_array()) {
      w.key("values").begin_inline_array();
      for (uint64_t i = 0; i < kv.count(); ++i) write_gguf_value(w, kv, i);
      w.end_array();
    } else {
      w.key("value");
      write_gguf_value(w, kv, 0);
    }
    w.end_object();
  }
  w.end_array();
  w.end_object();
}

/// "a 3, b 2" from a count map, in the map's order.
template <typename Map, typename Name>
std::string counts_text(const Map& m, Name name) {
  std::string s;
  for (const auto& [k, n] : m) s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", name(k), n);
  return s;
}

std::string lora_text(const LoraFile& l) {
  std::string out;
  out += fmt::format("{:<12}{} keys, {} modules: {}\n", "lora", l.format, l.modules.size(),
                     counts_text(l.targets, [](LoraTarget t) { return lora_target_name(t); }));
  out += fmt::format("{:<12}{}{}{}\n", "", counts_text(l.kinds, [](LoraKind k) {
                       return lora_kind_name(k);
                     }),
                     l.conv_modules ? fmt::format("; {} on convolutions", l.conv_modules) : "",
                     l.dora_modules ? fmt::format("; {} with DoRA", l.dora_modules) : "");
  if (!l.ranks.empty())
    out += fmt::format("{:<12}rank {}\n", "",
                       counts_text(l.ranks, [](uint64_t r) { return std::to_string(r); }));
  if (!l.alphas.empty())
    out += fmt::format("{:<12}alpha {}\n", "",
                       counts_text(l.alphas, [](const std::string& a) { return a; }));
  if (l.missing_alpha > 0)
    out += fmt::format("{:<12}{} modules have no alpha: loaders apply them at scale 1 (alpha = "
                       "rank)\n",
                       "warning", l.missing_alpha);
  for (size_t i = 0; i < l.errors.size() && i < 10; ++i)
    out += fmt::format("{:<12}{}: {}\n", i == 0 ? "error" : "", l.errors[i].key,
                       l.errors[i].message);
  if (l.errors.size() > 10) out += fmt::format("{:<12}… and {} more\n", "", l.errors.size() - 10);
  for (size_t i = 0; i < l.unknown_keys.size() && i < 5; ++i)
    out += fmt::format("{:<12}{}\n", i == 0 ? "not lora" : "", l.unknown_keys[i]);
  if (l.unknown_keys.size() > 5)
    out += fmt::format("{:<12}… and {} more (--json lists all)\n", "", l.unknown_keys.size() - 5);
  const LoraTraining& t = l.training;
  std::vector<std::string> facts;
  auto add = [&](std::string_view what, const std::string& v) {
    if (!v.empty()) facts.push_back(fmt::format("{}: {}", what, v));
  };
  add("base model", t.base_model);
  add("network", t.network);
  add("dim", t.network_dim);
  add("alpha", t.network_alpha);
  add("resolution", t.resolution);
  add("epochs", t.epochs);
  add("steps", t.steps);
  add("trigger", t.trigger);
  if (!t.top_tags.empty())
    add("top tags", counts_text(t.top_tags, [](const std::string& s) { return s; }));
  for (size_t i = 0; i < facts.size(); ++i)
    out += fmt::format("{:<12}{}\n", i == 0 ? "training" : "", facts[i]);
  return out;
}

void write_lora_json(JsonWriter& w, const LoraFile& l) {
  w.key("lora_modules").begin_object();
  w.key("format").value(l.format);
  w.key("modules").value(static_cast<uint64_t>(l.modules.size()));
  w.key("targets").begin_object();
  for (const auto& [t, n] : l.targets) w.key(std::string(lora_target_name(t))).value(n);
  w.end_object();
  w.key("kinds").begin_object();
  for (const auto& [k, n] : l.kinds) w.key(std::string(lora_kind_name(k))).value(n);
  w.end_object();
  w.key("ranks").begin_object();
  for (const auto& [r, n] : l.ranks) w.key(std::to_string(r)).value(n);
  w.end_object();
  w.key("alphas").begin_object();
  for (const auto& [a, n] : l.alphas) w.key(a).value(n);
  w.end_object();
  w.key("conv_modules").value(l.conv_modules);
  w.key("dora_modules").value(l.dora_modules);
  w.key("missing_alpha").value(l.missing_alpha);
  w.key("errors").begin_array();
  for (const LoraProblem& e : l.errors) {
    w.begin_object();
    w.key("key").value(e.key);
    w.key("message").value(e.message);
    w.end_object();
  }
  w.end_array();
  w.key("unknown_keys").begin_array();
  for (const std::string& k : l.unknown_keys) w.value(k);
  w.end_array();
  const LoraTraining& t = l.training;
  w.key("training").begin_object();
  w.key("base_model").value(t.base_model);
  w.key("network").value(t.network);
  w.key("network_dim").value(t.network_dim);
  w.key("network_alpha").value(t.network_alpha);
  w.key("resolution").value(t.resolution);
  w.key("epochs").value(t.epochs);
  w.key("steps").value(t.steps);
  w.key("trigger").value(t.trigger);
  w.key("output_name").value(t.output_name);
  w.key("top_tags").begin_array();
  for (const auto& [tag, n] : t.top_tags) {
    w.begin_object();
    w.key("tag").value(tag);
    w.key("count").value(n);
    w.end_object();
  }
  w.end_array();
  w.end_object();
  w.key("module_list").begin_array();
  for (const LoraModule& m : l.modules) {
    w.begin_object();
    w.key("name").value(m.name);
    w.key("kind").value(lora_kind_name(m.kind));
    w.key("target").value(lora_target_name(m.target));
    w.key("rank").value(m.rank);
    w.key("alpha");
    if (m.alpha)
      w.value(*m.alpha);
    else
      w.null();
    w.key("conv").value(m.conv);
    w.key("dora").value(m.dora);
    w.key("delta_shape").begin_array();
    for (uint64_t d : m.delta_shape) w.value(d);
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.end_object();
}

std::string target_text(const LoraModuleMatch& m) {
  if (m.base_tensor.empty()) return "";
  return m.rows ? fmt::format("{} rows {}:{}", m.base_tensor, m.rows->first, m.rows->second)
                : m.base_tensor;
}

int print_against(const LoraFile& lora, const Anatomy& la, const std::string& base_path,
                  const Anatomy& ba, const std::vector<LoraModuleMatch>& matches, bool json) {
  uint64_t landed = 0;
  for (const LoraModuleMatch& m : matches) landed += !m.base_tensor.empty();
  const uint64_t missed = matches.size() - landed;
  std::string family_note;
  if (!la.lora_base.empty() && !ba.family.empty() && la.lora_base != ba.family &&
      !(la.lora_base == "sdxl" && ba.family == "sdxl-refiner"))
    family_note = fmt::format("the LoRA looks made for {}, the base is {}", la.lora_base,
                              ba.family);
  if (json) {
    JsonWriter w;
    w.begin_object();
    w.key("base").value(base_path);
    w.key("base_architecture").value(ba.architecture);
    w.key("lora_base").value(la.lora_base);
    w.key("note").value(family_note);
    w.key("modules").value(static_cast<uint64_t>(matches.size()));
    w.key("matched").value(landed);
    w.key("unmatched").value(missed);
    w.key("module_list").begin_array();
    for (const LoraModuleMatch& m : matches) {
      w.begin_object();
      w.key("module").value(m.module);
      w.key("base_tensor");
      if (m.base_tensor.empty())
        w.null();
      else
        w.value(m.base_tensor);
      w.key("rows");
      if (m.rows) {
        w.begin_array();
        w.value(m.rows->first);
        w.value(m.rows->second);
        w.end_array();
      } else {
        w.null();
      }
      w.key("why_not").value(m.why_not);
      w.end_object();
    }
    w.end_array();
    w.end_object();
    print_out(w.str());
    return missed ? kExitProblems : kExitOk;
  }
  std::string out = fmt::format("{} of {} modules ({} LoRA) land in {} ({}){}\n", landed,
                                matches.size(), lora.format, base_path, ba.architecture,
                                family_note.empty() ? "" : "; " + family_note);
  for (const LoraModuleMatch& m : matches)
    out += m.base_tensor.empty() ? fmt::format("  {}  ->  none: {}\n", m.module, m.why_not)
                                 : fmt::format("  {}  ->  {}\n", m.module, target_text(m));
  print_out(out);
  return missed ? kExitProblems : kExitOk;
}

std::string render_json(const Checkpoint& ck, const std::map<std::string, DTypeStats>& by_dtype,
                        bool list, const ScanReport* scan, const Anatomy& anatomy,
                        const std::vector<std::string>& fingerprints, const LoraFile* lora) {
  JsonWriter w;
  w.begin_object();
  w.key("path").value(ck.path);
  w.key("format").value(format_name(ck.format));
  w.key("file_size").value(ck.file_size);
  w.key("header_size").value(ck.header_size);
  w.key("tensors").value(static_cast<uint64_t>(ck.tensors.size()));
  w.key("parameters").value(ck.parameter_count());
  w.key("dtypes").begin_object();
  for (const auto& [name, s] : by_dtype) {
    w.key(name).begin_object();
    w.key("tensors").value(s.tensors);
    w.key("parameters").value(s.parameters);
    w.key("bytes").value(s.bytes);
    if (ck.format == FileFormat::kGguf && s.parameters > 0)
      w.key("bits_per_weight")
          .value(static_cast<double>(s.bytes) * 8 / static_cast<double>(s.parameters));
    w.end_object();
  }
  w.end_object();
  w.key("metadata").begin_object();
  for (const auto& [k, v] : ck.metadata) w.key(k).value(v);
  w.end_object();
  write_anatomy_json(w, anatomy, ck, fingerprints);
  if (lora != nullptr) write_lora_json(w, *lora);
  if (ck.format == FileFormat::kGguf) {
    write_gguf_json(w, ck);
  } else if (!is_torch(ck)) {
    w.key("header").begin_object();
    w.key("leading_whitespace").value(ck.quirks.leading_whitespace);
    w.key("trailing_whitespace").value(ck.quirks.trailing_whitespace);
    w.key("canonical_order").value(ck.quirks.canonical_order);
    w.end_object();
  } else {
    w.key("state_dict_key").value(ck.torch.state_dict_key);
    w.key("other_entries").begin_array();
    for (const std::string& e : ck.torch.other_entries) w.value(e);
    w.end_array();
    w.key("dropped_values").value(ck.torch.dropped_values);
    w.key("storages").value(static_cast<uint64_t>(ck.torch.storages.size()));
    w.key("pickle").begin_object();
    w.key("entry");
    if (ck.torch.pickle_entry.empty())
      w.null();
    else
      w.value(ck.torch.pickle_entry);
    w.key("offset").value(ck.torch.pickle_offset);
    w.key("bytes").value(ck.header_size);
    w.key("protocol").value(static_cast<uint64_t>(ck.torch.pickle_protocol));
    w.end_object();
    if (scan) {
      w.key("scan");
      write_scan_json(w, *scan);
    }
  }
  if (list) {
    w.key("tensor_list").begin_array();
    for (const TensorInfo& t : ck.tensors) {
      w.begin_object();
      w.key("name").value(t.name);
      w.key("dtype").value(dtype_name(t.dtype));
      w.key("shape").begin_inline_array();
      for (uint64_t d : t.shape) w.value(d);
      w.end_array();
      if (!is_torch(ck)) {
        w.key("data_offsets").begin_inline_array().value(t.begin).value(t.end).end_array();
      } else {
        w.key("storage").value(ck.torch.storages[static_cast<size_t>(t.storage)].key);
        if (!t.strides.empty()) {
          w.key("strides").begin_inline_array();
          for (uint64_t d : t.strides) w.value(d);
          w.end_array();
        }
        if (t.big_endian) w.key("big_endian").value(true);
      }
      w.key("file_offset").value(ck.data_offset + t.begin);
      w.end_object();
    }
    w.end_array();
  }
  w.end_object();
  return w.str();
}

int print_json(const Checkpoint& ck, const std::map<std::string, DTypeStats>& by_dtype, bool list,
               const ScanReport* scan, const Anatomy& anatomy,
               const std::vector<std::string>& fingerprints, const LoraFile* lora) {
  print_out(render_json(ck, by_dtype, list, scan, anatomy, fingerprints, lora));
  return kExitOk;
}

int print_text(const Checkpoint& ck, const std::map<std::string, DTypeStats>& by_dtype, bool list,
               const ScanReport* scan, const Anatomy& anatomy,
               const std::vector<std::string>& fingerprints, const LoraFile* lora) {
  std::string out;
  out += fmt::format("{:<12}{}\n", "file", ck.path);
  out += fmt::format("{:<12}{}\n", "format", format_name(ck.format));
  out += fmt::format("{:<12}{} ({} bytes)\n", "size", human_bytes(ck.file_size),
                     with_commas(ck.file_size));
  if (ck.format == FileFormat::kGguf) {
    out += fmt::format("{:<12}version {}, alignment {}, {} key-value pairs, {} header bytes\n",
                       "gguf", ck.gguf.version, ck.gguf.alignment, ck.gguf.kv.size(),
                       with_commas(ck.header_size));
  } else if (!is_torch(ck)) {
    out += fmt::format("{:<12}{} bytes of JSON\n", "header", with_commas(ck.header_size));
  } else {
    out += fmt::format("{:<12}{} bytes, protocol {}{}\n", "pickle", with_commas(ck.header_size),
                       ck.torch.pickle_protocol,
                       ck.torch.pickle_entry.empty() ? "" : " (" + ck.torch.pickle_entry + ")");
    out += fmt::format(
        "{:<12}{}\n", "state dict",
        ck.torch.state_dict_key.empty() ? "the top level" : "'" + ck.torch.state_dict_key + "'");
    if (!ck.torch.other_entries.empty()) {
      std::string others;
      for (const std::string& e : ck.torch.other_entries)
        others += (others.empty() ? "" : ", ") + e;
      out +=
          fmt::format("{:<12}{} (not tensors of the model; dropped by convert)\n", "other", others);
    }
    if (scan)
      out += fmt::format("{:<12}{} — {}\n", "safety", verdict_name(scan->verdict), scan->summary);
  }
  out += fmt::format("{:<12}{}\n", "tensors", with_commas(ck.tensors.size()));
  out += fmt::format("{:<12}{} ({})\n", "parameters", with_commas(ck.parameter_count()),
                     short_count(ck.parameter_count()));
  bool first = true;
  for (const auto& [name, s] : by_dtype) {
    out += fmt::format("{:<12}{:<8} {:>6} tensors  {:>14} params  {:>10}", first ? "dtypes" : "",
                       name, s.tensors, with_commas(s.parameters), human_bytes(s.bytes));
    if (ck.format == FileFormat::kGguf && s.parameters > 0)
      out += fmt::format("  {:.4g} bits/weight",
                         static_cast<double>(s.bytes) * 8 / static_cast<double>(s.parameters));
    out += '\n';
    first = false;
  }
  out += anatomy_text(anatomy, ck, fingerprints);
  if (lora != nullptr) out += lora_text(*lora);
  if (ck.metadata.empty()) {
    out += fmt::format("{:<12}(none)\n", "metadata");
  } else {
    first = true;
    for (const auto& [k, v] : ck.metadata) {
      std::string shown =
          v.size() > 200 ? v.substr(0, 200) + fmt::format("… ({} bytes)", v.size()) : v;
      for (char& c : shown)
        if (c == '\n' || c == '\r') c = ' ';
      out += fmt::format("{:<12}{}: {}\n", first ? "metadata" : "", k, shown);
      first = false;
    }
  }
  if (list) {
    out += "\n";
    size_t width = 4;
    for (const TensorInfo& t : ck.tensors) width = std::max(width, t.name.size());
    out += fmt::format("{:<{}}  {:<8} {:<22} {}\n", "name", width, "dtype", "shape", "offset");
    for (const TensorInfo& t : ck.tensors)
      out += fmt::format("{:<{}}  {:<8} {:<22} {:#x}{}\n", t.name, width, dtype_name(t.dtype),
                         shape_to_string(t.shape), ck.data_offset + t.begin,
                         t.strides.empty() ? "" : " (strided view)");
  }
  print_out(out);
  return kExitOk;
}

}  // namespace

Runner setup_inspect(CLI::App& sub) {
  struct Opts {
    std::string file;
    bool json = false;
    bool tensors = false;
    bool fingerprint = false;
    std::string against;
    uint64_t max_header = kDefaultMaxHeaderBytes;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("FILE", o->file,
                 "checkpoint to inspect (.safetensors, .ckpt, .pt, .pth, .bin) or a diffusers "
                 "folder")
      ->required();
  sub.add_flag("--json", o->json, "machine-readable output");
  sub.add_flag("--tensors", o->tensors, "list every tensor: name, dtype, shape, file offset");
  sub.add_flag("--fingerprint", o->fingerprint,
               "also read the tensors and give each component a SHA-256 that does not depend "
               "on where it sits (tells shared VAEs and text encoders apart; see docs/models.md)");
  sub.add_option("--against", o->against,
                 "FILE is a LoRA: list each of its modules with the tensor of this base model it "
                 "changes, or why it changes none (exit 1 when some change none)");
  sub.add_option("--max-header-size", o->max_header, "refuse headers larger than this many bytes")
      ->default_val(kDefaultMaxHeaderBytes);
  sub.footer(
      "Reads only the header (safetensors) or the pickle (PyTorch files, never executed), so its\n"
      "time does not grow with the file (17.21 ms for a 6.94 GB SDXL file in docs/BENCHMARKS.md).\n"
      "For PyTorch files it also reports where the state dict was found, the other entries,\n"
      "and the `scan` verdict.\n\n"
      "It tells what the file is: the architecture (SD1/SD2 incl. inpaint and pix2pix, SDXL base\n"
      "and refiner, SSD-1B, Segmind Vega, Playground 2.5, SD3/SD3.5, FLUX.1 dev/schnell/Fill/\n"
      "Depth/Canny), standalone parts (UNet/DiT, CLIP-L/G/H, T5-XXL, VAE), LoRAs and their base,\n"
      "with the keys or metadata that decided it; the components (denoiser, text encoders, VAE,\n"
      "EMA copy, training buffers, unknown keys) with sizes and dtypes; and defects such as a\n"
      "missing VAE, a duplicated EMA copy or broken CLIP position_ids.\n\n"
      "Examples:\n"
      "  ckptkit inspect v1-5-pruned-emaonly.safetensors\n"
      "  ckptkit inspect --json --tensors flux1-dev.safetensors | jq '.tensor_list[0]'");
  return [o] {
    std::error_code ec;
    if (std::filesystem::is_directory(o->file, ec)) {
      if (!std::filesystem::exists(std::filesystem::path(o->file) / "model_index.json", ec))
        return report_error(Status(ErrorCode::kInvalidArgument,
                                   "a directory without model_index.json (not a diffusers "
                                   "folder); give a checkpoint file",
                                   o->file));
      auto folder = read_diffusers_folder(o->file);
      if (!folder) return report_error(folder.status());
      if (o->json) {
        JsonWriter w;
        w.begin_object();
        write_diffusers_json(w, *folder);
        w.end_object();
        print_out(w.str());
      } else {
        print_out(diffusers_text(*folder));
      }
      return kExitOk;
    }
    ReadLimits limits;
    limits.safetensors.max_header_bytes = o->max_header;
    auto checked = read_and_scan(o->file, limits);
    if (!checked) return report_error(checked.status());
    const Checkpoint* ck = &checked->checkpoint;
    const std::optional<ScanReport>& scan = checked->scan;
    const ScanReport* sr = scan && scan->error.is_ok() ? &*scan : nullptr;
    std::map<std::string, DTypeStats> by_dtype;
    for (const TensorInfo& t : ck->tensors) {
      DTypeStats& s = by_dtype[std::string(dtype_name(t.dtype))];
      ++s.tensors;
      s.parameters += t.numel();
      s.bytes += t.nbytes();
    }
    // The values of CLIP's position_ids are read too (a few hundred bytes).
    auto file = InputFile::open(o->file);
    const Anatomy anatomy = analyze(*ck, file ? &*file : nullptr);
    std::vector<std::string> fingerprints;
    if (o->fingerprint) {
      auto f = component_fingerprints(o->file, anatomy, limits, ck);
      if (!f) return report_error(f.status());
      fingerprints = std::move(*f);
    }
    std::optional<LoraFile> lora;
    if (anatomy.layout == "lora") lora = read_lora(*ck, file ? &*file : nullptr);
    if (!o->against.empty()) {
      if (!lora)
        return report_error(Status(ErrorCode::kInvalidArgument,
                                   fmt::format("--against lists where a LoRA's modules land; "
                                               "this file is {}, not a LoRA",
                                               anatomy.architecture),
                                   o->file));
      auto base = read_and_scan(o->against, limits);
      if (!base) return report_error(base.status());
      auto base_file = InputFile::open(o->against);
      const Anatomy ba = analyze(base->checkpoint, base_file ? &*base_file : nullptr);
      return print_against(*lora, anatomy, o->against, ba,
                           match_lora(*lora, base->checkpoint, ba), o->json);
    }
    const LoraFile* lp = lora ? &*lora : nullptr;
    return o->json ? print_json(*ck, by_dtype, o->tensors, sr, anatomy, fingerprints, lp)
                   : print_text(*ck, by_dtype, o->tensors, sr, anatomy, fingerprints, lp);
  };
}

Result<InspectFacts> inspect_facts(const std::string& path, bool tensors) {
  auto checked = read_and_scan(path);
  if (!checked) return checked.status();
  InspectFacts f;
  f.checked = std::move(*checked);
  const Checkpoint& ck = f.checked.checkpoint;
  const std::optional<ScanReport>& scan = f.checked.scan;
  std::map<std::string, DTypeStats> by_dtype;
  for (const TensorInfo& t : ck.tensors) {
    DTypeStats& s = by_dtype[std::string(dtype_name(t.dtype))];
    ++s.tensors;
    s.parameters += t.numel();
    s.bytes += t.nbytes();
  }
  auto file = InputFile::open(path);
  f.anatomy = analyze(ck, file ? &*file : nullptr);
  if (f.anatomy.layout == "lora") f.lora = read_lora(ck, file ? &*file : nullptr);
  f.json = render_json(ck, by_dtype, tensors, scan && scan->error.is_ok() ? &*scan : nullptr,
                       f.anatomy, {}, f.lora ? &*f.lora : nullptr);
  return f;
}

Result<std::string> inspect_json(const std::string& path, bool tensors) {
  auto f = inspect_facts(path, tensors);
  if (!f) return f.status();
  return std::move(f->json);
}

}  // namespace ckptkit::cli
