// `ckptkit library index`: walks folders and records what `inspect` knows of every model file
// in the library database (store.h), then its identity hashes.
//
// Two phases over a small worker pool (the header phase reads only headers; the hash phase reads
// whole files), with the writes done by the calling thread in transactions of a batch each, so
// an interrupted run keeps every committed batch. A file whose (device, inode, size, mtime) is
// unchanged is not read again; a file that moved keeps its row (and its hashes); rows of files
// no longer found under an indexed folder are removed.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "ckptkit/ops.h"
#include "ckptkit/status.h"

namespace ckptkit::library {

struct IndexOptions {
  std::string db_path;
  bool deep = false;     ///< component fingerprints (reads the tensors)
  bool hashes = true;    ///< SHA-256, AutoV2, AutoV3, BLAKE3 of each file
  unsigned threads = 2;  ///< workers of each phase
  ProgressMode progress = ProgressMode::kAuto;
  /// Set (by a signal handler) to stop after the batch in progress.
  const std::atomic<bool>* cancel = nullptr;
};

struct IndexStats {
  uint64_t found = 0;      ///< model files and folders under the folders
  uint64_t read = 0;       ///< new or changed: headers read
  uint64_t unchanged = 0;  ///< skipped
  uint64_t moved = 0;      ///< same file, new path
  uint64_t removed = 0;    ///< rows of files that are gone
  uint64_t hashed = 0;
  uint64_t errors = 0;                   ///< files recorded with an error
  std::vector<std::string> error_lines;  ///< "path: why", for stderr
  bool cancelled = false;
  double header_seconds = 0, hash_seconds = 0;
};

/// Indexes `roots` into options.db_path. An error only when nothing could be done (the database
/// cannot be opened, no folder exists); per-file problems are in the stats and the rows.
Result<IndexStats> index_folders(const std::vector<std::string>& roots,
                                 const IndexOptions& options);

/// True for the file names the indexer records (.safetensors, .ckpt, .pt, .pth, .bin, .gguf, .sft).
bool is_model_file_name(std::string_view name);

}  // namespace ckptkit::library
