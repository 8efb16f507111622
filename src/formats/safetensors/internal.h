// Reader entry point for a file the caller already holds open (so the header and the data are
// read from the same inode even if the path is replaced meanwhile).
#pragma once

#include "ckptkit/safetensors.h"
#include "io/file.h"

namespace ckptkit {

Result<Checkpoint> read_safetensors(const InputFile& file, const SafetensorsLimits& limits);

}  // namespace ckptkit
