// ckptkit/gguf.h — the GGUF format (ggml, llama.cpp, ComfyUI-GGUF, stable-diffusion.cpp): a
// strict reader and a header writer whose files ggml's own reader accepts.
//
// Byte layout (all little-endian; a "string" is u64 length + that many bytes, no NUL):
//
//   0   "GGUF"                 magic
//   4   u32 version            2 or 3 (1 used u32 counts; a byte-swapped version means a
//                              big-endian file, which ckptkit refuses)
//   8   u64 n_tensors
//   16  u64 n_kv
//   24  n_kv key-value pairs:  string key, u32 value type, value
//                              value: a scalar (u8 i8 u16 i16 u32 i32 f32 bool(1 byte) u64 i64
//                              f64), a string, or an array = u32 element type, u64 count,
//                              count elements (strings or scalars; ggml refuses nested arrays)
//       n_tensors tensor infos: string name, u32 n_dims (≤ 4), u64 ne[n_dims] (ne[0] is the
//                              contiguous axis: the torch shape reversed), u32 ggml type,
//                              u64 offset relative to the data section
//       zero padding up to a multiple of the alignment (`general.alignment`, a u32 power of
//       two, 32 when absent)
//   D   the data section: each tensor's bytes (ggml block layout) at D + offset; offsets are
//       multiples of the alignment. ggml's writer packs them in info order, each padded to
//       the alignment; ggml's reader insists on that.
//
// The reader checks, in this order, and stops at the first violation with a status naming the
// byte offset of the offending field (and the tensor), and which rule:
//   magic (other known formats named as such); version (1, > 3, big-endian: Unsupported);
//   n_tensors and n_kv within the limits and within what the file's size can hold; each KV:
//   a non-empty key, not seen before, a known type, no nested array, lengths and counts inside
//   the file; `general.alignment` a u32 power of two; each tensor info: a name of at most
//   max_name_bytes without NUL, not seen before, n_dims ≤ 4, every ne in [1, 2^63) with an
//   element count below 2^63, a ggml type ckptkit knows (Unsupported, by id, otherwise),
//   ne[0] a multiple of the type's block, an offset that is a multiple of the alignment; the
//   data section starts at the end of the infos rounded up to the alignment, inside the file;
//   each tensor's bytes (dtype_bytes of its element count) lie inside the data section and
//   overlap no other tensor's; `comfy.gguf.orig_shape.<name>` (array of i32 or i64, ComfyUI's
//   record of a tensor it reshaped to rows of 256) holds the same element count as the tensor.
// n_dims 0 (a scalar) is accepted as ggml accepts it.
//
// The reader fills Checkpoint: tensors in info order with the torch-order shape (or the
// orig_shape), begin/end relative to data_offset; metadata with every KV as text; and
// Checkpoint::gguf with the typed KVs and the stored dims.
//
// Thread safety: all functions are reentrant.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/gguf_types.h"
#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit {

struct GgufLimits {
  /// The header (magic to the last tensor info) is read into memory; its length is unknown
  /// until it has been read, so reading stops here.
  uint64_t max_header_bytes = 256ull << 20;
  uint64_t max_tensors = 1u << 20;
  uint64_t max_kv = 1u << 20;
  /// ComfyUI-GGUF writes up to 127 bytes, stable-diffusion.cpp reads up to 159, stock ggml 63.
  uint64_t max_name_bytes = 256;
};

/// The key under which ComfyUI-GGUF records a reshaped tensor's torch shape.
inline constexpr std::string_view kGgufOrigShapePrefix = "comfy.gguf.orig_shape.";

/// Reads and validates the header of a GGUF file (reads only the header, not the data).
Result<Checkpoint> read_gguf(const std::string& path, const GgufLimits& limits = {});

/// Whether dequantize_gguf reads `type` (every quantized type ckptkit knows but the IQ types
/// other than IQ4_NL and IQ4_XS).
bool can_dequantize_gguf(DType type);

/// Dequantizes `out.size()` elements of the block type `type` stored at `blocks` (whole
/// blocks: exactly dtype_bytes(type, out.size()) bytes) to F32, bit for bit ggml's
/// dequantize_row_<type>. InvalidArgument for a size that is not whole blocks or does not
/// match, Unsupported for a type it cannot read.
Status dequantize_gguf(DType type, std::span<const uint8_t> blocks, std::span<float> out);

/// Validates a whole file held in memory (tests, fuzzing). `path` only labels errors.
Result<Checkpoint> parse_gguf(std::span<const uint8_t> file_bytes, const GgufLimits& limits = {},
                              const std::string& path = {});

// --- building key-value pairs ----------------------------------------------------------------

