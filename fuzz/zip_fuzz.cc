// libFuzzer target: the torch ZIP reader (ckptkit::zip) on arbitrary bytes taken as a whole file,
// read from a MemorySource. Properties checked beyond "no crash, no UB, no leak" (each
// violation abort()s, which libFuzzer and the replay test both report as a failure):
//   * a rejected archive, entry or prefix gets a Corrupt, Unsupported or LimitExceeded status
//     with a message, a byte offset inside the input and a one-line to_string();
//   * an accepted archive is self-consistent: its end record, central directory and every
//     entry's [local header, data end) lie inside the input, in that order (entries before the
//     directory, the directory before the end record), entries are stored or deflated, not
//     encrypted, stored ones have equal sizes, find() returns the first entry of a name, and
//     findings have a known kind, a message and an offset inside the input;
//   * max_entries is exact: one below the number of entries is refused as LimitExceeded;
//   * an ok read_entry returns exactly uncompressed_size bytes whose CRC-32 is the entry's; an
//     ok read_entry_prefix returns min(max_bytes, uncompressed_size) bytes, and when the whole
//     entry reads, the prefix reads too and is its start.
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "formats/torch/zip.h"
#include "io/source.h"

namespace {

namespace zip = ckptkit::zip;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "zip_fuzz: property violated: %s\n", what);
  std::abort();
}

void check_rejection(const ckptkit::Status& st, size_t size) {
  switch (st.code()) {
    case ckptkit::ErrorCode::kCorrupt:
    case ckptkit::ErrorCode::kLimitExceeded:
    case ckptkit::ErrorCode::kUnsupported:
      break;
    default:
      std::fprintf(stderr, "%s\n", st.to_string().c_str());
      fail("unexpected error code for an in-memory archive");
  }
  if (!st.has_offset()) fail("error without a byte offset");
  if (st.offset() > size) fail("error offset past the end of the input");
  if (st.message().empty()) fail("error without a message");
  if (st.path() != "in.pt") fail("error does not name the path");
  const std::string line = st.to_string();
  if (line.empty() || line.find('\n') != std::string::npos) fail("to_string() is not one line");
}

void check_archive(const zip::Archive& a, size_t size) {
  if (a.eocd_offset > size || size - a.eocd_offset < 22) fail("end record outside the input");
  if (a.central_directory_offset > a.eocd_offset) fail("central directory after the end record");
  if (a.archive_start > a.central_directory_offset) fail("archive starts after its directory");
  for (const zip::Entry& e : a.entries) {
    if (e.method != zip::kMethodStored && e.method != zip::kMethodDeflated)
      fail("accepted an unsupported method");
    if ((e.flags & 1) != 0) fail("accepted an encrypted entry");
    if (e.method == zip::kMethodStored && e.compressed_size != e.uncompressed_size)
      fail("stored entry with different sizes");
    if (e.local_header_offset < a.archive_start) fail("entry before archive_start");
    if (e.data_offset < e.local_header_offset + 30) fail("data inside the local header");
    if (e.data_offset > size || e.compressed_size > size - e.data_offset)
      fail("entry data outside the input");
    if (e.data_offset + e.compressed_size > a.central_directory_offset)
      fail("entry data runs into the central directory");
    if (e.central_offset < a.central_directory_offset || e.central_offset >= a.eocd_offset)
      fail("central record outside the central directory");
    const zip::Entry* found = a.find(e.name);
    if (found == nullptr || found->name != e.name || found > &e) fail("find() is wrong");
  }
  for (const zip::Finding& f : a.findings) {
    if (f.offset > size) fail("finding offset past the end of the input");
    if (f.message.empty() || f.message.find('\n') != std::string::npos)
      fail("finding message empty or not one line");
    if (zip::finding_id(f.kind) == "unknown") fail("finding of an unknown kind");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ckptkit::MemorySource src(std::span<const uint8_t>(data, size), "in.pt");
  zip::Limits limits;
  limits.max_inflated_entry = 1 << 20;  // keep deflate bombs cheap
  auto archive = zip::read_archive(src, limits);
  if (!archive.is_ok()) {
    check_rejection(archive.status(), size);
    return 0;
  }
  const zip::Archive& a = *archive;
  check_archive(a, size);

  if (!a.entries.empty()) {
    zip::Limits tight = limits;
    tight.max_entries = a.entries.size() - 1;
    auto limited = zip::read_archive(src, tight);
    if (limited.is_ok() || limited.status().code() != ckptkit::ErrorCode::kLimitExceeded)
      fail("one entry over max_entries is not refused as LimitExceeded");
    check_rejection(limited.status(), size);
  }

  // Entries may all point at the same bytes: reading a bounded number keeps inputs fast.
  const size_t n = std::min<size_t>(a.entries.size(), 64);
  for (size_t i = 0; i < n; ++i) {
    const zip::Entry& e = a.entries[i];
    auto whole = zip::read_entry(src, e, limits);
    if (whole.is_ok()) {
      if (whole->size() != e.uncompressed_size) fail("read_entry size differs from the entry's");
      const auto crc = static_cast<uint32_t>(crc32_z(0, whole->data(), whole->size()));
      if (crc != e.crc32) fail("read_entry accepted a CRC mismatch");
    } else {
      check_rejection(whole.status(), size);
    }
    for (uint64_t max_bytes : {uint64_t{0}, uint64_t{7}, uint64_t{300}}) {
      auto prefix = zip::read_entry_prefix(src, e, max_bytes);
      if (!prefix.is_ok()) {
        check_rejection(prefix.status(), size);
        // A prefix stops early; it can only fail where reading the whole entry fails too.
        if (whole.is_ok()) fail("read_entry_prefix fails on an entry read_entry reads");
        continue;
      }
      if (prefix->size() != std::min(max_bytes, e.uncompressed_size))
        fail("read_entry_prefix returned the wrong number of bytes");
      if (whole.is_ok() && !std::equal(prefix->begin(), prefix->end(), whole->begin()))
        fail("read_entry_prefix differs from the start of read_entry");
    }
  }
  return 0;
}
