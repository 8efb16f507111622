// Reads of the library database shared by the `library` commands and the web API, so the page,
// its JSON twin and `--json` say the same thing. Every function returns a JSON document (the
// shapes are in docs/library.md) or, for the command's text output, the rows.
//
// Strings from files (paths, titles, metadata) are written JSON-escaped and nothing else: a
// consumer that puts them into HTML must escape them (the page uses textContent).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptkit/status.h"
#include "library/store.h"

namespace ckptkit::cli {
class JsonWriter;
}

namespace ckptkit::library {

struct ModelFilter {
  std::string kind, architecture, format, family, search;
  bool unsafe = false;   ///< scan verdict other than safe
  bool defects = false;  ///< at least one defect
  bool errors = false;   ///< only files that could not be read
  std::string sort =
      "path";  ///< path, size, kind, architecture, format, parameters, verdict, defects
  bool descending = false;
  uint64_t limit = 0;  ///< 0: all
  uint64_t offset = 0;
};

struct ModelRow {
  int64_t id = 0;
  std::string path, format, kind, architecture, family, variant, verdict, title, trigger_words,
      lora_base, sha256, autov2, error;
  uint64_t size = 0, parameters = 0, defects = 0;
};

Result<std::vector<ModelRow>> list_models(const Db& db, const ModelFilter& f,
                                          uint64_t* total = nullptr);
std::string models_json(const std::vector<ModelRow>& rows, uint64_t total);
/// One row as the object `models_json` lists.
void write_model_row(cli::JsonWriter& w, const ModelRow& r);

/// The row whose path is `path` (absolute, or resolved against the working directory).
Result<std::optional<int64_t>> find_model(const Db& db, const std::string& path);
/// Everything about one model: its row, components, hashes and the inspect report. nullopt: no
/// such id.
Result<std::optional<std::string>> model_json(const Db& db, int64_t id);

struct DupeGroup {
  std::string key;                                       ///< sha256 or component fingerprint
  std::string what;                                      ///< "file", or the component's role/part
  uint64_t bytes = 0;                                    ///< of one copy
  uint64_t saved = 0;                                    ///< what keeping one copy would save
  std::vector<std::pair<int64_t, std::string>> members;  ///< id, path (+ " [prefix]")
};
struct Dupes {
  std::vector<DupeGroup> files, components;
  bool deep = false;  ///< some rows have component fingerprints
};
Result<Dupes> find_dupes(const Db& db);
std::string dupes_json(const Dupes& d);

/// Counts and bytes by family and by kind, and totals.
Result<std::string> stats_json(const Db& db);

/// The family a LoRA must have been trained on to fit a model of this family / architecture
/// ("sd1", "sd2", "sdxl", "sdxl-refiner", "sd3", "flux"; "" when none applies).
std::string base_family(std::string_view family, std::string_view architecture);
/// LoRAs in the index whose base fits `family`.
Result<std::vector<ModelRow>> loras_for(const Db& db, const std::string& family);

}  // namespace ckptkit::library
