// libFuzzer target: the GGUF reader on arbitrary bytes (treated as a whole file). Properties
// checked beyond "no crash, no UB, no leak" (each violation abort()s, which libFuzzer and the
// replay test both report as a failure):
//   * a rejected file gets a Corrupt, LimitExceeded or Unsupported status whose byte offset
//     lies inside the file and whose one-line message can be formatted;
//   * an accepted file's tensors lie inside the data section, aligned, without overlap, each
//     holding exactly dtype_bytes(numel) bytes, with shape = ne reversed unless orig_shape;
//     every KV has a metadata entry;
//   * an accepted file is rewritten by build_gguf_header (same tensors, stored ne, KVs and
//     alignment, names up to the reader's limit) and the rewrite reads back to the same
//     tensors and KVs, ggml-packed; writing that again gives the same bytes.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "ckptkit/gguf.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "gguf_fuzz: property violated: %s\n", what);
  std::abort();
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
  if (!st.has_offset() || st.offset() > size) fail("error offset missing or past the file");
  if (st.message().empty()) fail("error without a message");
  if (st.to_string().empty()) fail("empty Status::to_string()");
}

void check_accepted(const ckptkit::Checkpoint& ck, size_t size) {
  const ckptkit::GgufDetails& g = ck.gguf;
  if (ck.file_size != size || ck.data_offset > size || ck.header_size > ck.data_offset)
    fail("header/data offsets inconsistent with the file size");
  if (g.tensors.size() != ck.tensors.size()) fail("gguf details not parallel to the tensors");
  if (g.alignment == 0 || (g.alignment & (g.alignment - 1)) != 0) fail("alignment");
  if (!ck.tensors.empty() && ck.data_offset % g.alignment != 0) fail("data section unaligned");
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const ckptkit::TensorInfo& t = ck.tensors[i];
    const ckptkit::GgufTensorDetails& d = g.tensors[i];
    if (t.end < t.begin || t.end > size - ck.data_offset) fail("tensor outside the data");
    if (t.begin % g.alignment != 0) fail("tensor offset unaligned");
    if (ckptkit::dtype_bytes(t.dtype, t.numel()) != t.nbytes()) fail("tensor size");
    if (d.n_dims > 4) fail("n_dims");
    if (!d.orig_shape) {
      ckptkit::Shape rev(d.ne.begin(), d.ne.begin() + d.n_dims);
      std::reverse(rev.begin(), rev.end());
      if (rev != t.shape) fail("shape is not ne reversed");
    }
    ranges.emplace_back(t.begin, t.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail("overlapping tensors accepted");
  for (const ckptkit::GgufKV& kv : g.kv)
    if (ck.metadata.find(kv.key) == ck.metadata.end()) fail("a KV without its metadata text");
}

std::vector<ckptkit::GgufTensorLayout> layouts_of(const ckptkit::Checkpoint& ck) {
  std::vector<ckptkit::GgufTensorLayout> out;
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const auto& d = ck.gguf.tensors[i];
    out.push_back({ck.tensors[i].name, ck.tensors[i].dtype, ck.tensors[i].shape,
                   ckptkit::Shape(d.ne.begin(), d.ne.begin() + d.n_dims)});
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ckptkit::GgufLimits limits;
  limits.max_header_bytes = 1 << 20;  // keep the fuzzer on small inputs
  auto parsed = ckptkit::parse_gguf(std::span<const uint8_t>(data, size), limits, "in");
  if (!parsed.is_ok()) {
    check_rejection(parsed.status(), size);
    return 0;
  }
  const ckptkit::Checkpoint& ck = *parsed;
  check_accepted(ck, size);

  // Rewrite with the writer. Keys are kept as they are, general.alignment included.
  ckptkit::GgufWriteOptions options;
  options.alignment = ck.gguf.alignment;
  options.name_limit = limits.max_name_bytes + 1;
  if (options.alignment > (1u << 16)) return 0;  // the rewrite would be mostly padding
  const auto layouts = layouts_of(ck);
  auto h = ckptkit::build_gguf_header(layouts, ck.gguf.kv, options);
  if (!h.is_ok()) {
    std::fprintf(stderr, "%s\n", h.status().to_string().c_str());
    fail("the writer refuses what the reader accepted");
  }
  if (h->file_size() > (64u << 20)) return 0;  // a sparse giant: not worth materializing
  std::vector<uint8_t> rebuilt = h->bytes;
  rebuilt.resize(h->file_size(), 0);
  ckptkit::GgufLimits big = limits;
  big.max_header_bytes = 64u << 20;
  auto again = ckptkit::parse_gguf(rebuilt, big);
  if (!again.is_ok()) {
    std::fprintf(stderr, "%s\n", again.status().to_string().c_str());
    fail("the reader refuses the writer's rebuilt file");
  }
  if (again->gguf.kv != ck.gguf.kv) fail("KVs differ after the round trip");
  if (again->metadata != ck.metadata) fail("metadata differs after the round trip");
  if (!again->gguf.ggml_packed) fail("the writer's layout is not ggml-packed");
  if (again->tensors.size() != ck.tensors.size()) fail("tensor count differs");
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const auto& a = ck.tensors[i];
    const auto& b = again->tensors[i];
    if (a.name != b.name || a.dtype != b.dtype || a.shape != b.shape || a.nbytes() != b.nbytes() ||
        b.begin != h->data_begin[i] || ck.gguf.tensors[i].ne != again->gguf.tensors[i].ne ||
        ck.gguf.tensors[i].n_dims != again->gguf.tensors[i].n_dims)
      fail("tensor differs after the round trip");
  }
  auto h2 = ckptkit::build_gguf_header(layouts_of(*again), again->gguf.kv, options);
  if (!h2.is_ok() || h2->bytes != h->bytes) fail("writer output not canonical");
  return 0;
}
