// ckptkit/verify.h — is this file intact and sound?
//
// verify_file runs, on one file:
//   1. the readers (every structural rule; a truncated or corrupt file is a finding, not a
//      crash), and for PyTorch files the `scan` verdict;
//   2. a lint of what parsers disagree on: whitespace around the header JSON, a header near the
//      size cap, data not in the reference order, a file that is also a ZIP archive (a polyglot);
//   3. the anatomy defects (ckptkit/anatomy.h): missing parts, broken position_ids, …;
//   4. a value pass over every floating-point tensor, streamed in bounded memory: NaN and Inf
//      counts, all-zero tensors, magnitudes far outside what trained weights hold.
//
// Thread safety: reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckptkit/reader.h"
#include "ckptkit/status.h"

namespace ckptkit {

struct VerifyFinding {
  std::string code;      ///< stable id: nan, inf, all-zero, magnitude, corrupt, not-a-model, …
  std::string severity;  ///< error, warning (both make verify fail), info
  std::string message;
  std::string tensor;            ///< the tensor concerned, or ""
  uint64_t offset = UINT64_MAX;  ///< a byte offset in the file, when one applies
};

struct VerifyReport {
  std::string path;
  std::string format;        ///< safetensors, torch-zip, torch-legacy, or what it is not
  std::string architecture;  ///< from the anatomy, "" when unreadable
  std::vector<VerifyFinding> findings;
  uint64_t tensors_checked = 0;  ///< tensors whose values were read
  uint64_t values_checked = 0;
  uint64_t bytes_read = 0;
  double seconds = 0;
  Status error;  ///< not ok: the file could not be opened at all (exit 2)

  /// An error or warning was found.
  bool problems() const;
};

struct RunMonitor;  // ckptkit/ops.h

struct VerifyOptions {
  ReadLimits limits;
  unsigned threads = 0;                ///< 0: one per core
  uint64_t buffer_bytes = 8ull << 20;  ///< per thread, twice
  bool values = true;                  ///< false: skip the value pass (structure only)
  /// A finite |value| above this in a weight is reported as far outside the usual range
  /// (trained diffusion, text-encoder and VAE weights stay well below 1e3).
  double max_abs = 1e4;
  /// Counts the value pass's bytes; once cancelled, the pass stops (the report is then
  /// incomplete: the caller that cancelled discards it). Not owned.
  RunMonitor* monitor = nullptr;
};

VerifyReport verify_file(const std::string& path, const VerifyOptions& options = {});

}  // namespace ckptkit
