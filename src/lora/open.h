// Internal: a LoRA file opened for an op that rewrites it (convert, resize).
#pragma once

#include <memory>
#include <string>

#include "ckptkit/anatomy.h"
#include "ckptkit/lora.h"
#include "ops/input.h"

namespace ckptkit::detail {

struct OpenedLora {
  std::unique_ptr<OpenedInput> input;
  Anatomy anatomy;
  LoraFile lora;
};

/// Opens `path` (outputs go beside `out_path`), refusing a file that is not a LoRA or whose
/// modules are inconsistent (InvalidArgument, naming the first problem).
Result<OpenedLora> open_lora(const std::string& path, const std::string& out_path,
                             const OpenOptions& options);

}  // namespace ckptkit::detail
