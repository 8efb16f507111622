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
#include "ckptkit/gguf_types.h"

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
  /// Byte range of the data relative to Checkpoint::data_offset: for safetensors the tensor's
  /// data_offsets; for PyTorch files `begin` is the absolute offset of element 0 (data_offset is
  /// 0) and `end - begin` is the logical size, numel × element size — with `strides` the
  /// elements may lie elsewhere in the storage.
  uint64_t begin = 0;
  uint64_t end = 0;
  /// PyTorch views: element strides, one per dimension; empty when the tensor is C-contiguous
  /// (always for safetensors). Every element lies inside `storage`'s bytes (checked by readers).
  std::vector<uint64_t> strides;
  /// PyTorch archives saved on a big-endian machine: elements must be byte-swapped.
  bool big_endian = false;
  /// Index into Checkpoint::storages, or -1 (safetensors).
  int32_t storage = -1;

  uint64_t nbytes() const { return end - begin; }
  uint64_t numel() const { return shape_numel(shape).value_or(0); }
  bool is_plain() const { return strides.empty() && !big_endian; }
};

/// A PyTorch storage: one flat run of elements that tensors view.
struct StorageInfo {
  std::string key;    ///< the persistent-id key ("0", "1", … or an address in old files)
  std::string entry;  ///< zip entry holding it ("archive/data/0"); empty for legacy files
  DType dtype = DType::F32;
  uint64_t offset = 0;  ///< absolute file offset of its first byte (see `deflated`)
  uint64_t nbytes = 0;  ///< numel × element size
  /// The zip entry is deflated (torch never writes that; re-zipping tools do): `offset` is
  /// where the compressed bytes start, the tensors' `begin` is relative to it as if the entry
  /// were stored, and the bytes must be inflated first (convert spills them once).
  bool deflated = false;
  uint64_t compressed_size = 0;
  uint32_t crc32 = 0;
};

/// What a PyTorch file held besides the tensors.
struct TorchDetails {
  std::string pickle_entry;    ///< "archive/data.pkl" (zip) or "" (legacy)
  uint64_t pickle_offset = 0;  ///< absolute offset of the object pickle
  int pickle_protocol = 0;
  /// Where the state dict was found: "" (the top level), "state_dict", "model", "a.b", …
  std::string state_dict_key;
  std::vector<std::string> other_entries;  ///< top-level keys that are not the state dict
  uint64_t dropped_values = 0;             ///< non-tensor values inside the state dict (dropped)
  std::vector<StorageInfo> storages;
};

/// Where the header's JSON deviated from the canonical form without breaking the rules. Kept
/// for a later `verify` lint; never an error.
struct HeaderQuirks {
  uint64_t leading_whitespace = 0;
  uint64_t trailing_whitespace = 0;  ///< other than the padding a writer adds (always counted)
  bool canonical_order = true;       ///< data in the reference writer's order (dtype rank, name)
};

enum class FileFormat : uint8_t {
  kSafetensors,
  kTorchZip,     ///< torch.save since PyTorch 1.6: a zip holding data.pkl and data/<key>
  kTorchLegacy,  ///< torch.save before 1.6 (_use_new_zipfile_serialization=False)
  kGguf,         ///< GGUF v2/v3 (ggml): typed key-value pairs, then tensor infos, then data
};

std::string_view format_name(FileFormat f);

/// A parsed checkpoint file: what is in it and where, no tensor data.
struct Checkpoint {
  std::string path;
  FileFormat format = FileFormat::kSafetensors;
  uint64_t file_size = 0;
  uint64_t header_size = 0;  ///< bytes of the header (the JSON, for safetensors)
  uint64_t data_offset = 0;  ///< absolute file offset of the data section
  /// safetensors: in data order (ascending `begin`); PyTorch: in state-dict order; GGUF: in
  /// tensor-info order (the data order of files ggml writes).
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  HeaderQuirks quirks;
  TorchDetails torch;  ///< PyTorch formats only
  GgufDetails gguf;    ///< GGUF only

  uint64_t parameter_count() const;
  const TensorInfo* find(std::string_view name) const;
};

}  // namespace ckptkit
