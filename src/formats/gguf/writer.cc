// GGUF v3 header serialization, laid out so that ggml's reader (the strictest) accepts it:
// tensor data packed in info order, each tensor padded to the alignment.
#include <fmt/format.h>

#include <bit>
#include <unordered_set>

#include "ckptkit/gguf.h"
#include "io/errors.h"

namespace ckptkit {
namespace {

constexpr uint64_t kMaxElements = static_cast<uint64_t>(INT64_MAX);

void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put64(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

Status bad_kv(const GgufKV& kv, std::string message) {
  return Status(ErrorCode::kInvalidArgument, fmt::format("key '{}': {}", kv.key, message));
}

bool is_scalar_type(GgufType t) {
  return static_cast<uint32_t>(t) <= static_cast<uint32_t>(GgufType::kF64) && t != GgufType::kArray;
}

Status check_kv(const GgufKV& kv, const GgufWriteOptions& options) {
  if (kv.key.empty()) return Status(ErrorCode::kInvalidArgument, "a key-value pair has no key");
  if (kv.is_array()) {
    if (!is_scalar_type(kv.elem))
      return bad_kv(kv, fmt::format("array element type {} (arrays of arrays are not written)",
                                    static_cast<uint32_t>(kv.elem)));
  } else if (!is_scalar_type(kv.type) || kv.elem != kv.type) {
    return bad_kv(kv, fmt::format("malformed value type {}/{}", static_cast<uint32_t>(kv.type),
                                  static_cast<uint32_t>(kv.elem)));
  }
  if (kv.elem == GgufType::kString) {
    if (!kv.raw.empty()) return bad_kv(kv, "a string value with numeric bytes");
    if (!kv.is_array() && kv.strings.size() != 1) return bad_kv(kv, "a scalar with no value");
  } else {
    const uint32_t size = gguf_type_size(kv.elem);
    if (!kv.strings.empty() || kv.raw.size() % size != 0 ||
        (!kv.is_array() && kv.raw.size() != size))
      return bad_kv(kv, fmt::format("{} bytes do not make {} {} value(s)", kv.raw.size(),
                                    kv.is_array() ? "whole" : "one", gguf_type_name(kv.elem)));
  }
  if (kv.key == "general.alignment" &&
      (kv.type != GgufType::kU32 || kv.uint_at(0) != options.alignment))
    return bad_kv(kv, fmt::format("must be the u32 {} (the alignment written)", options.alignment));
  return Status::ok();
}

void put_kv(std::vector<uint8_t>& out, const GgufKV& kv) {
  put_string(out, kv.key);
  put32(out, static_cast<uint32_t>(kv.type));
  if (kv.is_array()) {
    put32(out, static_cast<uint32_t>(kv.elem));
    put64(out, kv.count());
  }
  if (kv.elem == GgufType::kString) {
    for (const std::string& s : kv.strings) put_string(out, s);
  } else {
    out.insert(out.end(), kv.raw.begin(), kv.raw.end());
  }
}

}  // namespace

Result<GgufHeader> build_gguf_header(std::span<const GgufTensorLayout> tensors,
                                     std::span<const GgufKV> kv, const GgufWriteOptions& options) {
  const uint64_t a = options.alignment;
  if (!std::has_single_bit(options.alignment))
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("alignment {} is not a power of two", options.alignment));
  std::unordered_set<std::string_view> keys;
  bool has_alignment = false;
  for (const GgufKV& k : kv) {
    CKPT_RETURN_IF_ERROR(check_kv(k, options));
    if (!keys.insert(k.key).second) return bad_kv(k, "given twice");
    has_alignment = has_alignment || k.key == "general.alignment";
  }
  const bool add_alignment = !has_alignment && options.alignment != 32;

  GgufHeader h;
  std::vector<uint8_t>& out = h.bytes;
  out.insert(out.end(), {'G', 'G', 'U', 'F'});
  put32(out, 3);
  put64(out, tensors.size());
  put64(out, kv.size() + (add_alignment ? 1 : 0));
  for (const GgufKV& k : kv) put_kv(out, k);
  if (add_alignment) put_kv(out, gguf_kv("general.alignment", options.alignment));

  std::unordered_set<std::string_view> names;
  uint64_t offset = 0;
  h.data_begin.reserve(tensors.size());
  h.nbytes.reserve(tensors.size());
  for (const GgufTensorLayout& t : tensors) {
    auto bad = [&](std::string message) {
      return Status(ErrorCode::kInvalidArgument, std::move(message), {}, kNoOffset, t.name);
    };
    if (t.name.size() >= options.name_limit)
      return bad(fmt::format(
          "name of {} bytes: GGUF readers built with a name limit of {} "
          "take names of at most {} bytes",
          t.name.size(), options.name_limit, options.name_limit == 0 ? 0 : options.name_limit - 1));
    if (t.name.find('\0') != std::string::npos) return bad("name holds a NUL byte");
    if (!names.insert(t.name).second) return bad("tensor name given twice");
    const DTypeInfo& info = dtype_info(t.dtype);
    if (info.ggml_type < 0) return bad(fmt::format("GGUF cannot store {}", info.name));
    Shape ne = t.ne;
    if (ne.empty()) ne.assign(t.shape.rbegin(), t.shape.rend());
    if (ne.size() > 4) return bad(fmt::format("{} dims: ggml takes at most 4", ne.size()));
    for (uint64_t d : ne)
      if (d == 0) return bad(fmt::format("a dimension of 0 in ne {}", shape_to_string(ne)));
    const auto numel = shape_numel(ne);
    if (!numel || *numel > kMaxElements)
      return bad(fmt::format("ne {} holds 2^63 elements or more", shape_to_string(ne)));
    if (!t.ne.empty() && shape_numel(t.shape) != numel)
      return bad(fmt::format("ne {} does not hold the {} elements of shape {}", shape_to_string(ne),
                             shape_numel(t.shape).value_or(0), shape_to_string(t.shape)));
    const uint64_t ne0 = ne.empty() ? 1 : ne[0];
    if (ne0 % info.block != 0)
      return bad(fmt::format("ne[0] = {} is not a multiple of {}'s block of {}", ne0, info.name,
                             info.block));
    const auto nbytes = dtype_bytes(t.dtype, *numel);
    uint64_t end;
    if (!nbytes || __builtin_add_overflow(offset, *nbytes, &end) || end > UINT64_MAX - a)
      return bad("the data section would pass 2^64 bytes");
    put_string(out, t.name);
    put32(out, static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) put64(out, d);
    put32(out, static_cast<uint32_t>(info.ggml_type));
    put64(out, offset);
    h.data_begin.push_back(offset);
    h.nbytes.push_back(*nbytes);
    offset = (end + a - 1) & ~(a - 1);
  }
  out.resize((out.size() + a - 1) & ~(a - 1), 0);
  h.data_size = offset;
  return h;
}

}  // namespace ckptkit
