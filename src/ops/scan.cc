// scan: every pickle in a file interpreted passively, every global judged. See ckptkit/scan.h.
#include "ckptkit/scan.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <set>

#include "formats/safetensors/internal.h"
#include "formats/sniff.h"
#include "formats/torch/reader.h"
#include "io/errors.h"
#include "io/source.h"

namespace ckptkit {
namespace {

using pickle::GlobalCategory;

constexpr int kMaxNesting = 3;                   ///< pickles inside pickles followed
constexpr uint64_t kStoragePeek = 8;             ///< bytes sniffed of each data/<key> entry
constexpr uint64_t kMaxEntryScan = 64ull << 20;  ///< a non-storage entry scanned whole up to this

std::string_view category_name(GlobalCategory c) {
  switch (c) {
    case GlobalCategory::kAllowed:
      return "allowed";
    case GlobalCategory::kUnknown:
      return "unknown";
    case GlobalCategory::kDangerous:
      return "dangerous";
  }
  return "unknown";
}

std::string_view origin_name(pickle::GlobalOrigin o) {
  switch (o) {
    case pickle::GlobalOrigin::kTorch:
      return "torch";
    case pickle::GlobalOrigin::kStdlib:
      return "stdlib";
    case pickle::GlobalOrigin::kThirdParty:
      return "third_party";
  }
  return "third_party";
}

std::string_view opcode_label(pickle::GlobalOpcode op) {
  switch (op) {
    case pickle::GlobalOpcode::kGlobal:
      return "GLOBAL";
    case pickle::GlobalOpcode::kStackGlobal:
      return "STACK_GLOBAL";
    case pickle::GlobalOpcode::kInst:
      return "INST";
    case pickle::GlobalOpcode::kObj:
      return "OBJ";
    case pickle::GlobalOpcode::kExt:
      return "EXT";
  }
  return "GLOBAL";
}

/// Does this look like the start of a binary pickle (PROTO 2..5)?
bool looks_like_pickle(std::span<const uint8_t> b) {
  return b.size() >= 3 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5;
}

/// A str whose code points are all < 256, as latin-1 bytes (how protocol 2 smuggles bytes:
/// _codecs.encode(str, 'latin1')). Empty when it is not one.
std::string latin1_of(const std::string& utf8) {
  std::string out;
  for (size_t i = 0; i < utf8.size();) {
    const auto c = static_cast<uint8_t>(utf8[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < utf8.size() && c <= 0xC3) {
      out += static_cast<char>(((c & 0x1F) << 6) | (static_cast<uint8_t>(utf8[i + 1]) & 0x3F));
      i += 2;
    } else {
      return {};
    }
  }
  return out;
}

class Scanner {
 public:
  Scanner(ScanReport& r, const ReadLimits& limits) : r_(r), limits_(limits) {}

  /// Records the globals of one program and looks inside its byte strings for more pickles.
  void take(const pickle::Program& p, const std::string& entry, bool nested, bool compressed,
            int depth) {
    for (const pickle::Global& g : p.globals) {
      ScanGlobal s;
      s.module = g.module;
      s.name = g.name;
      s.offset = g.offset;
      s.entry = entry;
      s.opcode = opcode_label(g.opcode);
      s.category = category_name(g.klass.category);
      s.reason = g.klass.reason;
      s.origin = origin_name(pickle::global_origin(g.module));
      s.called = g.called;
      s.nested = nested;
      s.compressed = compressed;
      r_.globals.push_back(std::move(s));
    }
    if (depth >= kMaxNesting) return;
    for (const pickle::Node& n : p.nodes) {
      if (n.kind != pickle::Kind::kBytes && n.kind != pickle::Kind::kString) continue;
      std::string bytes = n.kind == pickle::Kind::kString ? latin1_of(n.s) : n.s;
      auto span = std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      if (!looks_like_pickle(span)) continue;
      pickle::Program inner = pickle::run(span, n.offset, pickle_limits(limits_));
      if (inner.globals.empty() && !inner.status.is_ok()) continue;  // just data
      finding("nested_pickle", n.offset, entry,
              fmt::format("a byte string holds another pickle ({} bytes{}): a loader that "
                          "unpickles it would run whatever it names",
                          bytes.size(), inner.globals.empty() ? "" : ", its globals are listed"));
      // Offsets inside a nested pickle point at the string that holds it.
      for (pickle::Global& g : inner.globals) g.offset = n.offset;
      take(inner, entry, true, compressed, depth + 1);
    }
  }

  void malformed(const pickle::Program& p, const std::string& entry) {
    finding("malformed_pickle", p.status.offset() == kNoOffset ? p.begin : p.status.offset(), entry,
            fmt::format("the pickle is malformed ({}); torch.load would stop there, after "
                        "importing what came before",
                        p.status.message()));
  }

  /// Bytes after a zip entry's pickle's STOP: torch.load (and pickle.load) stop reading there,
  /// a loader that reads on would see more.
  void after_stop(const pickle::Program& p, const zip::Entry& e) {
    if (!p.status.is_ok()) return;
    const uint64_t base = e.method == zip::kMethodStored ? e.data_offset : 0;
    const uint64_t used = p.end - base;
    if (used >= e.uncompressed_size) return;
    finding("data_after_stop", p.end, e.name,
            fmt::format("entry '{}' has {} bytes after its pickle's STOP opcode; torch.load "
                        "stops at STOP, but these bytes could hold another pickle for a "
                        "loader that reads on",
                        e.name, e.uncompressed_size - used));
  }

  void finding(std::string kind, uint64_t offset, std::string entry, std::string message) {
    r_.findings.push_back({std::move(kind), offset, std::move(entry), std::move(message)});
  }

 private:
  ScanReport& r_;
  const ReadLimits& limits_;
};

/// `main`, when given, is data.pkl already run by the reader (not run again).
void scan_zip(const InputFile& file, const zip::Archive* archive, const pickle::Program* main,
              const ReadLimits& limits, ScanReport& r) {
  FileSource src(file);
  r.format = "torch-zip";
  Scanner sc(r, limits);
  for (const zip::Finding& f : archive->findings)
    sc.finding(std::string(zip::finding_id(f.kind)), f.offset, f.entry, f.message);
  const zip::Entry* pkl = find_data_pkl(*archive);
  if (!pkl)
    sc.finding("no_data_pkl", archive->central_directory_offset, "",
               "a zip archive without '<folder>/data.pkl': not a PyTorch checkpoint");
  // torch.load hands an archive with a constants.pkl record to torch.jit.load, which runs its
  // TorchScript code; before PyTorch 2.6 even with weights_only=True (CVE-2025-32434).
  for (const zip::Entry& e : archive->entries) {
    const size_t slash = e.name.find('/');
    const std::string_view record =
        slash == std::string::npos ? std::string_view(e.name)
                                   : std::string_view(e.name).substr(slash + 1);
    if (record != "constants.pkl") continue;
    sc.finding("torchscript_archive", e.local_header_offset, e.name,
               "a TorchScript archive (it has constants.pkl): torch.load passes it to "
               "torch.jit.load, which runs the TorchScript code in it, even with "
               "weights_only=True before PyTorch 2.6 (CVE-2025-32434)");
    break;
  }
  zip::Limits zl;
  zl.max_inflated_entry = limits.max_pickle_bytes;
  zl.check_crc = false;  // torch.load does not check CRCs: read what it reads, report below
  for (const zip::Entry& e : archive->entries) {
    const bool is_main = &e == pkl;
    const bool named_pkl = e.name.size() >= 4 && e.name.compare(e.name.size() - 4, 4, ".pkl") == 0;
    const bool storage = !is_main && e.name.find("/data/") != std::string::npos;
    if (is_main && main) {
      sc.take(*main, e.name, false, e.method != zip::kMethodStored, 0);
      if (!main->status.is_ok()) sc.malformed(*main, e.name);
      sc.after_stop(*main, e);
      continue;
    }
    // Storage entries are tensor bytes: only their start is sniffed; a pickle hidden there is
    // parsed from that prefix (a real one is far smaller than tensor data).
    // The reader usually saw a stored entry's first bytes with its local header.
    std::vector<uint8_t> head;
    if (e.method == zip::kMethodStored &&
        e.head_size == std::min<uint64_t>(kStoragePeek, e.compressed_size)) {
      head.assign(e.head.begin(), e.head.begin() + e.head_size);
    } else {
      auto read = zip::read_entry_prefix(src, e, kStoragePeek);
      if (!read) {
        sc.finding("unreadable_entry", e.local_header_offset, e.name, read.status().message());
        continue;
      }
      head = std::move(*read);
    }
    if (!is_main && !named_pkl && !looks_like_pickle(head)) continue;
    std::vector<uint8_t> bytes;
    if (storage) {
      auto more =
          zip::read_entry_prefix(src, e, std::min<uint64_t>(e.uncompressed_size, kMaxEntryScan));
      if (!more) continue;
      bytes = std::move(*more);
    } else {
      zip::Limits el = zl;
      if (!is_main) el.max_inflated_entry = std::min(zl.max_inflated_entry, kMaxEntryScan);
      auto all = zip::read_entry(src, e, el);
      if (!all) {
        sc.finding("unreadable_entry", e.local_header_offset, e.name, all.status().message());
        continue;
      }
      bytes = std::move(*all);
      if (!zip::crc_matches(e, bytes))
        sc.finding("crc_mismatch", e.data_offset, e.name,
                   fmt::format("entry '{}' does not match the CRC-32 its central directory record "
                               "states; torch.load does not check CRCs and reads it anyway, so it "
                               "was scanned as it is",
                               e.name));
    }
    const bool compressed = e.method != zip::kMethodStored;
    const uint64_t base = compressed ? 0 : e.data_offset;
    pickle::Program p = pickle::run(bytes, base, pickle_limits(limits));
    if (storage && !p.status.is_ok() && p.globals.empty()) continue;  // tensor bytes after all
    if (!is_main)
      sc.finding("extra_pickle", e.data_offset, e.name,
                 fmt::format("entry '{}' is a pickle besides data.pkl; torch.load does not read "
                             "it, but another loader might",
                             e.name));
    sc.take(p, e.name, false, compressed, 0);
    if (!p.status.is_ok()) sc.malformed(p, e.name);
    if (!storage) sc.after_stop(p, e);
  }
}

void scan_pickle_stream(const InputFile& file, const ReadLimits& limits, ScanReport& r) {
  std::vector<pickle::Program> progs;
  // A legacy torch.save stream has five pickles; a bare pickle file one (pickle.load reads one).
  if (Status s = run_leading_pickles(file, 5, limits, progs); !s.is_ok()) {
    r.error = s;
    return;
  }
  Scanner sc(r, limits);
  bool legacy = false;
  if (!progs.empty() && progs[0].status.is_ok()) {
    const pickle::Node& n = progs[0].node(progs[0].root);
    legacy = n.kind == pickle::Kind::kBigInt;  // the magic number; checked strictly by the reader
  }
  r.format = legacy ? "torch-legacy" : "pickle";
  const size_t count = legacy ? progs.size() : std::min<size_t>(1, progs.size());
  for (size_t i = 0; i < count; ++i) {
    sc.take(progs[i], "", false, false, 0);
    if (!progs[i].status.is_ok()) sc.malformed(progs[i], "");
  }
}

std::string join_names(const std::vector<ScanGlobal>& gs, std::string_view category, size_t max,
                       std::string_view origin = {}) {
  std::set<std::string> names;
  for (const ScanGlobal& g : gs)
    if (g.category == category && (origin.empty() || g.origin == origin))
      names.insert(g.module + "." + g.name);
  std::string out;
  size_t n = 0;
  for (const std::string& s : names) {
    if (n++ == max) {
      out += fmt::format(" and {} more", names.size() - max);
      break;
    }
    out += (out.empty() ? "" : ", ") + s;
  }
  return out;
}

void judge(ScanReport& r) {
  bool dangerous = false, unknown = false, torchscript = false;
  for (const ScanGlobal& g : r.globals) {
    dangerous |= g.category == "dangerous";
    unknown |= g.category == "unknown";
  }
  for (const ScanFinding& f : r.findings) torchscript |= f.kind == "torchscript_archive";
  if (torchscript) {
    r.verdict = Verdict::kDangerous;
    r.summary =
        "Loading this file with torch.load would run code: it is a TorchScript archive, which "
        "torch.load hands to torch.jit.load (even with weights_only=True before PyTorch 2.6, "
        "CVE-2025-32434). Do not open it in Python.";
    if (dangerous)
      r.summary += fmt::format(" Its pickles also call {}.", join_names(r.globals, "dangerous", 4));
  } else if (dangerous) {
    r.verdict = Verdict::kDangerous;
    r.summary = fmt::format(
        "Loading this file with torch.load (as ComfyUI, A1111/Forge and diffusers do for .ckpt "
        "files) would run code: it calls {}. Do not open it in Python. `ckptkit convert "
        "--allow-dangerous` can still take out its tensors without running anything.",
        join_names(r.globals, "dangerous", 4));
  } else if (unknown || !r.findings.empty()) {
    r.verdict = Verdict::kSuspicious;
    std::string why;
    if (unknown) {
      // Named by origin: a third-party class is what training checkpoints normally carry; the
      // PyTorch and standard-library names left here are benign constructors or names the
      // pickle only refers to (anything of theirs it calls is dangerous).
      std::vector<std::string> parts;
      const std::pair<std::string_view, std::string_view> origins[] = {
          {"third_party", "from third-party packages"},
          {"torch", "from inside PyTorch, outside torch.load's allowlist"},
          {"stdlib", "from the standard library"}};
      for (const auto& [origin, words] : origins) {
        std::string names = join_names(r.globals, "unknown", 4, origin);
        if (!names.empty()) parts.push_back(fmt::format("{} ({})", words, names));
      }
      std::string list;
      for (size_t i = 0; i < parts.size(); ++i)
        list += (i == 0 ? "" : i + 1 == parts.size() ? " and " : ", ") + parts[i];
      const bool third_party = std::any_of(r.globals.begin(), r.globals.end(), [](const auto& g) {
        return g.category == "unknown" && g.origin == "third_party";
      });
      why = fmt::format(
          "loading it with torch.load would import code {}. {}nothing known to be harmful "
          "was found, but imported code could do anything.",
          list,
          third_party ? "That is normal for training checkpoints (Lightning callbacks, config "
                        "objects) and "
                      : "Those are data classes or names the pickle does not call, and ");
    }
    if (!r.findings.empty())
      why += fmt::format(
          "{}the file has {} structural oddit{} (listed) that loaders may read "
          "differently.",
          why.empty() ? "" : " Also, ", r.findings.size(), r.findings.size() == 1 ? "y" : "ies");
    r.summary = "Not known to be harmful, but not plain data: " + why +
                " Converting it to .safetensors with ckptkit keeps only the tensors.";
  } else {
    r.verdict = Verdict::kSafe;
    r.summary = r.format == "safetensors"
                    ? "A safetensors file holds only data: loading it cannot run code."
                    : "Only tensors and plain containers: loading this file does not run code.";
  }
}

}  // namespace

std::string_view verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kSafe:
      return "safe";
    case Verdict::kSuspicious:
      return "suspicious";
    case Verdict::kDangerous:
      return "dangerous";
  }
  return "unknown";
}

