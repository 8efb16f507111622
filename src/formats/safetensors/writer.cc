// safetensors header serialization in the reference writer's byte form: compact JSON,
// `__metadata__` first, tensors in the order given, padded with spaces to a multiple of 8.
#include <fmt/format.h>

#include <algorithm>

#include "ckptkit/safetensors.h"
#include "io/errors.h"
#include "io/json.h"

namespace ckptkit {

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

bool precedes_in_writer_order(DType a_dtype, std::string_view a_name, DType b_dtype,
                              std::string_view b_name) {
  const int ra = dtype_info(a_dtype).writer_rank, rb = dtype_info(b_dtype).writer_rank;
  return ra != rb ? ra > rb : a_name < b_name;
}

void sort_for_writer(std::vector<TensorLayout>& tensors) {
  std::stable_sort(tensors.begin(), tensors.end(),
                   [](const TensorLayout& a, const TensorLayout& b) {
                     return precedes_in_writer_order(a.dtype, a.name, b.dtype, b.name);
                   });
}

Result<SafetensorsHeader> build_safetensors_header(
    std::span<const TensorLayout> tensors, const std::map<std::string, std::string>& metadata) {
  SafetensorsHeader h;
  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool first_meta = true;
    for (const auto& [k, v] : metadata) {
      if (!first_meta) json += ',';
      first_meta = false;
      append_json_string(json, k);
      json += ':';
      append_json_string(json, v);
    }
    json += '}';
    first = false;
  }
  uint64_t offset = 0;
  h.data_begin.reserve(tensors.size());
  for (const TensorLayout& t : tensors) {
    if (is_quantized(t.dtype))
      return Status(
          ErrorCode::kUnsupported,
          fmt::format("safetensors cannot hold {} blocks (a GGUF type): convert the file "
                      "to safetensors first (`ckptkit convert IN.gguf -o OUT.safetensors`)",
                      dtype_name(t.dtype)),
          {}, kNoOffset, t.name);
    auto numel = shape_numel(t.shape);
    auto nbytes = numel ? dtype_bytes(t.dtype, *numel) : std::nullopt;
    uint64_t end;
    if (!nbytes || __builtin_add_overflow(offset, *nbytes, &end))
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("{} {} has no whole byte size below 2^64", dtype_name(t.dtype),
                                shape_to_string(t.shape)),
                    {}, kNoOffset, t.name);
    if (!first) json += ',';
    first = false;
    append_json_string(json, t.name);
    json += fmt::format(":{{\"dtype\":\"{}\",\"shape\":[", dtype_name(t.dtype));
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i) json += ',';
      json += fmt::format("{}", t.shape[i]);
    }
    json += fmt::format("],\"data_offsets\":[{},{}]}}", offset, end);
    h.data_begin.push_back(offset);
    offset = end;
  }
  json += '}';
  json.append((8 - json.size() % 8) % 8, ' ');
  h.data_size = offset;
  h.bytes.resize(8 + json.size());
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) h.bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::copy(json.begin(), json.end(), h.bytes.begin() + 8);
  return h;
}

}  // namespace ckptkit
