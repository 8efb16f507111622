// ckptkit/dtype.h — element types as the safetensors specification names them.
//
// Every dtype of the current specification is understood: its name, its size in bits and its
// place in the reference writer's ordering. Only some can be *computed with* (cast, merged);
// the others (F8_E8M0, F6_*, F4, C64) pass through untouched and are reported as
// unsupported-but-understood. All functions here are pure and thread-safe.
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
};

inline constexpr int kDTypeCount = static_cast<int>(DType::C64) + 1;

enum class DTypeKind : uint8_t { kBool, kUnsigned, kSigned, kFloat, kComplex };

struct DTypeInfo {
  DType dtype;
  std::string_view name;   ///< as spelled in a safetensors header: "F16", "F8_E4M3", …
  uint8_t bits;            ///< bits per element (4 and 6 for the packed sub-byte types)
  DTypeKind kind;
  bool computable;         ///< ckptkit can read/cast/merge values of this type
  uint8_t writer_rank;     ///< position in the reference writer's dtype enum (sorted descending)
};

const DTypeInfo& dtype_info(DType t);
std::span<const DTypeInfo> all_dtypes();

/// Parses a safetensors dtype name (exact, case-sensitive, as the specification spells it).
std::optional<DType> parse_dtype(std::string_view name);

inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
inline bool is_float(DType t) { return dtype_info(t).kind == DTypeKind::kFloat; }
inline bool is_computable(DType t) { return dtype_info(t).computable; }

/// Bytes taken by `count` elements, or nullopt on overflow or when a sub-byte type does not
/// fill whole bytes.
std::optional<uint64_t> dtype_bytes(DType t, uint64_t count);

}  // namespace ckptkit
