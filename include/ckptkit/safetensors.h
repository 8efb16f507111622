// ckptkit/safetensors.h — the safetensors format: strict reader and reference-order writer.
//
// Byte layout of a safetensors file:
//
//   offset 0      u64 little-endian N: the length of the header in bytes
//   offset 8      N bytes of UTF-8 JSON, one object:
//                   {"__metadata__": {"key": "value", ...},          (optional, strings only)
//                    "tensor.name": {"dtype": "F16", "shape": [320, 4, 3, 3],
//                                    "data_offsets": [BEGIN, END]}, ...}
//                 writers pad it with spaces to a multiple of 8 bytes
//   offset 8+N    the data section: every tensor's bytes, little-endian, C order, at
//                 [8+N+BEGIN, 8+N+END). The ranges tile the section exactly: the first begins at
//                 0, each begins where the previous ends, the last ends at the end of the file.
//
// The reader checks, in this order, and stops at the first violation with a Corrupt (or
// LimitExceeded / Unsupported) status naming the byte offset and the tensor:
//   length prefix present; N within the limit and the file; UTF-8; a JSON object; no duplicate
//   keys; `__metadata__` maps strings to strings; each entry has a known dtype, a shape of
//   non-negative integers whose element and byte counts do not overflow 64 bits, and two
//   data_offsets whose span equals the byte count; the spans tile the data section (no gap,
//   overlap, truncation, or bytes after the last tensor).
// Files that are not safetensors at all (an HTML error page, a Git LFS pointer, a PyTorch zip,
// a pickle, GGUF) are named as such.
//
// Thread safety: all functions are reentrant.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit {

/// The reference implementation's cap; a header larger than this is refused unless raised.
inline constexpr uint64_t kDefaultMaxHeaderBytes = 100'000'000;

struct SafetensorsLimits {
  uint64_t max_header_bytes = kDefaultMaxHeaderBytes;
};

/// Reads and validates the header of a file. Reads only the first 8 + N bytes.
Result<Checkpoint> read_safetensors(const std::string& path,
                                    const SafetensorsLimits& limits = {});

/// Validates a whole file held in memory (tests, fuzzing). `path` only labels errors.
Result<Checkpoint> parse_safetensors(std::span<const uint8_t> file_bytes,
                                     const SafetensorsLimits& limits = {},
                                     const std::string& path = {});

/// One tensor as the writer lays it out.
struct TensorLayout {
  std::string name;
  DType dtype;
  Shape shape;
};

/// The reference writer's order: dtype rank descending (8-byte types first), then name.
bool precedes_in_writer_order(DType a_dtype, std::string_view a_name, DType b_dtype,
                              std::string_view b_name);

/// Sorts tensors into the reference writer's order (stable).
void sort_for_writer(std::vector<TensorLayout>& tensors);

struct SafetensorsHeader {
  std::vector<uint8_t> bytes;          ///< the 8-byte length and the space-padded JSON
  std::vector<uint64_t> data_begin;    ///< per input tensor (same order), offset in data section
  uint64_t data_size = 0;              ///< bytes of the data section
  uint64_t file_size() const { return bytes.size() + data_size; }
};

/// Serializes a header for tensors in the given order (call sort_for_writer first for the
/// reference order). Fails if a byte size overflows or a sub-byte tensor does not fill bytes.
Result<SafetensorsHeader> build_safetensors_header(
    std::span<const TensorLayout> tensors, const std::map<std::string, std::string>& metadata);

}  // namespace ckptkit
