// Internal entry points of the PyTorch readers, for callers that hold the file open.
#pragma once

#include "ckptkit/reader.h"
#include "formats/torch/pickle.h"
#include "formats/torch/zip.h"
#include "io/file.h"

namespace ckptkit {

/// Reads a torch.save zip archive (FileFormat::kTorchZip).
Result<Checkpoint> read_torch_zip(const InputFile& file, const ReadLimits& limits);
/// The same, for an archive whose directory the caller has already read from `file`; the
/// data.pkl program is moved to `program` when given (scan reuses it).
Result<Checkpoint> read_torch_zip(const InputFile& file, const zip::Archive& archive,
                                  const ReadLimits& limits, pickle::Program* program = nullptr);

/// Reads a pre-1.6 torch.save stream (FileFormat::kTorchLegacy).
Result<Checkpoint> read_torch_legacy(const InputFile& file, const ReadLimits& limits);

/// Sniffs and dispatches (safetensors, torch-zip, torch-legacy, gguf).
Result<Checkpoint> read_checkpoint(const InputFile& file, const ReadLimits& limits);

/// The `data.pkl` entry of a torch archive (`<root>/data.pkl`, root = one folder), or nullptr.
const zip::Entry* find_data_pkl(const zip::Archive& archive);

/// Runs up to `max_count` pickles that follow one another from offset 0 of `file` (legacy
/// torch.save writes five), reading only as much of the file as they need (at most
/// limits.max_pickle_bytes). Stops after the first that fails; its Program carries the error.
Status run_leading_pickles(const InputFile& file, int max_count, const ReadLimits& limits,
                           std::vector<pickle::Program>& out);

/// The limits of the pickle machine that correspond to `limits`.
pickle::Limits pickle_limits(const ReadLimits& limits);

}  // namespace ckptkit
