// Strict safetensors header reader. The checks and their order are described in
// include/ckptkit/safetensors.h; every error names an absolute byte offset of the file.
#include <simdjson.h>

#include <algorithm>
#include <cstring>

#include "ckptkit/safetensors.h"
#include "formats/safetensors/internal.h"
#include "formats/sniff.h"
#include "io/errors.h"
#include "io/file.h"

namespace ckptkit {
namespace {

namespace od = simdjson::ondemand;

constexpr uint64_t kPrefix = 8;

uint64_t load_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool is_json_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/// First invalid byte of a UTF-8 sequence, or `n` if all valid (cold path: only called when
/// simdjson's validator has said no, to find where).
size_t first_invalid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1Fu; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0Fu; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07u; }
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3Fu);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return n;
}

/// Validates the 8-byte prefix against the file size and limits; returns N.
Result<uint64_t> check_prefix(std::span<const uint8_t> head, uint64_t file_size,
                              const SafetensorsLimits& limits) {
  Sniffed kind = sniff(head);
  auto foreign = [&]() -> Status {
    return corrupt_at(0, "not a safetensors file: this looks like {}", describe_foreign(kind));
  };
  if (file_size < kPrefix) {
    if (!describe_foreign(kind).empty()) return foreign();
    return corrupt_at(0, "file is {} bytes, too short for the 8-byte header length", file_size);
  }
  const uint64_t n = load_le64(head.data());
  const uint64_t room = file_size - kPrefix;
  if (n > room || n < 2) {
    if (!describe_foreign(kind).empty()) return foreign();
    if (n > room)
      return corrupt_at(0,
                        "header length {} runs past the end of the file ({} bytes after the "
                        "length field): truncated, or not a safetensors file",
                        n, room);
    return corrupt_at(0, "header length {} is too small to hold a JSON object", n);
  }
  if (n > limits.max_header_bytes)
    return Status(ErrorCode::kLimitExceeded,
                  fmt::format("header is {} bytes, over the limit of {} bytes (raise it with "
                              "--max-header-size if the file is trusted)",
                              n, limits.max_header_bytes),
                  {}, 0);
  return n;
}

std::string_view json_type_name(od::json_type t) {
  switch (t) {
    case od::json_type::array: return "an array";
    case od::json_type::object: return "an object";
    case od::json_type::number: return "a number";
    case od::json_type::string: return "a string";
    case od::json_type::boolean: return "a boolean";
    case od::json_type::null: return "null";
  }
  return "a value";
}

/// Parses the JSON header. `json` has at least SIMDJSON_PADDING readable bytes after `n`.
class HeaderParser {
 public:
  HeaderParser(const uint8_t* json, uint64_t n, uint64_t file_size)
      : json_(json), n_(n), file_size_(file_size) {}

  Result<Checkpoint> parse() {
    Checkpoint ck;
    ck.file_size = file_size_;
    ck.header_size = n_;
    ck.data_offset = kPrefix + n_;

    if (!simdjson::validate_utf8(reinterpret_cast<const char*>(json_), n_)) {
      size_t at = first_invalid_utf8(json_, n_);
      return corrupt_at(kPrefix + at, "header is not valid UTF-8 (byte {:#04x})", json_[at]);
    }
    uint64_t lead = 0;
    while (lead < n_ && is_json_space(json_[lead])) ++lead;
    uint64_t trail = 0;
    while (trail < n_ - lead && is_json_space(json_[n_ - 1 - trail])) ++trail;
    ck.quirks.leading_whitespace = lead;
    ck.quirks.trailing_whitespace = trail;
    if (lead == n_ || json_[lead] != '{')
      return corrupt_at(kPrefix + lead, "header must be a JSON object starting with '{{'");

    od::parser parser;
    od::document doc;
    auto padded = simdjson::padded_string_view(reinterpret_cast<const char*>(json_), n_,
                                               n_ + simdjson::SIMDJSON_PADDING);
    if (auto err = parser.iterate(padded).get(doc)) return json_error(err, nullptr);
    od::object root;
    if (auto err = doc.get_object().get(root)) return json_error(err, &doc);

    // Duplicates are found after the pass by sorting names (cheaper than a hash table of
    // thousands of names, which costs allocations and page faults on every inspect).
    std::vector<uint64_t> key_offsets;
    ck.tensors.reserve(n_ / 96);
    key_offsets.reserve(n_ / 96);
    uint64_t metadata_at = kNoOffset;
    for (auto field_result : root) {
      od::field field;
      if (auto err = std::move(field_result).get(field)) return json_error(err, &doc);
      const uint64_t key_at = offset_of(field.key().raw()) - 1;  // the opening quote
      std::string_view key_view;
      if (auto err = field.unescaped_key().get(key_view)) return json_error(err, &doc);
      if (key_view == "__metadata__") {
        if (metadata_at != kNoOffset)
          return corrupt_tensor(key_at, "__metadata__",
                                "duplicate key (first defined at offset {:#x})", metadata_at);
        metadata_at = key_at;
        CKPT_RETURN_IF_ERROR(parse_metadata(field.value(), key_at, ck.metadata, doc));
        continue;
      }
      TensorInfo t;
      t.name = std::string(key_view);
      CKPT_RETURN_IF_ERROR(parse_entry(field.value(), key_at, t, doc));
      ck.tensors.push_back(std::move(t));
      key_offsets.push_back(key_at);
    }
    CKPT_RETURN_IF_ERROR(check_duplicates(ck.tensors, key_offsets));
    // On-demand parsing validates what it visits and every value is visited, but it stops at
    // the end of the root object: anything after it must be caught here.
    const char* rest = nullptr;
    if (!doc.current_location().get(rest))
      return corrupt_at(offset_of(rest), "unexpected content after the header object");
    CKPT_RETURN_IF_ERROR(check_tiling(ck));
    return ck;
  }

