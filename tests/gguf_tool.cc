// ckptkit_gguf_tool — a test helper around the GGUF reader and writer, driven by the Python
// oracle tests (tests/python/test_gguf_format.py):
//
//   ckptkit_gguf_tool write SPEC.json OUT.gguf   writes a GGUF with build_gguf_header
//   ckptkit_gguf_tool dump FILE                  prints the parsed header as JSON
//
// SPEC: {"alignment": 32, "name_limit": 64,
//        "kv": [{"key": "general.architecture", "type": "str", "value": "flux"},
//               {"key": "x", "type": "arr", "elem": "i32", "value": [1, 2]}, ...],
//        "tensors": [{"name": "w", "dtype": "Q8_0", "shape": [4, 64], "ne": [64, 4],
//                     "data_hex": "…"}, ...]}      (ne and data_hex optional; data: zeros)
// Types are ggml's short names (u8 i8 u16 i16 u32 i32 f32 bool str arr u64 i64 f64); floats are
// JSON numbers, or "nan"/"inf"/"-inf". Errors go to stderr with exit status 2.
#include <fmt/format.h>
#include <simdjson.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>

#include "ckptkit/gguf.h"
#include "io/json.h"

namespace {

using namespace ckptkit;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "ckptkit_gguf_tool: %s\n", message.c_str());
  std::exit(2);
}

std::optional<GgufType> type_named(std::string_view name) {
  for (uint32_t i = 0; i <= static_cast<uint32_t>(GgufType::kF64); ++i)
    if (gguf_type_name(static_cast<GgufType>(i)) == name) return static_cast<GgufType>(i);
  return std::nullopt;
}

std::optional<DType> dtype_named(std::string_view name) {
  for (const DTypeInfo& info : all_dtypes())
    if (info.name == name) return info.dtype;
  return std::nullopt;
}

double number(simdjson::dom::element e) {
  std::string_view s;
  if (!e.get_string().get(s)) {
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  double d;
  if (e.get_double().get(d)) die("a float value is not a number");
  return d;
}

void append_value(GgufKV& kv, GgufType t, simdjson::dom::element e) {
  auto u = [&]() {
    uint64_t v;
    if (e.get_uint64().get(v)) die("key '" + kv.key + "': expected an unsigned integer");
    return v;
  };
  auto i = [&]() {
    int64_t v;
    if (e.get_int64().get(v)) die("key '" + kv.key + "': expected an integer");
    return v;
  };
  auto put = [&](auto v) { detail::gguf_append_le(kv.raw, t, &v); };
  switch (t) {
    case GgufType::kU8:
      put(static_cast<uint8_t>(u()));
      break;
    case GgufType::kI8:
      put(static_cast<int8_t>(i()));
      break;
    case GgufType::kU16:
      put(static_cast<uint16_t>(u()));
      break;
    case GgufType::kI16:
      put(static_cast<int16_t>(i()));
      break;
    case GgufType::kU32:
      put(static_cast<uint32_t>(u()));
      break;
    case GgufType::kI32:
      put(static_cast<int32_t>(i()));
      break;
    case GgufType::kU64:
      put(u());
      break;
    case GgufType::kI64:
      put(i());
      break;
    case GgufType::kF32:
      put(static_cast<float>(number(e)));
      break;
    case GgufType::kF64:
      put(number(e));
      break;
    case GgufType::kBool: {
      bool b;
      if (e.get_bool().get(b)) die("key '" + kv.key + "': expected a bool");
      put(b);
      break;
    }
    case GgufType::kString: {
      std::string_view s;
      if (e.get_string().get(s)) die("key '" + kv.key + "': expected a string");
      kv.strings.emplace_back(s);
      break;
    }
    case GgufType::kArray:
      die("nested arrays are not written");
  }
}

std::vector<uint64_t> uints(simdjson::dom::element e, const char* what) {
  std::vector<uint64_t> out;
  simdjson::dom::array a;
  if (e.get_array().get(a)) die(std::string(what) + " must be an array");
  for (auto x : a) {
    uint64_t v;
    if (x.get_uint64().get(v)) die(std::string(what) + " must hold unsigned integers");
    out.push_back(v);
  }
  return out;
}

int write(const char* spec_path, const char* out_path) {
  simdjson::dom::parser parser;
  simdjson::dom::element spec;
  if (parser.load(spec_path).get(spec)) die(std::string("cannot parse ") + spec_path);
  GgufWriteOptions options;
  uint64_t v;
  if (!spec["alignment"].get_uint64().get(v)) options.alignment = static_cast<uint32_t>(v);
  if (!spec["name_limit"].get_uint64().get(v)) options.name_limit = v;

  std::vector<GgufKV> kvs;
  simdjson::dom::array arr;
  if (!spec["kv"].get_array().get(arr)) {
    for (auto e : arr) {
      GgufKV kv;
      std::string_view s;
      if (e["key"].get_string().get(s)) die("a kv without a key");
      kv.key = s;
      if (e["type"].get_string().get(s) || !type_named(s)) die("kv '" + kv.key + "': bad type");
      kv.type = kv.elem = *type_named(s);
      if (kv.type == GgufType::kArray) {
        if (e["elem"].get_string().get(s) || !type_named(s)) die("kv '" + kv.key + "': bad elem");
        kv.elem = *type_named(s);
        simdjson::dom::array values;
        if (e["value"].get_array().get(values)) die("kv '" + kv.key + "': value not an array");
        for (auto x : values) append_value(kv, kv.elem, x);
      } else {
        append_value(kv, kv.type, e["value"].value());
      }
      kvs.push_back(std::move(kv));
    }
  }

  std::vector<GgufTensorLayout> tensors;
  std::vector<std::string> data;
  if (!spec["tensors"].get_array().get(arr)) {
    for (auto e : arr) {
      GgufTensorLayout t;
      std::string_view s;
      if (e["name"].get_string().get(s)) die("a tensor without a name");
      t.name = s;
      if (e["dtype"].get_string().get(s) || !dtype_named(s)) die("tensor " + t.name + ": dtype");
      t.dtype = *dtype_named(s);
      t.shape = uints(e["shape"].value(), "shape");
      simdjson::dom::element ne;
      if (!e["ne"].get(ne)) t.ne = uints(ne, "ne");
      std::string hex;
      if (!e["data_hex"].get_string().get(s)) hex = s;
      tensors.push_back(std::move(t));
      data.push_back(std::move(hex));
    }
  }
  auto h = build_gguf_header(tensors, kvs, options);
  if (!h.is_ok()) die(h.status().to_string());
  std::vector<uint8_t> file = h->bytes;
  file.resize(h->file_size(), 0);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string& hex = data[i];
    if (hex.empty()) continue;
    if (hex.size() != 2 * h->nbytes[i]) die("tensor " + tensors[i].name + ": data_hex size");
    for (size_t k = 0; k < h->nbytes[i]; ++k)
      file[h->bytes.size() + h->data_begin[i] + k] =
          static_cast<uint8_t>(std::stoul(hex.substr(2 * k, 2), nullptr, 16));
  }
  std::ofstream out(out_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(file.data()), static_cast<std::streamsize>(file.size()));
  if (!out) die(std::string("cannot write ") + out_path);
  return 0;
}

