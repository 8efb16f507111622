// ckptkit_quant_tool: runs ckptkit's ggml block (de)quantization on raw files, so that the Python
// tests can compare its bytes with real ggml's (tests/python/test_quant_ggml.py).
//
//   ckptkit_quant_tool quantize TYPE PATH ROWS ROW_ELEMS IN.f32 OUT.bin   (PATH: ref | ones)
//   ckptkit_quant_tool dequantize TYPE COUNT IN.bin OUT.f32
//   ckptkit_quant_tool targets            (SIMD targets this CPU runs, best first)
//
// CKPTKIT_QUANT_TARGET=NAME forces one of those targets (default: the best).
// TYPE is ggml's name (q4_0, q4_K, iq4_xs, …; case-insensitive). Files are raw little-endian
// data. Exit 0 on success, 2 on bad arguments or input (with a message on stderr).
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/dtype.h"
#include "tensor/quant.h"
#include "tensor/quant_simd.h"

namespace {

using ckptkit::DType;

int fail(const std::string& msg) {
  std::fprintf(stderr, "ckptkit_quant_tool: %s\n", msg.c_str());
  return 2;
}

std::optional<DType> parse_type(std::string_view s) {
  std::string up(s);
  for (char& c : up)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (const ckptkit::DTypeInfo& i : ckptkit::all_dtypes())
    if (ckptkit::is_quantized(i.dtype) && i.name == up) return i.dtype;
  return std::nullopt;
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  uint64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<std::vector<char>> read_file(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool write_file(const char* path, const void* data, size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  return static_cast<bool>(out);
}

int run_quantize(int argc, char** argv) {
  if (argc != 8) return fail("usage: quantize TYPE ref|ones ROWS ROW_ELEMS IN.f32 OUT.bin");
  const auto type = parse_type(argv[2]);
  if (!type || !ckptkit::can_quantize(*type))
    return fail(std::string("cannot quantize to '") + argv[2] + "'");
  const std::string_view path_name = argv[3];
  if (path_name != "ref" && path_name != "ones")
    return fail("PATH must be 'ref' or 'ones', not '" + std::string(path_name) + "'");
  const auto rows = parse_u64(argv[4]);
  const auto row_elems = parse_u64(argv[5]);
  if (!rows || !row_elems) return fail("ROWS and ROW_ELEMS must be non-negative integers");
  const auto in = read_file(argv[6]);
  if (!in) return fail(std::string("cannot read ") + argv[6]);
  const uint64_t count = *rows * *row_elems;
  if (*row_elems != 0 && count / *row_elems != *rows) return fail("ROWS x ROW_ELEMS overflows");
  if (in->size() != count * sizeof(float))
    return fail(std::string(argv[6]) + " holds " + std::to_string(in->size()) + " bytes, not " +
                std::to_string(count * sizeof(float)));
  const auto bytes = ckptkit::dtype_bytes(*type, count);
  if (!bytes) return fail("ROW_ELEMS is not a multiple of the block");
  std::vector<float> src(count);
  if (count != 0) std::memcpy(src.data(), in->data(), in->size());
  std::vector<uint8_t> dst(*bytes);
  const auto path =
      path_name == "ref" ? ckptkit::QuantPath::kReference : ckptkit::QuantPath::kUnitImportance;
  const ckptkit::Status st =
      ckptkit::quantize_rows(*type, path, src.data(), *rows, *row_elems, dst.data());
  if (!st.is_ok()) return fail(st.to_string());
  if (!write_file(argv[7], dst.data(), dst.size()))
    return fail(std::string("cannot write ") + argv[7]);
  return 0;
}

int run_dequantize(int argc, char** argv) {
  if (argc != 6) return fail("usage: dequantize TYPE COUNT IN.bin OUT.f32");
  const auto type = parse_type(argv[2]);
  if (!type || !ckptkit::can_dequantize(*type))
    return fail(std::string("cannot dequantize '") + argv[2] + "'");
  const auto count = parse_u64(argv[3]);
  if (!count) return fail("COUNT must be a non-negative integer");
  const auto bytes = ckptkit::dtype_bytes(*type, *count);
  if (!bytes) return fail("COUNT is not a multiple of the block");
  const auto in = read_file(argv[4]);
  if (!in) return fail(std::string("cannot read ") + argv[4]);
  if (in->size() != *bytes)
    return fail(std::string(argv[4]) + " holds " + std::to_string(in->size()) + " bytes, not " +
                std::to_string(*bytes));
  std::vector<float> dst(*count);
  const ckptkit::Status st = ckptkit::dequantize_blocks(
      *type, reinterpret_cast<const uint8_t*>(in->data()), *count, dst.data());
  if (!st.is_ok()) return fail(st.to_string());
  if (!write_file(argv[5], dst.data(), dst.size() * sizeof(float)))
    return fail(std::string("cannot write ") + argv[5]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* target = std::getenv("CKPTKIT_QUANT_TARGET"); target != nullptr && *target)
    if (!ckptkit::detail::select_quant_simd_target(target))
      return fail(std::string("unknown or unsupported SIMD target '") + target + "'");
  if (argc == 2 && std::string_view(argv[1]) == "targets") {
    for (const std::string& t : ckptkit::detail::quant_simd_targets())
      std::printf("%s\n", t.c_str());
    return 0;
  }
  if (argc >= 2 && std::string_view(argv[1]) == "quantize") return run_quantize(argc, argv);
  if (argc >= 2 && std::string_view(argv[1]) == "dequantize") return run_dequantize(argc, argv);
  return fail(
      "usage: ckptkit_quant_tool quantize TYPE ref|ones ROWS ROW_ELEMS IN.f32 OUT.bin\n"
      "       ckptkit_quant_tool dequantize TYPE COUNT IN.bin OUT.f32");
}