 private:
  uint64_t offset_of(const char* p) const {
    const auto* u = reinterpret_cast<const uint8_t*>(p);
    if (u < json_ || u > json_ + n_) return kPrefix;
    return kPrefix + static_cast<uint64_t>(u - json_);
  }

  uint64_t location(od::document* doc) {
    if (doc != nullptr) {
      const char* p = nullptr;
      if (!doc->current_location().get(p)) return offset_of(p);
    }
    return kPrefix;  // no better location known: the start of the header
  }

  /// End of the root object (one past its '}'), skipping strings; npos if it never closes.
  size_t root_object_end() const {
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < n_; ++i) {
      const uint8_t c = json_[i];
      if (in_string) {
        if (c == '\\') ++i;
        else if (c == '"') in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
    }
    return std::string_view::npos;
  }

  /// A JSON error, located. Content after a complete root object gets its own message, since
  /// simdjson reports it only as a malformed document.
  Status json_error(simdjson::error_code err, od::document* doc) {
    const size_t end = root_object_end();
    if (end != std::string_view::npos) {
      size_t i = end;
      while (i < n_ && is_json_space(json_[i])) ++i;
      if (i < n_) return corrupt_at(kPrefix + i, "unexpected content after the header object");
    }
    return corrupt_at(location(doc), "header is not valid JSON: {}",
                      simdjson::error_message(err));
  }

  static Status type_error(uint64_t at, const std::string& tensor, std::string_view what,
                           od::json_type found) {
    return corrupt_tensor(at, tensor, "{} must be {}, found {}", what,
                          what == "dtype" ? "a string" : "an array of integers",
                          json_type_name(found));
  }

  Status parse_metadata(od::value value, uint64_t key_at,
                        std::map<std::string, std::string>& out, od::document& doc) {
    od::json_type type;
    if (auto err = value.type().get(type)) return json_error(err, &doc);
    if (type == od::json_type::null) return Status::ok();
    if (type != od::json_type::object)
      return corrupt_at(key_at, "__metadata__ must be an object of string values, found {}",
                        json_type_name(type));
    od::object obj;
    if (auto err = value.get_object().get(obj)) return json_error(err, &doc);
    for (auto field_result : obj) {
      od::field field;
      if (auto err = std::move(field_result).get(field)) return json_error(err, &doc);
      const uint64_t at = offset_of(field.key().raw()) - 1;
      std::string_view k;
      if (auto err = field.unescaped_key().get(k)) return json_error(err, &doc);
      std::string key(k);
      od::json_type vt;
      if (auto err = field.value().type().get(vt)) return json_error(err, &doc);
      if (vt != od::json_type::string)
        return corrupt_at(at, "__metadata__ entry '{}': value must be a string, found {}", key,
                          json_type_name(vt));
      std::string_view v;
      if (auto err = field.value().get_string().get(v)) return json_error(err, &doc);
      if (!out.emplace(key, std::string(v)).second)
        return corrupt_at(at, "__metadata__ has the key '{}' twice", key);
    }
    return Status::ok();
  }

  Status parse_uint_array(od::value value, uint64_t at, const std::string& tensor,
                          std::string_view what, std::vector<uint64_t>& out, od::document& doc) {
    od::json_type type;
    if (auto err = value.type().get(type)) return json_error(err, &doc);
    if (type != od::json_type::array) return type_error(at, tensor, what, type);
    od::array arr;
    if (auto err = value.get_array().get(arr)) return json_error(err, &doc);
    for (auto element : arr) {
      od::value v;
      if (auto err = std::move(element).get(v)) return json_error(err, &doc);
      uint64_t x;
      if (v.get_uint64().get(x))
        return corrupt_tensor(at, tensor, "{}[{}] must be a non-negative integer below 2^64",
                              what, out.size());
      out.push_back(x);
    }
    return Status::ok();
  }