template <typename T>
struct GgufTypeOf;
template <>
struct GgufTypeOf<uint8_t> {
  static constexpr GgufType value = GgufType::kU8;
};
template <>
struct GgufTypeOf<int8_t> {
  static constexpr GgufType value = GgufType::kI8;
};
template <>
struct GgufTypeOf<uint16_t> {
  static constexpr GgufType value = GgufType::kU16;
};
template <>
struct GgufTypeOf<int16_t> {
  static constexpr GgufType value = GgufType::kI16;
};
template <>
struct GgufTypeOf<uint32_t> {
  static constexpr GgufType value = GgufType::kU32;
};
template <>
struct GgufTypeOf<int32_t> {
  static constexpr GgufType value = GgufType::kI32;
};
template <>
struct GgufTypeOf<float> {
  static constexpr GgufType value = GgufType::kF32;
};
template <>
struct GgufTypeOf<bool> {
  static constexpr GgufType value = GgufType::kBool;
};
template <>
struct GgufTypeOf<uint64_t> {
  static constexpr GgufType value = GgufType::kU64;
};
template <>
struct GgufTypeOf<int64_t> {
  static constexpr GgufType value = GgufType::kI64;
};
template <>
struct GgufTypeOf<double> {
  static constexpr GgufType value = GgufType::kF64;
};

namespace detail {
void gguf_append_le(std::vector<uint8_t>& out, GgufType t, const void* value);
}

/// A scalar: `gguf_kv("general.quantization_version", uint32_t{2})`. The C++ type picks the
/// GGUF type, so write the width out (uint32_t{…}, not a bare int).
template <typename T>
GgufKV gguf_kv(std::string key, T value) {
  GgufKV kv;
  kv.key = std::move(key);
  kv.type = kv.elem = GgufTypeOf<T>::value;
  detail::gguf_append_le(kv.raw, kv.type, &value);
  return kv;
}
GgufKV gguf_kv(std::string key, std::string value);
inline GgufKV gguf_kv(std::string key, const char* value) {
  return gguf_kv(std::move(key), std::string(value));
}

/// An array of scalars of one type.
template <typename T>
GgufKV gguf_kv_array(std::string key, const std::vector<T>& values) {
  GgufKV kv;
  kv.key = std::move(key);
  kv.type = GgufType::kArray;
  kv.elem = GgufTypeOf<T>::value;
  for (const T v : values) detail::gguf_append_le(kv.raw, kv.elem, &v);
  return kv;
}
GgufKV gguf_kv_array(std::string key, std::vector<std::string> values);

/// `comfy.gguf.orig_shape.<name>` = torch_shape as an array of i32, as ComfyUI-GGUF writes it;
/// InvalidArgument when a dimension does not fit an i32.
Result<GgufKV> gguf_orig_shape_kv(std::string_view tensor_name, const Shape& torch_shape);

// --- writing ---------------------------------------------------------------------------------

/// One tensor as the writer lays it out.
struct GgufTensorLayout {
  std::string name;
  DType dtype = DType::F32;  ///< must have a ggml type (dtype_info(dtype).ggml_type >= 0)
  Shape shape;               ///< torch order
  /// Stored dims in ggml order, when they differ from `shape` reversed (a ComfyUI reshape:
  /// shape [320, 4, 3, 3] stored as ne [256, 45]); same element count. Empty: shape reversed.
  std::vector<uint64_t> ne;
};

struct GgufWriteOptions {
  uint32_t alignment = 32;  ///< a power of two; `general.alignment` is written when it is not 32
  /// Names must be shorter than this: ggml's GGML_MAX_NAME (64) counts the terminating NUL.
  /// ComfyUI's patched ggml uses 128, stable-diffusion.cpp 160.
  uint64_t name_limit = 64;
};

struct GgufHeader {
  std::vector<uint8_t> bytes;        ///< magic to the last tensor info, zero-padded to alignment
  std::vector<uint64_t> data_begin;  ///< per tensor (input order), offset in the data section
  std::vector<uint64_t> nbytes;      ///< per tensor, its data size without padding
  /// Bytes of the data section: Σ nbytes padded to the alignment. The caller writes each
  /// tensor at data_begin and zero bytes up to the next one (and after the last).
  uint64_t data_size = 0;
  uint64_t file_size() const { return bytes.size() + data_size; }
};

/// Serializes a version-3 header: `kv` in the order given (plus `general.alignment` last when
/// options.alignment ≠ 32 and `kv` lacks it), then the tensor infos in the order given with
/// n_dims = the torch rank (trailing ggml 1s kept) and the data packed in that order.
/// InvalidArgument (naming the tensor or key) for: a duplicate or empty key, a malformed KV, a
/// `general.alignment` KV that is not the u32 options.alignment, an alignment that is not a
/// power of two, a duplicate name or one of name_limit bytes or more or holding a NUL, a
/// dtype GGUF cannot store, more than 4 dims, a dim of 0, ne whose element count differs from
/// the shape's, ne[0] not a multiple of the block, sizes past 2^63.
Result<GgufHeader> build_gguf_header(std::span<const GgufTensorLayout> tensors,
                                     std::span<const GgufKV> kv,
                                     const GgufWriteOptions& options = {});

}  // namespace ckptkit
