// ckptkit/hash.h — the identity hashes users see in web UIs and on Civitai, in one read.
//
//   sha256   SHA-256 of the whole file (hex, 64 digits)
//   autov1   A1111's old "model hash": SHA-256 of the 64 KiB at offset 1 MiB, first 8 digits.
//            A file shorter than 1 MiB + 64 KiB contributes the bytes it has in that window
//            (none when it is shorter than 1 MiB: the SHA-256 of nothing), exactly as A1111
//            reads it
//   autov2   the first 10 digits of sha256 (A1111 / Civitai)
//   autov3   SHA-256 of a safetensors file's data section (from 8 + header length to the end),
//            first 12 digits (Civitai); "n/a" for other files, with the reason. The full digest
//            is kohya's `sshs_model_hash`
//   crc32    CRC-32 (zlib's, as `crc32` and Python's zlib.crc32), 8 digits
//   blake3   BLAKE3, 64 digits (as `b3sum`)
//
// Every requested hash is computed from one sequential read: a reader fills a ring of reused
// buffers and each digest runs on its own thread, so they run side by side.
//
// Thread safety: reentrant.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ckptkit/status.h"

namespace ckptkit {

enum class HashAlgo : uint8_t { kSha256, kAutoV1, kAutoV2, kAutoV3, kCrc32, kBlake3 };

std::string_view hash_algo_name(HashAlgo a);
/// "sha256", "AutoV2", "crc32", … (case-insensitive); nullopt when unknown.
std::optional<HashAlgo> parse_hash_algo(std::string_view name);
/// Every algorithm, in display order.
std::vector<HashAlgo> all_hash_algos();

struct HashValue {
  HashAlgo algo;
  std::string hex;          ///< lower-case hex; empty when not defined for this file
  std::string not_defined;  ///< why hex is empty ("not a safetensors file: …")
};

/// A hash a file's metadata claims, compared with the computed one.
struct EmbeddedHash {
  std::string key;       ///< sshs_model_hash, sshs_legacy_hash, modelspec.hash_sha256
  std::string stored;    ///< as the metadata has it
  std::string computed;  ///< what it should be; empty when it cannot be recomputed
  bool matches = false;
  std::string note;  ///< how it is defined, or why it cannot be recomputed
};

struct FileHashes {
  std::string path;
  uint64_t size = 0;
  std::vector<HashValue> values;  ///< in the order asked
  std::vector<EmbeddedHash> embedded;
  Status error;  ///< not ok: the file could not be read at all (no values)
  double seconds = 0;
};

struct RunMonitor;  // ckptkit/ops.h

struct HashOptions {
  std::vector<HashAlgo> algos = {HashAlgo::kSha256};
  /// Files hashed at once (0: one per core). Each file also uses one thread per digest.
  unsigned parallel_files = 0;
  uint64_t buffer_bytes = 8ull << 20;  ///< each of the ring's 8 buffers
  /// Counts the bytes read; a file whose read is cancelled gets error kCancelled. Not owned.
  RunMonitor* monitor = nullptr;
};

/// Hashes one file. Always returns; FileHashes::error says when it could not be read.
FileHashes hash_file(const std::string& path, const HashOptions& options);

/// Hashes several files, up to `parallel_files` at once; results in the order given.
std::vector<FileHashes> hash_files(const std::vector<std::string>& paths,
                                   const HashOptions& options);

/// Checks the identity hashes in `metadata` against computed values of the same file
/// (`data_sha256`: SHA-256 of the data section; `file_sha256` of the whole file; `legacy`:
/// the 8-digit legacy hash of the file as kohya would have written it, empty if unknown).
std::vector<EmbeddedHash> check_embedded_hashes(const std::map<std::string, std::string>& metadata,
                                                const std::string& data_sha256,
                                                const std::string& file_sha256,
                                                const std::string& legacy);

}  // namespace ckptkit