  Status parse_entry(od::value value, uint64_t key_at, TensorInfo& t, od::document& doc) {
    od::json_type type;
    if (auto err = value.type().get(type)) return json_error(err, &doc);
    if (type != od::json_type::object)
      return corrupt_tensor(key_at, t.name,
                            "entry must be an object with dtype, shape and data_offsets, found {}",
                            json_type_name(type));
    od::object obj;
    if (auto err = value.get_object().get(obj)) return json_error(err, &doc);
    bool have_dtype = false, have_shape = false, have_offsets = false;
    std::vector<uint64_t> offsets;
    for (auto field_result : obj) {
      od::field field;
      if (auto err = std::move(field_result).get(field)) return json_error(err, &doc);
      const uint64_t at = offset_of(field.key().raw()) - 1;  // before unescaping consumes it
      std::string_view k;
      if (auto err = field.unescaped_key().get(k)) return json_error(err, &doc);
      if (k == "dtype") {
        if (have_dtype) return corrupt_tensor(at, t.name, "'dtype' given twice");
        have_dtype = true;
        od::json_type vt;
        if (auto err = field.value().type().get(vt)) return json_error(err, &doc);
        if (vt != od::json_type::string) return type_error(at, t.name, "dtype", vt);
        std::string_view name;
        if (auto err = field.value().get_string().get(name)) return json_error(err, &doc);
        auto dt = parse_dtype(name);
        if (!dt)
          return Status(ErrorCode::kUnsupported,
                        fmt::format("unknown dtype '{}' (not in the safetensors specification)",
                                    name),
                        {}, at, t.name);
        t.dtype = *dt;
      } else if (k == "shape") {
        if (have_shape) return corrupt_tensor(at, t.name, "'shape' given twice");
        have_shape = true;
        CKPT_RETURN_IF_ERROR(parse_uint_array(field.value(), at, t.name, "shape", t.shape, doc));
      } else if (k == "data_offsets") {
        if (have_offsets) return corrupt_tensor(at, t.name, "'data_offsets' given twice");
        have_offsets = true;
        CKPT_RETURN_IF_ERROR(
            parse_uint_array(field.value(), at, t.name, "data_offsets", offsets, doc));
        if (offsets.size() != 2)
          return corrupt_tensor(at, t.name, "data_offsets must hold 2 integers, found {}",
                                offsets.size());
      } else {
        return corrupt_tensor(at, t.name,
                              "unexpected field '{}' (a tensor entry has only dtype, shape and "
                              "data_offsets)",
                              k);
      }
    }
    if (!have_dtype) return corrupt_tensor(key_at, t.name, "entry has no 'dtype'");
    if (!have_shape) return corrupt_tensor(key_at, t.name, "entry has no 'shape'");
    if (!have_offsets) return corrupt_tensor(key_at, t.name, "entry has no 'data_offsets'");
    t.begin = offsets[0];
    t.end = offsets[1];
    auto numel = shape_numel(t.shape);
    if (!numel)
      return corrupt_tensor(key_at, t.name, "shape {} has more elements than 64 bits can count",
                            shape_to_string(t.shape));
    auto nbytes = dtype_bytes(t.dtype, *numel);
    if (!nbytes) {
      if (dtype_info(t.dtype).bits % 8 != 0 && *numel <= UINT64_MAX / 8)
        return corrupt_tensor(key_at, t.name, "{} {} does not fill a whole number of bytes",
                              dtype_name(t.dtype), shape_to_string(t.shape));
      return corrupt_tensor(key_at, t.name, "{} {} is more bytes than 64 bits can count",
                            dtype_name(t.dtype), shape_to_string(t.shape));
    }
    if (t.end < t.begin)
      return corrupt_tensor(key_at, t.name, "data_offsets [{}, {}) end before they begin",
                            t.begin, t.end);
    if (t.end - t.begin != *nbytes)
      return corrupt_tensor(key_at, t.name, "{} {} needs {} bytes but data_offsets [{}, {}) hold {}",
                            dtype_name(t.dtype), shape_to_string(t.shape), *nbytes, t.begin,
                            t.end, t.end - t.begin);
    return Status::ok();
  }