namespace {

/// Scans an open file; `archive`, when given, is its already-read zip directory.
void scan_open(const InputFile& file, const zip::Archive* archive, const pickle::Program* main,
               const ReadLimits& limits, ScanReport& r) {
  auto kind = sniff_file(file);
  if (!kind) {
    r.error = kind.status();
    return;
  }
  switch (*kind) {
    case Sniffed::kTorchZip: {
      std::optional<zip::Archive> own;
      if (!archive) {
        auto a = zip::read_archive(FileSource(file));
        if (!a) {
          r.error = a.status();
          return;
        }
        own = std::move(*a);
        archive = &*own;
      }
      scan_zip(file, archive, main, limits, r);
      break;
    }
    case Sniffed::kPickle:
      scan_pickle_stream(file, limits, r);
      break;
    case Sniffed::kGguf: {
      // Typed values and tensor blocks: nothing in a GGUF file can run when it is loaded.
      auto ck = read_checkpoint(file, limits);
      if (!ck) {
        r.error = ck.status();
        return;
      }
      r.format = "gguf";
      break;
    }
    default: {
      auto ck = read_safetensors(file, limits.safetensors);
      if (!ck) {
        r.error = ck.status();
        return;
      }
      r.format = "safetensors";
    }
  }
  if (r.error.is_ok()) judge(r);
}

}  // namespace

