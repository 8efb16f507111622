// Internal entry point of the GGUF reader for callers that hold the file open (read_checkpoint)
// or bytes in memory. The format and the checks are described in include/ckptkit/gguf.h.
#pragma once

#include "ckptkit/gguf.h"
#include "io/source.h"

namespace ckptkit {

/// Reads the header from `source` (only the header bytes are read). Errors carry
/// source.path().
Result<Checkpoint> read_gguf(const ByteSource& source, const GgufLimits& limits);

}  // namespace ckptkit