  static Status check_duplicates(const std::vector<TensorInfo>& tensors,
                                 const std::vector<uint64_t>& key_offsets) {
    std::vector<uint32_t> order(tensors.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return tensors[a].name != tensors[b].name ? tensors[a].name < tensors[b].name : a < b;
    });
    for (size_t i = 1; i < order.size(); ++i) {
      const TensorInfo& t = tensors[order[i]];
      if (t.name == tensors[order[i - 1]].name)
        return corrupt_tensor(key_offsets[order[i]], t.name,
                              "duplicate key (first defined at offset {:#x})",
                              key_offsets[order[i - 1]]);
    }
    return Status::ok();
  }

  Status check_tiling(Checkpoint& ck) {
    const uint64_t data_start = ck.data_offset;
    const uint64_t data_size = file_size_ - data_start;
    std::vector<size_t> order(ck.tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const TensorInfo& x = ck.tensors[a];
      const TensorInfo& y = ck.tensors[b];
      return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
    });
    uint64_t expected = 0;
    const TensorInfo* prev = nullptr;
    for (size_t idx : order) {
      const TensorInfo& t = ck.tensors[idx];
      if (t.begin > expected)
        return corrupt_tensor(data_start + expected, t.name,
                              "gap in the data section: data starts at {} but the previous "
                              "tensor{} ends at {} ({} unused bytes)",
                              t.begin, prev ? fmt::format(" '{}'", prev->name) : std::string(),
                              expected, t.begin - expected);
      if (t.begin < expected)
        return corrupt_tensor(data_start + t.begin, t.name,
                              "data [{}, {}) overlaps tensor '{}', which ends at {}", t.begin,
                              t.end, prev ? prev->name : std::string(), expected);
      if (t.end > data_size)
        return corrupt_tensor(file_size_, t.name,
                              "data [{}, {}) runs past the end of the file (the data section "
                              "holds {} bytes): the file is truncated",
                              t.begin, t.end, data_size);
      expected = t.end;
      prev = &t;
    }
    if (expected != data_size)
      return corrupt_at(data_start + expected, "{} bytes after the last tensor's data",
                        data_size - expected);
    // Canonical order: the reference writer's (dtype rank descending, then name).
    std::vector<TensorInfo> sorted;
    sorted.reserve(order.size());
    for (size_t idx : order) sorted.push_back(std::move(ck.tensors[idx]));
    ck.tensors = std::move(sorted);
    ck.quirks.canonical_order = std::is_sorted(
        ck.tensors.begin(), ck.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
          return precedes_in_writer_order(a.dtype, a.name, b.dtype, b.name);
        });
    return Status::ok();
  }

  const uint8_t* json_;
  uint64_t n_;
  uint64_t file_size_;
};

Result<Checkpoint> parse_padded(const uint8_t* json_padded, uint64_t n, uint64_t file_size) {
  HeaderParser p(json_padded, n, file_size);
  return p.parse();
}

}  // namespace

Result<Checkpoint> parse_safetensors(std::span<const uint8_t> file_bytes,
                                     const SafetensorsLimits& limits, const std::string& path) {
  auto head = file_bytes.first(std::min<size_t>(file_bytes.size(), 64));
  auto n = check_prefix(head, file_bytes.size(), limits);
  if (!n) return n.status().with_path(path);
  std::vector<uint8_t> padded(*n + simdjson::SIMDJSON_PADDING, 0);
  std::memcpy(padded.data(), file_bytes.data() + kPrefix, *n);
  auto ck = parse_padded(padded.data(), *n, file_bytes.size());
  if (!ck) return ck.status().with_path(path);
  ck->path = path;
  return ck;
}

Result<Checkpoint> read_safetensors(const std::string& path, const SafetensorsLimits& limits) {
  CKPT_ASSIGN_OR_RETURN(InputFile file, InputFile::open(path));
  return read_safetensors(file, limits);
}

Result<Checkpoint> read_safetensors(const InputFile& file, const SafetensorsLimits& limits) {
  const std::string& path = file.path();
  uint8_t head_buf[64] = {};
  size_t head_len = static_cast<size_t>(std::min<uint64_t>(file.size(), sizeof head_buf));
  CKPT_RETURN_IF_ERROR(file.pread_exact({head_buf, head_len}, 0, "the header length"));
  std::span<const uint8_t> head(head_buf, head_len);
  auto n = check_prefix(head, file.size(), limits);
  if (!n) return n.status().with_path(path);
  // Uninitialized: pread fills it (zeroing first would touch every page twice).
  std::unique_ptr<uint8_t[]> padded(new uint8_t[*n + simdjson::SIMDJSON_PADDING]);
  std::memset(padded.get() + *n, 0, simdjson::SIMDJSON_PADDING);
  CKPT_RETURN_IF_ERROR(file.pread_exact({padded.get(), *n}, kPrefix, "the JSON header"));
  auto ck = parse_padded(padded.get(), *n, file.size());
  if (!ck) return ck.status().with_path(path);
  ck->path = path;
  return ck;
}

}  // namespace ckptkit