ScanReport scan_file(const std::string& path, const ReadLimits& limits) {
  ScanReport r;
  r.path = path;
  auto file = InputFile::open(path);
  if (!file) {
    r.error = file.status();
    return r;
  }
  scan_open(*file, nullptr, nullptr, limits, r);
  return r;
}

Result<CheckedCheckpoint> read_and_scan(const std::string& path, const ReadLimits& limits) {
  CKPT_ASSIGN_OR_RETURN(InputFile file, InputFile::open(path));
  CheckedCheckpoint out;
  CKPT_ASSIGN_OR_RETURN(Sniffed kind, sniff_file(file));
  if (kind == Sniffed::kTorchZip) {
    // One read of the zip directory serves both.
    CKPT_ASSIGN_OR_RETURN(zip::Archive archive, zip::read_archive(FileSource(file)));
    pickle::Program program;
    CKPT_ASSIGN_OR_RETURN(out.checkpoint, read_torch_zip(file, archive, limits, &program));
    out.scan.emplace();
    out.scan->path = path;
    scan_open(file, &archive, &program, limits, *out.scan);
    return out;
  }
  CKPT_ASSIGN_OR_RETURN(out.checkpoint, read_checkpoint(file, limits));
  if (out.checkpoint.format == FileFormat::kTorchLegacy) {
    out.scan.emplace();
    out.scan->path = path;
    scan_open(file, nullptr, nullptr, limits, *out.scan);
  }
  return out;
}

}  // namespace ckptkit
