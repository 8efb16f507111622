// `ckptkit hash FILE... [--algo LIST] [--json]` — identity hashes in one read per file.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "ckptkit/hash.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "io/errors.h"

namespace ckptkit::cli {
namespace {

Result<std::vector<HashAlgo>> parse_algos(const std::string& list) {
  std::vector<HashAlgo> out;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t comma = list.find(',', at);
    const std::string name =
        list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    at = comma == std::string::npos ? list.size() + 1 : comma + 1;
    if (name.empty()) continue;
    if (name == "all") {
      for (HashAlgo a : all_hash_algos())
        if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
      continue;
    }
    auto a = parse_hash_algo(name);
    if (!a)
      return error(ErrorCode::kInvalidArgument,
                   "unknown hash '{}' (choose from sha256, autov1, autov2, autov3, crc32, "
                   "blake3, all)",
                   name);
    if (std::find(out.begin(), out.end(), *a) == out.end()) out.push_back(*a);
  }
  if (out.empty()) return error(ErrorCode::kInvalidArgument, "--algo names no hash");
  return out;
}

}  // namespace

Runner setup_hash(CLI::App& sub) {
  struct Opts {
    std::vector<std::string> files;
    std::string algo = "sha256";
    bool json = false;
    unsigned jobs = 0;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("FILE", o->files, "files to hash (any file; model files get more)")->required();
  sub.add_option("-a,--algo", o->algo,
                 "comma-separated: sha256, autov1, autov2, autov3, crc32, blake3, or all")
      ->default_str("sha256");
  sub.add_flag("--json", o->json, "machine-readable output");
  sub.add_option("-j,--jobs", o->jobs, "files hashed at once (default: one per core)");
  sub.footer(
      "Every requested hash comes from one read of the file; the digests run side by side.\n"
      "  sha256  the whole file             autov1  A1111's old hash: SHA-256 of the 64 KiB\n"
      "  autov2  sha256's first 10 digits           at 1 MiB (8 digits; a shorter file gives\n"
      "  autov3  SHA-256 of a safetensors           what it has of that window)\n"
      "          data section, 12 digits   crc32   zlib's CRC-32      blake3  as b3sum\n"
      "Hashes a file's metadata claims (sshs_model_hash, sshs_legacy_hash,\n"
      "modelspec.hash_sha256) are checked against the file; a mismatch exits 1.\n"
      "One algorithm prints `HASH  FILE` lines like sha256sum; several print a block per file.\n\n"
      "Examples:\n"
      "  ckptkit hash model.safetensors\n"
      "  ckptkit hash --algo autov2,autov3 ComfyUI/models/checkpoints/*.safetensors\n"
      "  ckptkit hash --algo all --json model.safetensors");
  return [o] {
    auto algos = parse_algos(o->algo);
    if (!algos) return report_error(algos.status());
    HashOptions options;
    options.algos = *algos;
    options.parallel_files = o->jobs;
    if (Capture* c = current_capture()) options.monitor = c->monitor;
    const std::vector<FileHashes> results = hash_files(o->files, options);
    int rc = kExitOk;
    for (const FileHashes& r : results) {
      if (!r.error.is_ok()) rc = kExitError;
      for (const EmbeddedHash& e : r.embedded)
        if (!e.matches && !e.computed.empty() && rc == kExitOk) rc = kExitProblems;
    }
    if (o->json) {
      JsonWriter w;
      w.begin_array();
      for (const FileHashes& r : results) {
        w.begin_object();
        w.key("path").value(r.path);
        if (!r.error.is_ok()) {
          w.key("error").value(r.error.to_string());
          w.end_object();
          continue;
        }
        w.key("size").value(r.size);
        w.key("hashes").begin_object();
        for (const HashValue& v : r.values) {
          w.key(hash_algo_name(v.algo));
          if (v.hex.empty())
            w.null();
          else
            w.value(v.hex);
        }
        w.end_object();
        w.key("not_defined").begin_object();
        for (const HashValue& v : r.values)
          if (v.hex.empty()) w.key(hash_algo_name(v.algo)).value(v.not_defined);
        w.end_object();
        w.key("embedded").begin_array();
        for (const EmbeddedHash& e : r.embedded) {
          w.begin_object();
          w.key("key").value(e.key);
          w.key("stored").value(e.stored);
          w.key("computed");
          if (e.computed.empty())
            w.null();
          else
            w.value(e.computed);
          w.key("matches").value(e.matches);
          w.key("note").value(e.note);
          w.end_object();
        }
        w.end_array();
        w.end_object();
      }
      w.end_array();
      print_out(w.str());
      return rc;
    }
    std::string out;
    for (const FileHashes& r : results) {
      if (!r.error.is_ok()) {
        std::fprintf(stderr, "ckptkit: error: %s\n", r.error.to_string().c_str());
        continue;
      }
      if (algos->size() == 1) {
        const HashValue& v = r.values[0];
        if (v.hex.empty()) {
          std::fprintf(stderr, "ckptkit: %s: %s is not defined: %s\n", r.path.c_str(),
                       std::string(hash_algo_name(v.algo)).c_str(), v.not_defined.c_str());
          out += fmt::format("n/a  {}\n", r.path);
        } else {
          out += fmt::format("{}  {}\n", v.hex, r.path);
        }
      } else {
        out += r.path + "\n";
        for (const HashValue& v : r.values)
          out += fmt::format("  {:<8}{}\n", hash_algo_name(v.algo),
                             v.hex.empty() ? "n/a (" + v.not_defined + ")" : v.hex);
      }
      for (const EmbeddedHash& e : r.embedded) {
        if (e.matches)
          out += fmt::format("  {} matches ({})\n", e.key, e.stored);
        else if (e.computed.empty())
          out += fmt::format("  {} {} cannot be checked: {}\n", e.key, e.stored, e.note);
        else
          out += fmt::format("  {} MISMATCH: the metadata says {}, the file gives {} ({})\n", e.key,
                             e.stored, e.computed, e.note);
      }
    }
    print_out(out);
    return rc;
  };
}

}  // namespace ckptkit::cli
