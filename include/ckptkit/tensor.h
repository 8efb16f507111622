// ckptkit/tensor.h — the one description of a tensor that every reader produces.
//
// A reader never renames, casts or drops tensors: it yields `TensorInfo`s in file order plus
// string metadata. `Checkpoint` owns them; it is immutable after a reader returns it and can be
// shared between threads.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ckptkit/dtype.h"

namespace ckptkit {

using Shape = std::vector<uint64_t>;

/// Number of elements of a shape (1 for a 0-d scalar), or nullopt on overflow.
std::optional<uint64_t> shape_numel(const Shape& shape);

/// "[320, 4, 3, 3]"
std::string shape_to_string(const Shape& shape);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  /// Byte range of the data, relative to the start of the data section (safetensors) or of the
  /// storage record (other formats).
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  uint64_t numel() const { return shape_numel(shape).value_or(0); }
};

/// Where the header's JSON deviated from the canonical form without breaking the rules. Kept
/// for a later `verify` lint; never an error.
struct HeaderQuirks {
  uint64_t leading_whitespace = 0;
  uint64_t trailing_whitespace = 0;  ///< other than the padding a writer adds (always counted)
  bool canonical_order = true;  ///< data in the reference writer's order (dtype rank, name)
};

enum class FileFormat : uint8_t { kSafetensors };

std::string_view format_name(FileFormat f);

/// A parsed checkpoint file: what is in it and where, no tensor data.
struct Checkpoint {
  std::string path;
  FileFormat format = FileFormat::kSafetensors;
  uint64_t file_size = 0;
  uint64_t header_size = 0;   ///< bytes of the header (the JSON, for safetensors)
  uint64_t data_offset = 0;   ///< absolute file offset of the data section
  std::vector<TensorInfo> tensors;  ///< in data order (ascending `begin`)
  std::map<std::string, std::string> metadata;
  HeaderQuirks quirks;

  uint64_t parameter_count() const;
  const TensorInfo* find(std::string_view name) const;
};

}  // namespace ckptkit
