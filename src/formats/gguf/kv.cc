// GGUF key-value pairs: typed access, the text form Checkpoint::metadata holds, builders.
#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstring>

#include "ckptkit/gguf.h"
#include "io/errors.h"
#include "io/json.h"

namespace ckptkit {

static_assert(std::endian::native == std::endian::little,
              "GGUF values are kept as little-endian bytes and read with memcpy");

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::kU8:
      return "u8";
    case GgufType::kI8:
      return "i8";
    case GgufType::kU16:
      return "u16";
    case GgufType::kI16:
      return "i16";
    case GgufType::kU32:
      return "u32";
    case GgufType::kI32:
      return "i32";
    case GgufType::kF32:
      return "f32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "str";
    case GgufType::kArray:
      return "arr";
    case GgufType::kU64:
      return "u64";
    case GgufType::kI64:
      return "i64";
    case GgufType::kF64:
      return "f64";
  }
  return "?";
}

uint32_t gguf_type_size(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

uint64_t GgufKV::count() const {
  if (elem == GgufType::kString) return strings.size();
  const uint32_t size = gguf_type_size(elem);
  return size == 0 ? 0 : raw.size() / size;
}

namespace {

template <typename T>
T load(const std::vector<uint8_t>& raw, uint64_t i) {
  T v;
  std::memcpy(&v, raw.data() + i * sizeof(T), sizeof(T));
  return v;
}

/// Value i of an integer or bool type other than u64 (which alone may not fit an int64).
std::optional<int64_t> integer_at(const GgufKV& kv, uint64_t i) {
  if (i >= kv.count()) return std::nullopt;
  switch (kv.elem) {
    case GgufType::kU8:
      return load<uint8_t>(kv.raw, i);
    case GgufType::kI8:
      return load<int8_t>(kv.raw, i);
    case GgufType::kU16:
      return load<uint16_t>(kv.raw, i);
    case GgufType::kI16:
      return load<int16_t>(kv.raw, i);
    case GgufType::kU32:
      return load<uint32_t>(kv.raw, i);
    case GgufType::kI32:
      return load<int32_t>(kv.raw, i);
    case GgufType::kI64:
      return load<int64_t>(kv.raw, i);
    case GgufType::kBool:
      return load<uint8_t>(kv.raw, i) != 0 ? 1 : 0;
    default:
      return std::nullopt;
  }
}

std::string float_text(double v, bool single) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  return single ? fmt::format("{}", static_cast<float>(v)) : fmt::format("{}", v);
}

std::string value_text(const GgufKV& kv, uint64_t i, bool quote_strings) {
  switch (kv.elem) {
    case GgufType::kString: {
      if (!quote_strings) return kv.strings[i];
      std::string out;
      append_json_string(out, kv.strings[i]);
      return out;
    }
    case GgufType::kBool:
      return load<uint8_t>(kv.raw, i) != 0 ? "true" : "false";
    case GgufType::kF32:
      return float_text(load<float>(kv.raw, i), true);
    case GgufType::kF64:
      return float_text(load<double>(kv.raw, i), false);
    case GgufType::kU64:
      return fmt::format("{}", load<uint64_t>(kv.raw, i));
    default:
      return fmt::format("{}", integer_at(kv, i).value_or(0));
  }
}

}  // namespace

std::optional<uint64_t> GgufKV::uint_at(uint64_t i) const {
  if (elem == GgufType::kU64 && i < count()) return load<uint64_t>(raw, i);
  auto v = integer_at(*this, i);
  if (!v || *v < 0) return std::nullopt;
  return static_cast<uint64_t>(*v);
}

std::optional<int64_t> GgufKV::int_at(uint64_t i) const {
  if (elem == GgufType::kU64 && i < count()) {
    const uint64_t v = load<uint64_t>(raw, i);
    if (v > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  return integer_at(*this, i);
}

std::optional<double> GgufKV::number_at(uint64_t i) const {
  if (i >= count()) return std::nullopt;
  if (elem == GgufType::kF32) return load<float>(raw, i);
  if (elem == GgufType::kF64) return load<double>(raw, i);
  if (elem == GgufType::kU64) return static_cast<double>(load<uint64_t>(raw, i));
  auto v = integer_at(*this, i);
  if (!v) return std::nullopt;
  return static_cast<double>(*v);
}

const std::string* GgufKV::string_at(uint64_t i) const {
  if (elem != GgufType::kString || i >= strings.size()) return nullptr;
  return &strings[i];
}

std::string GgufKV::to_text() const {
  if (!is_array()) return count() == 1 ? value_text(*this, 0, false) : std::string();
  std::string out = "[";
  const uint64_t n = count();
  for (uint64_t i = 0; i < n; ++i) {
    if (i) out += ", ";
    out += value_text(*this, i, true);
  }
  return out + "]";
}

const GgufKV* GgufDetails::find(std::string_view key) const {
  for (const GgufKV& pair : kv)
    if (pair.key == key) return &pair;
  return nullptr;
}

namespace detail {
void gguf_append_le(std::vector<uint8_t>& out, GgufType t, const void* value) {
  const uint32_t size = gguf_type_size(t);
  if (t == GgufType::kBool) {
    bool b;
    std::memcpy(&b, value, sizeof b);
    out.push_back(b ? 1 : 0);
    return;
  }
  const auto* p = static_cast<const uint8_t*>(value);
  out.insert(out.end(), p, p + size);
}
}  // namespace detail

GgufKV gguf_kv(std::string key, std::string value) {
  GgufKV kv;
  kv.key = std::move(key);
  kv.type = kv.elem = GgufType::kString;
  kv.strings.push_back(std::move(value));
  return kv;
}

GgufKV gguf_kv_array(std::string key, std::vector<std::string> values) {
  GgufKV kv;
  kv.key = std::move(key);
  kv.type = GgufType::kArray;
  kv.elem = GgufType::kString;
  kv.strings = std::move(values);
  return kv;
}

Result<GgufKV> gguf_orig_shape_kv(std::string_view tensor_name, const Shape& torch_shape) {
  std::vector<int32_t> dims;
  for (uint64_t d : torch_shape) {
    if (d > static_cast<uint64_t>(INT32_MAX))
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("shape {} has a dimension that does not fit an i32",
                                shape_to_string(torch_shape)),
                    {}, kNoOffset, std::string(tensor_name));
    dims.push_back(static_cast<int32_t>(d));
  }
  return gguf_kv_array(fmt::format("{}{}", kGgufOrigShapePrefix, tensor_name), dims);
}

}  // namespace ckptkit