std::string json_number(double d) {
  if (std::isnan(d)) return "\"nan\"";
  if (std::isinf(d)) return d < 0 ? "\"-inf\"" : "\"inf\"";
  return fmt::format("{}", d);
}

std::string value_json(const GgufKV& kv, uint64_t i) {
  std::string out;
  switch (kv.elem) {
    case GgufType::kString:
      append_json_string(out, *kv.string_at(i));
      return out;
    case GgufType::kBool:
      return *kv.uint_at(i) ? "true" : "false";
    case GgufType::kF32:
    case GgufType::kF64:
      return json_number(*kv.number_at(i));
    case GgufType::kU64:
      return fmt::format("{}", *kv.uint_at(i));
    default:
      return fmt::format("{}", *kv.int_at(i));
  }
}

std::string list(const auto& xs) {
  std::string out = "[";
  for (size_t i = 0; i < std::size(xs); ++i) out += fmt::format("{}{}", i ? ", " : "", xs[i]);
  return out + "]";
}

int dump(const char* path) {
  auto ck = read_gguf(path);
  if (!ck.is_ok()) die(ck.status().to_string());
  const GgufDetails& g = ck->gguf;
  std::string out = fmt::format(
      "{{\"version\": {}, \"alignment\": {}, \"header_size\": {}, \"data_offset\": {}, "
      "\"file_size\": {}, \"ggml_packed\": {},\n \"kv\": [",
      g.version, g.alignment, ck->header_size, ck->data_offset, ck->file_size, g.ggml_packed);
  for (size_t k = 0; k < g.kv.size(); ++k) {
    const GgufKV& kv = g.kv[k];
    out += k ? ",\n  {\"key\": " : "\n  {\"key\": ";
    append_json_string(out, kv.key);
    out += fmt::format(", \"type\": \"{}\", \"elem\": \"{}\", \"value\": ", gguf_type_name(kv.type),
                       gguf_type_name(kv.elem));
    if (kv.is_array()) {
      out += "[";
      for (uint64_t i = 0; i < kv.count(); ++i) out += (i ? ", " : "") + value_json(kv, i);
      out += "]";
    } else {
      out += value_json(kv, 0);
    }
    out += "}";
  }
  out += "],\n \"tensors\": [";
  for (size_t k = 0; k < ck->tensors.size(); ++k) {
    const TensorInfo& t = ck->tensors[k];
    const GgufTensorDetails& d = g.tensors[k];
    out += k ? ",\n  {\"name\": " : "\n  {\"name\": ";
    append_json_string(out, t.name);
    out += fmt::format(
        ", \"dtype\": \"{}\", \"ggml_type\": {}, \"n_dims\": {}, \"ne\": {}, \"shape\": {}, "
        "\"offset\": {}, \"nbytes\": {}, \"orig_shape\": {}}}",
        dtype_name(t.dtype), d.ggml_type, d.n_dims, list(d.ne), list(t.shape), t.begin, t.nbytes(),
        d.orig_shape);
  }
  out += "],\n \"metadata\": {";
  bool first = true;
  for (const auto& [k, v] : ck->metadata) {
    out += first ? "\n  " : ",\n  ";
    first = false;
    append_json_string(out, k);
    out += ": ";
    append_json_string(out, v);
  }
  out += "}}\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "write" && argc == 4) return write(argv[2], argv[3]);
  if (cmd == "dump" && argc == 3) return dump(argv[2]);
  std::fprintf(stderr, "usage: %s write SPEC.json OUT.gguf | dump FILE\n", argv[0]);
  return 2;
}
