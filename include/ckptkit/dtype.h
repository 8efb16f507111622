// ckptkit/dtype.h — element types: those the safetensors specification names, and ggml's
// block-quantized types (GGUF files).
//
// Every dtype of the current safetensors specification is understood: its name, its size in
// bits and its place in the reference writer's ordering. Only some can be *computed with*
// (cast, merged); the others (F8_E8M0, F6_*, F4, C64) pass through untouched and are reported
// as unsupported-but-understood.
//
// A quantized type (Q8_0, Q4_K, …) stores blocks of `block` elements in `block_bytes` bytes
// (a scale, sometimes a minimum, then packed integers); a tensor's element count along its
// rows is a multiple of the block. These types exist only in GGUF files; parse_dtype (the
// safetensors names) does not accept them. All functions here are pure and thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace ckptkit {

enum class DType : uint8_t {
  BOOL,
  U8,
  I8,
  U16,
  I16,
  U32,
  I32,
  U64,
  I64,
  F16,
  BF16,
  F32,
  F64,
  F8_E4M3,
  F8_E5M2,
  // Understood (size, name) but not computed with.
  F8_E8M0,
  F6_E2M3,
  F6_E3M2,
  F4,
  C64,
  // ggml block-quantized types (GGUF only).
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  IQ4_NL,
  IQ4_XS,
};

inline constexpr int kDTypeCount = static_cast<int>(DType::IQ4_XS) + 1;

enum class DTypeKind : uint8_t { kBool, kUnsigned, kSigned, kFloat, kComplex, kQuantized };

struct DTypeInfo {
  DType dtype;
  std::string_view name;  ///< as spelled in a safetensors header ("F16", "F8_E4M3", …) or, for
                          ///< quantized types, as GGUF tools print them ("Q4_K")
  uint8_t bits;           ///< bits per element (4 and 6 for the packed sub-byte types); 0 for
                          ///< quantized types, whose size is block_bytes per block
  DTypeKind kind;
  bool computable;      ///< ckptkit can read/cast/merge values of this type
  uint8_t writer_rank;  ///< position in the reference writer's dtype enum (sorted descending)
  uint16_t block = 1;   ///< elements per block (32 or 256 for quantized types)
  uint16_t block_bytes = 0;  ///< bytes per block (quantized types)
  int16_t ggml_type = -1;    ///< ggml's type id in GGUF files, -1 where GGUF has none
};

const DTypeInfo& dtype_info(DType t);
std::span<const DTypeInfo> all_dtypes();

/// Parses a safetensors dtype name (exact, case-sensitive, as the specification spells it).
std::optional<DType> parse_dtype(std::string_view name);

inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
inline bool is_float(DType t) { return dtype_info(t).kind == DTypeKind::kFloat; }
inline bool is_computable(DType t) { return dtype_info(t).computable; }
inline bool is_quantized(DType t) { return dtype_info(t).kind == DTypeKind::kQuantized; }

/// Bytes taken by `count` elements, or nullopt on overflow, when a sub-byte type does not
/// fill whole bytes, or when `count` is not a whole number of a quantized type's blocks.
std::optional<uint64_t> dtype_bytes(DType t, uint64_t count);

/// The dtype of ggml type id `id` (a GGUF tensor's type), or nullopt when ckptkit does not
/// know it.
std::optional<DType> dtype_from_ggml(uint32_t id);

}  // namespace ckptkit
