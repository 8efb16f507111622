#include "ckptkit/dtype.h"

#include <array>
#include <cctype>
#include <string>

#include "ckptkit/tensor.h"
#include "tensor/dtype_names.h"

namespace ckptkit {
namespace {

// writer_rank: the order of the reference writer's Dtype enum (safetensors, Rust), which sorts
// tensors by it descending, then by name. It is by alignment, largest last. The last three
// fields where given: elements and bytes per block, and ggml's type id (ggml.h, ggml-common.h)
// for the types GGUF files hold.
constexpr std::array<DTypeInfo, kDTypeCount> kInfos = {{
    {DType::BOOL, "BOOL", 8, DTypeKind::kBool, true, 0},
    {DType::U8, "U8", 8, DTypeKind::kUnsigned, true, 4},
    {DType::I8, "I8", 8, DTypeKind::kSigned, true, 5, 1, 0, 24},
    {DType::U16, "U16", 16, DTypeKind::kUnsigned, true, 10},
    {DType::I16, "I16", 16, DTypeKind::kSigned, true, 9, 1, 0, 25},
    {DType::U32, "U32", 32, DTypeKind::kUnsigned, true, 14},
    {DType::I32, "I32", 32, DTypeKind::kSigned, true, 13, 1, 0, 26},
    {DType::U64, "U64", 64, DTypeKind::kUnsigned, true, 19},
    {DType::I64, "I64", 64, DTypeKind::kSigned, true, 18, 1, 0, 27},
    {DType::F16, "F16", 16, DTypeKind::kFloat, true, 11, 1, 0, 1},
    {DType::BF16, "BF16", 16, DTypeKind::kFloat, true, 12, 1, 0, 30},
    {DType::F32, "F32", 32, DTypeKind::kFloat, true, 15, 1, 0, 0},
    {DType::F64, "F64", 64, DTypeKind::kFloat, true, 17, 1, 0, 28},
    {DType::F8_E4M3, "F8_E4M3", 8, DTypeKind::kFloat, true, 7},
    {DType::F8_E5M2, "F8_E5M2", 8, DTypeKind::kFloat, true, 6},
    {DType::F8_E8M0, "F8_E8M0", 8, DTypeKind::kFloat, false, 8},
    {DType::F6_E2M3, "F6_E2M3", 6, DTypeKind::kFloat, false, 2},
    {DType::F6_E3M2, "F6_E3M2", 6, DTypeKind::kFloat, false, 3},
    {DType::F4, "F4", 4, DTypeKind::kFloat, false, 1},
    {DType::C64, "C64", 64, DTypeKind::kComplex, false, 16},
    // ggml block types: elements per block, bytes per block, ggml type id (ggml-common.h).
    {DType::Q4_0, "Q4_0", 0, DTypeKind::kQuantized, false, 0, 32, 18, 2},
    {DType::Q4_1, "Q4_1", 0, DTypeKind::kQuantized, false, 0, 32, 20, 3},
    {DType::Q5_0, "Q5_0", 0, DTypeKind::kQuantized, false, 0, 32, 22, 6},
    {DType::Q5_1, "Q5_1", 0, DTypeKind::kQuantized, false, 0, 32, 24, 7},
    {DType::Q8_0, "Q8_0", 0, DTypeKind::kQuantized, false, 0, 32, 34, 8},
    {DType::Q2_K, "Q2_K", 0, DTypeKind::kQuantized, false, 0, 256, 84, 10},
    {DType::Q3_K, "Q3_K", 0, DTypeKind::kQuantized, false, 0, 256, 110, 11},
    {DType::Q4_K, "Q4_K", 0, DTypeKind::kQuantized, false, 0, 256, 144, 12},
    {DType::Q5_K, "Q5_K", 0, DTypeKind::kQuantized, false, 0, 256, 176, 13},
    {DType::Q6_K, "Q6_K", 0, DTypeKind::kQuantized, false, 0, 256, 210, 14},
    {DType::IQ4_NL, "IQ4_NL", 0, DTypeKind::kQuantized, false, 0, 32, 18, 20},
    {DType::IQ4_XS, "IQ4_XS", 0, DTypeKind::kQuantized, false, 0, 256, 136, 23},
}};


}  // namespace

const DTypeInfo& dtype_info(DType t) { return kInfos[static_cast<size_t>(t)]; }

std::span<const DTypeInfo> all_dtypes() { return kInfos; }

std::optional<DType> parse_dtype(std::string_view name) {
  for (const DTypeInfo& info : kInfos)
    if (info.name == name && info.kind != DTypeKind::kQuantized) return info.dtype;
  return std::nullopt;
}

std::optional<DType> dtype_from_ggml(uint32_t id) {
  for (const DTypeInfo& info : kInfos)
    if (info.ggml_type >= 0 && static_cast<uint32_t>(info.ggml_type) == id) return info.dtype;
  return std::nullopt;
}

std::optional<uint64_t> dtype_bytes(DType t, uint64_t count) {
  const DTypeInfo& info = dtype_info(t);
  if (info.kind == DTypeKind::kQuantized) {
    uint64_t total;
    if (count % info.block != 0 || __builtin_mul_overflow(count / info.block, info.block_bytes,
                                                         &total))
      return std::nullopt;
    return total;
  }
  uint64_t bits = info.bits;
  uint64_t total;
  if (__builtin_mul_overflow(count, bits, &total)) return std::nullopt;
  if (total % 8 != 0) return std::nullopt;
  return total / 8;
}

std::optional<uint64_t> shape_numel(const Shape& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  return n;
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string_view format_name(FileFormat f) {
  switch (f) {
    case FileFormat::kSafetensors:
      return "safetensors";
    case FileFormat::kTorchZip:
      return "torch-zip";
    case FileFormat::kTorchLegacy:
      return "torch-legacy";
    case FileFormat::kGguf:
      return "gguf";
  }
  return "unknown";
}

uint64_t Checkpoint::parameter_count() const {
  uint64_t n = 0;
  for (const TensorInfo& t : tensors) n += t.numel();
  return n;
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
  for (const TensorInfo& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

TargetDtype target_dtype_from_name(std::string_view name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "keep") return {true, std::nullopt};
  struct Alias {
    std::string_view name;
    DType dtype;
  };
  constexpr Alias kAliases[] = {
      {"f16", DType::F16},     {"fp16", DType::F16},        {"half", DType::F16},
      {"bf16", DType::BF16},   {"f32", DType::F32},         {"fp32", DType::F32},
      {"float", DType::F32},   {"f64", DType::F64},         {"f8_e4m3", DType::F8_E4M3},
      {"fp8", DType::F8_E4M3}, {"f8_e5m2", DType::F8_E5M2},
  };
  for (const Alias& a : kAliases)
    if (lower == a.name) return {true, a.dtype};
  return {};
}

}  // namespace ckptkit
