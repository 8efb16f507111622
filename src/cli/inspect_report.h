// `inspect --json` as a string, for callers other than the command (the Python module).
#pragma once

#include <string>

#include "ckptkit/status.h"

namespace ckptkit::cli {

/// The document `ckptkit inspect --json [--tensors] FILE` prints, for a checkpoint file.
Result<std::string> inspect_json(const std::string& path, bool tensors);

}  // namespace ckptkit::cli
