// ckptkit/ops.h — the operations the command line offers, as library calls.
//
// Every op that writes a file streams through the same executor: memory is bounded by
// RunOptions::max_memory whatever the model's size, the output appears atomically (temporary
// file beside the destination, fsync, rename) and is removed on error or SIGINT/SIGTERM, and an
// input is never overwritten.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ckptkit/dtype.h"
#include "ckptkit/safetensors.h"
#include "ckptkit/scan.h"
#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit {

enum class ProgressMode : uint8_t { kAuto, kAlways, kNever };

struct RunOptions {
  unsigned threads = 0;               ///< 0: one per core
  uint64_t max_memory = 64ull << 20;  ///< budget for all I/O buffers together
  ProgressMode progress = ProgressMode::kAuto;
  bool force = false;             ///< replace an existing output file
  bool sync = true;               ///< fsync before the rename (durable output)
  std::string label = "writing";  ///< shown on the progress bar
};

struct RunStats {
  uint64_t tensors = 0;
  uint64_t bytes_written = 0;  ///< size of the output file
  uint64_t bytes_read = 0;     ///< tensor bytes read from inputs
  uint64_t buffer_bytes = 0;   ///< memory the executor allocated for buffers
  unsigned threads = 0;
  double seconds = 0;
};

// --- convert -------------------------------------------------------------------------------

struct ConvertOptions {
  /// Target type for floating-point tensors; nullopt keeps every dtype. Integer and bool
  /// tensors (e.g. CLIP's position_ids) are never cast.
  std::optional<DType> dtype;
  SafetensorsLimits limits;
  RunOptions run;
  /// PyTorch inputs are scanned first (ckptkit/scan.h); a `dangerous` one is refused
  /// (InvalidArgument) unless this is set. Nothing in the file is ever executed either way.
  bool allow_dangerous = false;
  /// The scan verdict of the input when the caller has it already (it is not scanned again).
  std::optional<Verdict> verdict;
};

struct ConvertReport {
  RunStats stats;
  uint64_t tensors_cast = 0;
  uint64_t tensors_copied = 0;
  std::map<std::string, uint64_t> kept_not_float;  ///< dtype name -> count left as they were
  FileFormat format = FileFormat::kSafetensors;    ///< of the input
  // PyTorch inputs:
  uint64_t tensors_materialized = 0;  ///< views gathered into C order or byte-swapped
  uint64_t dropped_values = 0;        ///< non-tensor values inside the state dict
  uint64_t other_entries = 0;         ///< top-level entries besides the state dict (dropped)
  std::string state_dict_key;         ///< where the tensors were found
  std::optional<Verdict> verdict;     ///< the scan verdict
};

Result<ConvertReport> convert_file(const std::string& in_path, const std::string& out_path,
                                   const ConvertOptions& options);

// --- sample --------------------------------------------------------------------------------

struct LayoutSummary {
  std::string name;
  uint64_t tensors = 0;
  uint64_t parameters = 0;
  uint64_t bytes = 0;  ///< data bytes in the layout's own dtypes
  std::string dtypes;  ///< e.g. "F16 (2512), I64 (1)"
};

/// Layouts compiled into the program (from the published tensor tables).
std::vector<LayoutSummary> list_layouts();

struct SampleOptions {
  std::optional<DType> dtype;  ///< cast float tensors to this; nullopt: the layout's own
  uint64_t seed = 0;
  bool sparse = false;  ///< header only; the data section is left as holes
  RunOptions run;
};

Result<RunStats> write_sample(const std::string& layout, const std::string& out_path,
                              const SampleOptions& options);

}  // namespace ckptkit
