// ckptkit/gguf_types.h — what a GGUF file holds besides its tensor table: the typed key-value
// pairs (enough to write them back byte for byte) and each tensor's stored ggml dimensions.
//
// Plain values; `Checkpoint::gguf` (ckptkit/tensor.h) owns one. The reader and the writer are
// in ckptkit/gguf.h. Thread safety: values, no shared state.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit {

/// GGUF value types with their on-disk ids (gguf.md "gguf_metadata_value_type").
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,  ///< one byte; ggml reads any non-zero byte as true (the byte is kept as stored)
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

/// ggml's short name ("u8", "i32", "f32", "bool", "str", "arr", …), or "?" for an unknown id.
std::string_view gguf_type_name(GgufType t);
/// Bytes of one value of a numeric or bool type; 0 for kString and kArray.
uint32_t gguf_type_size(GgufType t);

/// One key-value pair. A scalar has `type == elem` and one value; an array has
/// `type == kArray` and `elem` a scalar type or kString (arrays of arrays are refused).
/// Numbers and bools are kept as their little-endian bytes, exactly as stored; strings as bytes
/// (GGUF says UTF-8, nothing checks it).
struct GgufKV {
  std::string key;
  GgufType type = GgufType::kU8;
  GgufType elem = GgufType::kU8;
  std::vector<uint8_t> raw;          ///< numeric/bool values: count() × gguf_type_size(elem)
  std::vector<std::string> strings;  ///< string values (elem == kString)

  bool is_array() const { return type == GgufType::kArray; }
  uint64_t count() const;

  /// Value `i` of an integer or bool type, if it is one and fits; nullopt otherwise.
  std::optional<uint64_t> uint_at(uint64_t i = 0) const;
  std::optional<int64_t> int_at(uint64_t i = 0) const;
  /// Value `i` of any numeric or bool type, as a double.
  std::optional<double> number_at(uint64_t i = 0) const;
  /// Value `i` of a string or string array.
  const std::string* string_at(uint64_t i = 0) const;

  /// The text form `Checkpoint::metadata` holds: strings as they are, numbers in decimal
  /// (floats in their shortest exact form, nan/inf spelled so), bools true/false, arrays as a
  /// JSON-like list (`[1, 2]`, `["a", "b"]`).
  std::string to_text() const;

  bool operator==(const GgufKV&) const = default;
};

/// A tensor as the GGUF file stores it (TensorInfo holds the torch-order view).
struct GgufTensorDetails {
  uint32_t n_dims = 0;                     ///< as stored (0..4)
  std::array<uint64_t, 4> ne{1, 1, 1, 1};  ///< ggml order (ne[0] contiguous); 1 past n_dims
  uint32_t ggml_type = 0;
  uint64_t info_offset = 0;  ///< absolute offset of its tensor info (the name's length)
  /// TensorInfo::shape came from `comfy.gguf.orig_shape.<name>` instead of reversed ne.
  bool orig_shape = false;
};

struct GgufDetails {
  uint32_t version = 0;     ///< 2 or 3
  uint32_t alignment = 32;  ///< `general.alignment`, or 32 when absent
  std::vector<GgufKV> kv;   ///< in file order
  /// Parallel to Checkpoint::tensors (both in tensor-info order): tensors[i] describes
  /// Checkpoint::tensors[i].
  std::vector<GgufTensorDetails> tensors;
  /// The data is laid out as ggml's own reader demands (stricter than the format): tensor i
  /// at Σ pad(nbytes_j, alignment) for j < i. gguf-py's reader and ckptkit accept any
  /// aligned, non-overlapping placement.
  bool ggml_packed = true;

  const GgufKV* find(std::string_view key) const;
};

}  // namespace ckptkit
