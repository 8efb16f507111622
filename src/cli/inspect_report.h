// `inspect --json` as a string, for callers other than the command (the Python module).
#pragma once

#include <optional>
#include <string>

#include "ckptkit/anatomy.h"
#include "ckptkit/lora.h"
#include "ckptkit/scan.h"
#include "ckptkit/status.h"

namespace ckptkit::cli {

/// The document `ckptkit inspect --json [--tensors] FILE` prints, for a checkpoint file.
Result<std::string> inspect_json(const std::string& path, bool tensors);

/// What `inspect` knows of a checkpoint file, as structures and as the `--json` document: the
/// model library (src/library/) records these, so its index cannot disagree with `inspect`.
struct InspectFacts {
  CheckedCheckpoint checked;
  Anatomy anatomy;
  std::optional<LoraFile> lora;
  std::string json;  ///< exactly what `ckptkit inspect --json FILE` prints
};
Result<InspectFacts> inspect_facts(const std::string& path, bool tensors = false);

}  // namespace ckptkit::cli
