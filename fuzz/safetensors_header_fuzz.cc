// libFuzzer target: the safetensors header parser on arbitrary bytes (treated as a whole
// file). Properties checked beyond "no crash, no UB, no leak" (each violation abort()s, which
// libFuzzer and the replay test both report as a failure):
//   * a rejected file gets a Corrupt, LimitExceeded or Unsupported status whose byte offset
//     lies inside the file, and whose one-line message can be formatted;
//   * an accepted file's tensors are in data order and tile the data section exactly, and the
//     same file with max_header_bytes one below its header size is refused (LimitExceeded);
//   * an accepted file re-serializes (build_safetensors_header, tensors in the parsed order)
//     and the rebuilt header plus a zero data section parses to the same tensors (names,
//     dtypes, shapes, byte sizes) and metadata: the reader and the writer agree;
//   * the writer is canonical: serializing the re-parsed checkpoint gives the same bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/safetensors.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "safetensors_header_fuzz: property violated: %s\n", what);
  std::abort();
}

std::vector<ckptkit::TensorLayout> layouts_of(const ckptkit::Checkpoint& ck) {
  std::vector<ckptkit::TensorLayout> out;
  out.reserve(ck.tensors.size());
  for (const ckptkit::TensorInfo& t : ck.tensors) out.push_back({t.name, t.dtype, t.shape});
  return out;
}

void check_rejection(const ckptkit::Status& st, size_t size) {
  switch (st.code()) {
    case ckptkit::ErrorCode::kCorrupt:
    case ckptkit::ErrorCode::kLimitExceeded:
    case ckptkit::ErrorCode::kUnsupported:
      break;
    default:
      fail("unexpected error code for an in-memory parse");
  }
  if (st.has_offset() && st.offset() > size) fail("error offset past the end of the file");
  if (st.message().empty()) fail("error without a message");
  std::string line = st.to_string();
  if (line.empty()) fail("empty Status::to_string()");
}

void check_tiling(const ckptkit::Checkpoint& ck, size_t size) {
  if (ck.data_offset != 8 + ck.header_size || ck.data_offset > size || ck.file_size != size)
    fail("header/data offsets inconsistent with the file size");
  uint64_t expected = 0;
  for (const ckptkit::TensorInfo& t : ck.tensors) {
    if (t.begin != expected || t.end < t.begin) fail("tensors not in data order / not tiling");
    expected = t.end;
  }
  if (expected != size - ck.data_offset) fail("tensors do not cover the data section");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ckptkit::SafetensorsLimits limits;
  limits.max_header_bytes = 1 << 20;  // keep the fuzzer on small inputs
  auto parsed = ckptkit::parse_safetensors(std::span<const uint8_t>(data, size), limits, "in");
  if (!parsed.is_ok()) {
    check_rejection(parsed.status(), size);
    return 0;
  }
  const ckptkit::Checkpoint& ck = *parsed;
  check_tiling(ck, size);

  // Detection accepts whatever the reader accepted and puts every tensor in one component.
  {
    const ckptkit::Anatomy a = ckptkit::analyze(ck);
    std::vector<int> seen(ck.tensors.size(), 0);
    for (const ckptkit::Component& c : a.components)
      for (size_t i : c.tensors) {
        if (i >= seen.size()) fail("a component names a tensor that does not exist");
        ++seen[i];
      }
    for (int n : seen)
      if (n != 1) fail("a tensor in no component or in two");
  }

  // The header limit is exact: one byte less than this header is refused, before any parsing.
  ckptkit::SafetensorsLimits tight;
  tight.max_header_bytes = ck.header_size - 1;
  auto limited = ckptkit::parse_safetensors(std::span<const uint8_t>(data, size), tight);
  if (limited.is_ok() || limited.status().code() != ckptkit::ErrorCode::kLimitExceeded)
    fail("a header one byte over max_header_bytes is not refused as LimitExceeded");
  check_rejection(limited.status(), size);

  // Round trip through the writer, keeping the parsed (data) order.
  const std::vector<ckptkit::TensorLayout> layouts = layouts_of(ck);
  auto header = ckptkit::build_safetensors_header(layouts, ck.metadata);
  if (!header.is_ok()) fail("the writer refuses tensors the reader accepted");
  if (header->data_begin.size() != ck.tensors.size()) fail("writer lost tensors");
  for (size_t i = 0; i < ck.tensors.size(); ++i)
    if (header->data_begin[i] != ck.tensors[i].begin) fail("writer placed data differently");
  if (header->data_size != size - ck.data_offset) fail("writer data size differs");
  if ((header->bytes.size() - 8) % 8 != 0) fail("writer header not padded to 8 bytes");

  std::vector<uint8_t> rebuilt = header->bytes;
  rebuilt.resize(header->file_size(), 0);  // data_size <= size: the input held it
  ckptkit::SafetensorsLimits big = limits;
  big.max_header_bytes = ckptkit::kDefaultMaxHeaderBytes;  // escapes may grow the header
  auto again = ckptkit::parse_safetensors(rebuilt, big);
  if (!again.is_ok()) {
    std::fprintf(stderr, "%s\n", again.status().to_string().c_str());
    fail("the reader refuses the writer's rebuilt header");
  }
  if (again->metadata != ck.metadata) fail("metadata differs after the round trip");
  if (again->tensors.size() != ck.tensors.size()) fail("tensor count differs after round trip");
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const auto& a = ck.tensors[i];
    const auto& b = again->tensors[i];
    if (a.name != b.name || a.dtype != b.dtype || a.shape != b.shape || a.begin != b.begin ||
        a.end != b.end)
      fail("tensor differs after the round trip");
  }
  if (again->quirks.leading_whitespace != 0 || again->quirks.trailing_whitespace >= 8)
    fail("writer output has non-canonical whitespace");
  if (again->quirks.canonical_order != ck.quirks.canonical_order)
    fail("canonical_order changed although the order was kept");

  // The writer is a function of the parsed content: serializing again gives the same bytes.
  auto header2 = ckptkit::build_safetensors_header(layouts_of(*again), again->metadata);
  if (!header2.is_ok() || header2->bytes != header->bytes) fail("writer output not canonical");
  return 0;
}
