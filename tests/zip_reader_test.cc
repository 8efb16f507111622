// The ZIP reader (src/formats/torch/zip.h): archives written byte by byte with chosen field
// values (every finding kind, every error class, ZIP64 fields and their overflow cases) and
// archives written by Python's zipfile and by torch.save, whose own reading of the entries is
// the oracle.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "formats/torch/zip.h"
#include "io/file.h"
#include "io/source.h"
#include "test_util.h"

namespace ckptkit::zip {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint64_t kM32 = 0xFFFFFFFF;

Bytes bytes_of(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes ramp(size_t n, unsigned seed = 0) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>((i * 7 + seed) % 251);
  return b;
}

void put(Bytes& b, uint64_t v, int width) {
  for (int i = 0; i < width; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void set(Bytes& b, uint64_t at, uint64_t v, int width) {
  for (int i = 0; i < width; ++i)
    b[at + static_cast<uint64_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}
void append(Bytes& b, std::span<const uint8_t> more) {
  b.insert(b.end(), more.begin(), more.end());
}
void append(Bytes& b, std::string_view more) { b.insert(b.end(), more.begin(), more.end()); }

uint32_t crc_of(std::span<const uint8_t> data) {
  return static_cast<uint32_t>(crc32_z(0, data.data(), data.size()));
}

Bytes deflate_raw(std::span<const uint8_t> data) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes out(deflateBound(&zs, data.size()));
  zs.next_in = const_cast<uint8_t*>(data.data());
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// --- archives byte by byte --------------------------------------------------------------------

/// One entry; every optional overrides what a correct writer would put there.
struct TestEntry {
  std::string name;
  Bytes data;  ///< the uncompressed content
  uint16_t method = 0;
  uint16_t flags = 0;
  std::optional<Bytes> payload;  ///< the stored bytes (default: data, deflated for method 8)
  std::optional<uint32_t> crc;
  std::optional<uint64_t> csize, usize;  ///< central directory sizes
  std::optional<std::string> local_name;
  std::optional<uint16_t> local_method;
  std::optional<std::pair<uint32_t, uint32_t>> local_sizes;  ///< compressed, uncompressed
  Bytes local_extra, central_extra;
  std::optional<uint64_t> lho;  ///< central local header offset, relative to the archive start
  uint16_t disk = 0;
  bool zip64 = false;       ///< all three 32-bit fields marked, values in a ZIP64 extra field
  bool descriptor = false;  ///< flag bit 3, zero local CRC/sizes, 16-byte data descriptor
  Bytes gap;                ///< bytes after the entry's data (and descriptor)
};

struct Spec {
  Bytes prefix;
  bool relative = false;  ///< offsets count from the end of `prefix`
  std::string comment;
  Bytes trailing;
  bool zip64 = false;  ///< ZIP64 end record + locator; the end record holds only markers
  std::optional<uint64_t> count, cd_size, cd_offset, locator_offset;
  uint32_t disk = 0;
};

struct Built {
  Bytes bytes;
  std::vector<uint64_t> local, central, data;  ///< absolute offsets per entry
  uint64_t cd = 0, zip64_eocd = 0, locator = 0, eocd = 0;
};

Built build(const std::vector<TestEntry>& entries, const Spec& spec = {}) {
  Built b;
  b.bytes = spec.prefix;
  const uint64_t base = spec.relative ? spec.prefix.size() : 0;  // subtracted from offsets
  struct Rec {
    uint32_t crc;
    uint64_t csize, usize, lho;
    uint16_t flags;
  };
  std::vector<Rec> recs;
  for (const TestEntry& e : entries) {
    const Bytes payload = e.payload ? *e.payload : e.method == 8 ? deflate_raw(e.data) : e.data;
    const uint32_t crc = e.crc.value_or(crc_of(e.data));
    const uint16_t flags = static_cast<uint16_t>(e.flags | (e.descriptor ? 8 : 0));
    const std::string lname = e.local_name.value_or(e.name);
    auto [lc, lu] = e.local_sizes.value_or(std::pair<uint32_t, uint32_t>(
        static_cast<uint32_t>(payload.size()), static_cast<uint32_t>(e.data.size())));
    const uint64_t lho = b.bytes.size();
    b.local.push_back(lho);
    put(b.bytes, 0x04034b50, 4);
    put(b.bytes, 20, 2);
    put(b.bytes, flags, 2);
    put(b.bytes, e.local_method.value_or(e.method), 2);
    put(b.bytes, 0x21, 4);
    put(b.bytes, e.descriptor ? 0 : crc, 4);
    put(b.bytes, e.descriptor ? 0 : lc, 4);
    put(b.bytes, e.descriptor ? 0 : lu, 4);
    put(b.bytes, lname.size(), 2);
    put(b.bytes, e.local_extra.size(), 2);
    append(b.bytes, lname);
    append(b.bytes, e.local_extra);
    b.data.push_back(b.bytes.size());
    append(b.bytes, payload);
    if (e.descriptor) {
      put(b.bytes, 0x08074b50, 4);
      put(b.bytes, crc, 4);
      put(b.bytes, payload.size(), 4);
      put(b.bytes, e.data.size(), 4);
    }
    append(b.bytes, e.gap);
    recs.push_back({crc, e.csize.value_or(payload.size()), e.usize.value_or(e.data.size()),
                    e.lho.value_or(lho - base), flags});
  }
  b.cd = b.bytes.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    const TestEntry& e = entries[i];
    const Rec& r = recs[i];
    Bytes extra;
    uint64_t c32 = r.csize, u32 = r.usize, o32 = r.lho;
    if (e.zip64) {
      put(extra, 1, 2);
      put(extra, 24, 2);
      put(extra, r.usize, 8);
      put(extra, r.csize, 8);
      put(extra, r.lho, 8);
      c32 = u32 = o32 = kM32;
    }
    append(extra, e.central_extra);
    b.central.push_back(b.bytes.size());
    put(b.bytes, 0x02014b50, 4);
    put(b.bytes, 45, 2);
    put(b.bytes, 20, 2);
    put(b.bytes, r.flags, 2);
    put(b.bytes, e.method, 2);
    put(b.bytes, 0x21, 4);
    put(b.bytes, r.crc, 4);
    put(b.bytes, c32, 4);
    put(b.bytes, u32, 4);
    put(b.bytes, e.name.size(), 2);
    put(b.bytes, extra.size(), 2);
    put(b.bytes, 0, 2);  // comment
    put(b.bytes, e.disk, 2);
    put(b.bytes, 0, 6);  // attributes
    put(b.bytes, o32, 4);
    append(b.bytes, e.name);
    append(b.bytes, extra);
  }
  const uint64_t n = spec.count.value_or(entries.size());
  const uint64_t cd_size = spec.cd_size.value_or(b.bytes.size() - b.cd);
  const uint64_t cd_offset = spec.cd_offset.value_or(b.cd - base);
  if (spec.zip64) {
    b.zip64_eocd = b.bytes.size();
    put(b.bytes, 0x06064b50, 4);
    put(b.bytes, 44, 8);
    put(b.bytes, 45, 2);
    put(b.bytes, 45, 2);
    put(b.bytes, spec.disk, 4);
    put(b.bytes, spec.disk, 4);
    put(b.bytes, n, 8);
    put(b.bytes, n, 8);
    put(b.bytes, cd_size, 8);
    put(b.bytes, cd_offset, 8);
    b.locator = b.bytes.size();
    put(b.bytes, 0x07064b50, 4);
    put(b.bytes, 0, 4);
    put(b.bytes, spec.locator_offset.value_or(b.zip64_eocd - base), 8);
    put(b.bytes, 1, 4);
  }
  b.eocd = b.bytes.size();
  put(b.bytes, 0x06054b50, 4);
  put(b.bytes, spec.zip64 ? 0xFFFF : spec.disk, 2);
  put(b.bytes, spec.zip64 ? 0xFFFF : spec.disk, 2);
  put(b.bytes, spec.zip64 ? 0xFFFF : n, 2);
  put(b.bytes, spec.zip64 ? 0xFFFF : n, 2);
  put(b.bytes, spec.zip64 ? kM32 : cd_size, 4);
  put(b.bytes, spec.zip64 ? kM32 : cd_offset, 4);
  put(b.bytes, spec.comment.size(), 2);
  append(b.bytes, spec.comment);
  append(b.bytes, spec.trailing);
  return b;
}

/// Three stored entries under one root, as torch names them.
std::vector<TestEntry> three() {
  std::vector<TestEntry> e(3);
  e[0].name = "archive/data.pkl";
  e[0].data = bytes_of("\x80\x02}q\x00.");
  e[1].name = "archive/data/0";
  e[1].data = ramp(100);
  e[2].name = "archive/version";
  e[2].data = bytes_of("3\n");
  return e;
}

TestEntry one(std::string name, Bytes data, uint16_t method = 0) {
  TestEntry e;
  e.name = std::move(name);
  e.data = std::move(data);
  e.method = method;
  return e;
}

Result<Archive> parse(const Bytes& bytes, const Limits& limits = {}) {
  MemorySource src(bytes, "t.zip");
  return read_archive(src, limits);
}

Archive parse_ok(const Bytes& bytes, const Limits& limits = {}) {
  auto r = parse(bytes, limits);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? std::move(r).value() : Archive{};
}

std::string hex(uint64_t v) { return fmt::format(":{:#x}:", v); }

void expect_status(const Status& s, ErrorCode code, uint64_t offset, std::string_view part) {
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_EQ(s.offset(), offset) << s.to_string();
  EXPECT_NE(s.message().find(part), std::string::npos)
      << "message lacks '" << part << "': " << s.to_string();
  EXPECT_EQ(s.path(), "t.zip");
  const std::string line = s.to_string();
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  EXPECT_EQ(line.rfind("t.zip" + hex(offset), 0), 0u) << line;
}

void expect_error(const Bytes& bytes, ErrorCode code, uint64_t offset, std::string_view part,
                  const Limits& limits = {}) {
  auto r = parse(bytes, limits);
  ASSERT_FALSE(r.is_ok()) << "accepted an archive that breaks a rule";
  expect_status(r.status(), code, offset, part);
}

Status entry_error(const Bytes& bytes, size_t index, const Limits& limits = {}) {
  MemorySource src(bytes, "t.zip");
  auto a = read_archive(src, limits);
  EXPECT_TRUE(a.is_ok()) << a.status().to_string();
  if (!a.is_ok() || index >= a->entries.size()) return Status(ErrorCode::kInternal, "no entry");
  auto r = read_entry(src, a->entries[index], limits);
  EXPECT_FALSE(r.is_ok()) << "read_entry accepted a broken entry";
  return r.status();
}

Bytes read_ok(const Bytes& bytes, const Entry& e, const Limits& limits = {}) {
  MemorySource src(bytes, "t.zip");
  auto r = read_entry(src, e, limits);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? std::move(r).value() : Bytes{};
}

std::vector<const Finding*> of_kind(const Archive& a, FindingKind kind) {
  std::vector<const Finding*> out;
  for (const Finding& f : a.findings)
    if (f.kind == kind) out.push_back(&f);
  return out;
}

std::string kinds(const Archive& a) {
  std::string s;
  for (const Finding& f : a.findings)
    s += std::string(finding_id(f.kind)) + ": " + f.message + "\n";
  return s;
}

constexpr ErrorCode kCorrupt = ErrorCode::kCorrupt;
constexpr ErrorCode kUnsupported = ErrorCode::kUnsupported;
constexpr ErrorCode kLimit = ErrorCode::kLimitExceeded;

// --- readable archives -------------------------------------------------------------------------

TEST(ZipRead, StoredEntries) {
  const auto entries = three();
  const Built b = build(entries);
  const Archive a = parse_ok(b.bytes);
  ASSERT_EQ(a.entries.size(), 3u);
  EXPECT_TRUE(a.findings.empty()) << kinds(a);
  EXPECT_EQ(a.archive_start, 0u);
  EXPECT_EQ(a.central_directory_offset, b.cd);
  EXPECT_EQ(a.eocd_offset, b.eocd);
  EXPECT_FALSE(a.zip64);
  for (size_t i = 0; i < 3; ++i) {
    const Entry& e = a.entries[i];
    EXPECT_EQ(e.name, entries[i].name);
    EXPECT_EQ(e.method, kMethodStored);
    EXPECT_EQ(e.compressed_size, entries[i].data.size());
    EXPECT_EQ(e.uncompressed_size, entries[i].data.size());
    EXPECT_EQ(e.crc32, crc_of(entries[i].data));
    EXPECT_EQ(e.local_header_offset, b.local[i]);
    EXPECT_EQ(e.central_offset, b.central[i]);
    EXPECT_EQ(e.data_offset, b.data[i]);
    EXPECT_EQ(read_ok(b.bytes, e), entries[i].data);
  }
}

TEST(ZipRead, DeflatedEntriesAndPrefixes) {
  std::vector<TestEntry> entries = {one("r/big", ramp(200000, 3), 8), one("r/text", {}, 8),
                                    one("r/stored", ramp(40))};
  for (int i = 0; i < 500; ++i) append(entries[1].data, "the quick brown fox ");
  const Built b = build(entries);
  const Archive a = parse_ok(b.bytes);
  ASSERT_EQ(a.entries.size(), 3u);
  MemorySource src(b.bytes, "t.zip");
  for (size_t i = 0; i < 3; ++i) {
    const Entry& e = a.entries[i];
    EXPECT_EQ(e.method, entries[i].method);
    EXPECT_EQ(e.uncompressed_size, entries[i].data.size());
    EXPECT_EQ(read_ok(b.bytes, e), entries[i].data);
    for (uint64_t n : {0ul, 1ul, 10ul, 5000ul, 1ul << 30}) {
      auto p = read_entry_prefix(src, e, n);
      ASSERT_TRUE(p.is_ok()) << p.status().to_string();
      const size_t want = std::min<size_t>(n, entries[i].data.size());
      EXPECT_EQ(*p, Bytes(entries[i].data.begin(), entries[i].data.begin() + want)) << n;
    }
  }
  EXPECT_LT(a.entries[1].compressed_size, a.entries[1].uncompressed_size / 10);
}

TEST(ZipRead, EmptyArchive) {
  const Built b = build({});
  ASSERT_EQ(b.bytes.size(), 22u);
  const Archive a = parse_ok(b.bytes);
  EXPECT_TRUE(a.entries.empty());
  EXPECT_TRUE(a.findings.empty()) << kinds(a);
  EXPECT_EQ(a.eocd_offset, 0u);
  EXPECT_EQ(a.archive_start, 0u);
}

TEST(ZipRead, EmptyEntries) {
  TestEntry no_stream = one("r/a", {}, 8);
  no_stream.payload = Bytes{};  // some writers store nothing at all for an empty file
  const Built b = build({one("r/s", {}), one("r/d", {}, 8), no_stream});
  const Archive a = parse_ok(b.bytes);
  ASSERT_EQ(a.entries.size(), 3u);
  EXPECT_EQ(a.entries[1].compressed_size, 2u);  // the empty deflate stream 03 00
  for (const Entry& e : a.entries) EXPECT_TRUE(read_ok(b.bytes, e).empty());
}

TEST(ZipRead, FindReturnsTheFirstEntryOfAName) {
  const Built b = build(
      {one("r/a", bytes_of("one")), one("r/b", bytes_of("two")), one("r/a", bytes_of("three"))});
  const Archive a = parse_ok(b.bytes);
  ASSERT_NE(a.find("r/a"), nullptr);
  EXPECT_EQ(a.find("r/a"), &a.entries[0]);
  EXPECT_EQ(a.find("r/b"), &a.entries[1]);
  EXPECT_EQ(a.find("r/"), nullptr);
  EXPECT_EQ(a.find("r/ab"), nullptr);
}

TEST(ZipRead, TorchLayoutWithPaddingAndDescriptorsHasNoFindings) {
  // torch.save: flags 0x808, data descriptors, data aligned to 64 by an "FB" extra field.
  std::vector<TestEntry> entries = three();
  uint64_t offset = 0;
  for (TestEntry& e : entries) {
    e.flags = 0x800;
    e.descriptor = true;
    const uint64_t start = offset + 30 + e.name.size() + 4;
    const uint64_t pad = (64 - start % 64) % 64;
    e.local_extra = bytes_of("FB");
    put(e.local_extra, pad, 2);
    e.local_extra.resize(4 + pad, 'Z');
    offset += 30 + e.name.size() + e.local_extra.size() + e.data.size() + 16;
  }
  const Built b = build(entries);
  const Archive a = parse_ok(b.bytes);
  ASSERT_EQ(a.entries.size(), 3u);
  EXPECT_TRUE(a.findings.empty()) << kinds(a);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a.entries[i].data_offset % 64, 0u) << a.entries[i].name;
    EXPECT_EQ(a.entries[i].data_offset, b.data[i]);
    EXPECT_EQ(read_ok(b.bytes, a.entries[i]), entries[i].data);
  }
}

TEST(ZipRead, Comment) {
  Spec spec;
  spec.comment = "made by hand";
  const Built b = build(three(), spec);
  const Archive a = parse_ok(b.bytes);
  EXPECT_EQ(a.entries.size(), 3u);
  ASSERT_EQ(a.findings.size(), 1u) << kinds(a);
  EXPECT_EQ(a.findings[0].kind, FindingKind::kArchiveComment);
  EXPECT_EQ(a.findings[0].offset, b.eocd + 22);
  EXPECT_NE(a.findings[0].message.find("12-byte comment"), std::string::npos);
}

TEST(ZipRead, CommentContainingAnEndRecordSignature) {
  // The record whose comment reaches exactly the end of the file wins over a fake one inside it.
  Spec spec;
  spec.comment = std::string("xxPK\x05\x06", 6) + std::string(16, '\0') + "tail";
  const Built b = build(three(), spec);
  const Archive a = parse_ok(b.bytes);
  EXPECT_EQ(a.eocd_offset, b.eocd);
  EXPECT_EQ(a.entries.size(), 3u);
  EXPECT_TRUE(of_kind(a, FindingKind::kDataAfterArchive).empty()) << kinds(a);
}

/// Counts reads, to check that the reader does not read the central directory record by record.
class CountingSource final : public ByteSource {
 public:
  explicit CountingSource(const Bytes& bytes) : inner_(bytes, "t.zip") {}
  uint64_t size() const override { return inner_.size(); }
  const std::string& path() const override { return inner_.path(); }
  Status read(std::span<uint8_t> out, uint64_t offset, std::string_view what) const override {
    ++reads;
    bytes_read += out.size();
    return inner_.read(out, offset, what);
  }
  mutable uint64_t reads = 0;
  mutable uint64_t bytes_read = 0;

 private:
  MemorySource inner_;
};

TEST(ZipRead, ManyEntriesTakeOneReadPerLocalHeader) {
  // An SD1.5 checkpoint has ~1200 entries: the directory is read at once and each local header
  // with a single small read (torch's 64-byte padding included).
  std::vector<TestEntry> entries;
  uint64_t offset = 0;
  for (int i = 0; i < 1200; ++i) {
    TestEntry e = one(fmt::format("archive/data/{}", i), ramp(40 + i % 7, i));
    const uint64_t start = offset + 30 + e.name.size() + 4;
    const uint64_t pad = (64 - start % 64) % 64;
    e.local_extra = bytes_of("FB");
    put(e.local_extra, pad, 2);
    e.local_extra.resize(4 + pad, 'Z');
    offset += 30 + e.name.size() + e.local_extra.size() + e.data.size();
    entries.push_back(std::move(e));
  }
  const Built b = build(entries);
  CountingSource src(b.bytes);
  auto a = read_archive(src);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->entries.size(), 1200u);
  EXPECT_TRUE(a->findings.empty()) << kinds(*a);
  EXPECT_LE(src.reads, 1200u + 3) << "more than one read per local header";
  // Local headers are read with little slack, not in large blocks.
  EXPECT_LT(src.bytes_read, b.bytes.size() + 65557 + 1200u * 200) << src.bytes_read;
  for (size_t i : {0ul, 599ul, 1199ul}) {
    EXPECT_EQ(a->entries[i].data_offset % 64, 0u);
    EXPECT_EQ(read_ok(b.bytes, a->entries[i]), entries[i].data);
  }
}

// --- ZIP64 ------------------------------------------------------------------------------------

TEST(ZipRead, Zip64RecordsAndExtraFields) {
  std::vector<TestEntry> entries = {one("archive/data/0", ramp(70)),
                                    one("archive/data/1", ramp(900), 8)};
  for (TestEntry& e : entries) e.zip64 = true;
  Spec spec;
  spec.zip64 = true;
  const Built b = build(entries, spec);
  const Archive a = parse_ok(b.bytes);
  EXPECT_TRUE(a.zip64);
  EXPECT_EQ(a.eocd_offset, b.eocd);
  EXPECT_EQ(a.central_directory_offset, b.cd);
  EXPECT_TRUE(a.findings.empty()) << kinds(a);
  ASSERT_EQ(a.entries.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a.entries[i].local_header_offset, b.local[i]);
    EXPECT_EQ(a.entries[i].uncompressed_size, entries[i].data.size());
    EXPECT_EQ(read_ok(b.bytes, a.entries[i]), entries[i].data);
  }
}

TEST(ZipRead, Zip64ExtraHoldsOnlyTheMarkedFieldsInOrder) {
  // Entry 0: only the uncompressed size is marked; the field holds one value.
  // Entry 1: compressed size and local header offset are marked; the field holds them in that
  // order (uncompressed size stays in its 32-bit field). A reader that takes fixed positions in
  // the ZIP64 field gets both wrong.
  std::vector<TestEntry> entries = {one("r/a", ramp(50)), one("r/b", ramp(60))};
  entries[0].usize = kM32;
  put(entries[0].central_extra, 1, 2);
  put(entries[0].central_extra, 8, 2);
  put(entries[0].central_extra, 50, 8);
  entries[0].usize = kM32;
  entries[0].csize = 50;
  const Built probe = build(entries);
  entries[1].csize = kM32;
  entries[1].lho = kM32;
  put(entries[1].central_extra, 1, 2);
  put(entries[1].central_extra, 16, 2);
  put(entries[1].central_extra, 60, 8);
  put(entries[1].central_extra, probe.local[1], 8);
  // The stored entry's 32-bit sizes must agree except where marked: usize stays 60.
  const Built b = build(entries);
  const Archive a = parse_ok(b.bytes);
  ASSERT_EQ(a.entries.size(), 2u);
  EXPECT_EQ(a.entries[0].uncompressed_size, 50u);
  EXPECT_EQ(a.entries[0].compressed_size, 50u);
  EXPECT_EQ(a.entries[1].compressed_size, 60u);
  EXPECT_EQ(a.entries[1].uncompressed_size, 60u);
  EXPECT_EQ(a.entries[1].local_header_offset, b.local[1]);
  EXPECT_TRUE(a.zip64);
  EXPECT_EQ(read_ok(b.bytes, a.entries[1]), entries[1].data);
}

TEST(ZipRead, Zip64ExtraAfterOtherExtraFields) {
  TestEntry e = one("r/a", ramp(30));
  e.zip64 = true;
  const Built plain = build({e});
  // Put an unrelated extra field first: the reader must walk the records to find id 0x0001.
  e.zip64 = false;
  e.usize = e.csize = kM32;
  e.lho = kM32;
  e.central_extra = bytes_of("UT");
  put(e.central_extra, 5, 2);
  append(e.central_extra, "\x01\x02\x03\x04\x05");
  put(e.central_extra, 1, 2);
  put(e.central_extra, 24, 2);
  put(e.central_extra, 30, 8);
  put(e.central_extra, 30, 8);
  put(e.central_extra, plain.local[0], 8);
  const Built b = build({e});
  const Archive a = parse_ok(b.bytes);
  ASSERT_EQ(a.entries.size(), 1u);
  EXPECT_EQ(a.entries[0].compressed_size, 30u);
  EXPECT_EQ(read_ok(b.bytes, a.entries[0]), e.data);
}

// --- findings ---------------------------------------------------------------------------------

TEST(ZipFindings, DataBeforeArchiveWithAbsoluteOffsets) {
  Spec spec;
  spec.prefix = bytes_of("#!/bin/sh\nexit 0\n");
  const Built b = build(three(), spec);
  const Archive a = parse_ok(b.bytes);
  EXPECT_EQ(a.archive_start, 17u);
  ASSERT_EQ(a.findings.size(), 1u) << kinds(a);
  EXPECT_EQ(a.findings[0].kind, FindingKind::kDataBeforeArchive);
  EXPECT_EQ(a.findings[0].offset, 0u);
  EXPECT_EQ(a.entries[0].local_header_offset, 17u);
  EXPECT_EQ(read_ok(b.bytes, a.entries[1]), ramp(100));
}

TEST(ZipFindings, DataBeforeArchiveWithRelativeOffsets) {
  Spec spec;
  spec.prefix = bytes_of("GIF89a........");
  spec.relative = true;
  const Built b = build(three(), spec);
  const Archive a = parse_ok(b.bytes);
  EXPECT_EQ(a.archive_start, 14u);
  EXPECT_EQ(a.central_directory_offset, b.cd);
  ASSERT_EQ(a.entries.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(a.entries[i].local_header_offset, b.local[i]);
  EXPECT_EQ(read_ok(b.bytes, a.entries[1]), ramp(100));
  auto f = of_kind(a, FindingKind::kDataBeforeArchive);
  ASSERT_EQ(f.size(), 1u) << kinds(a);
  EXPECT_NE(f[0]->message.find("offsets count from its own start"), std::string::npos);
  EXPECT_EQ(a.findings.size(), 1u) << kinds(a);
}

TEST(ZipFindings, Zip64WithRelativeOffsets) {
  std::vector<TestEntry> entries = {one("r/a", ramp(20))};
  entries[0].zip64 = true;
  Spec spec;
  spec.prefix = Bytes(100, 'x');
  spec.relative = true;
  spec.zip64 = true;
  const Built b = build(entries, spec);
  const Archive a = parse_ok(b.bytes);
  ASSERT_EQ(a.entries.size(), 1u);
  EXPECT_EQ(a.entries[0].local_header_offset, 100u);
  EXPECT_EQ(a.archive_start, 100u);
  EXPECT_EQ(of_kind(a, FindingKind::kDataBeforeArchive).size(), 1u) << kinds(a);
  EXPECT_EQ(read_ok(b.bytes, a.entries[0]), ramp(20));
}

TEST(ZipFindings, SecondArchiveBeforeTheArchive) {
  const Built first = build({one("x/1", bytes_of("first"))});
  Spec spec;
  spec.prefix = first.bytes;
  spec.relative = true;  // `cat first.zip second.zip`
  const Built b = build(three(), spec);
  const Archive a = parse_ok(b.bytes);
  ASSERT_EQ(a.entries.size(), 3u);
  EXPECT_EQ(a.entries[0].name, "archive/data.pkl");
  auto second = of_kind(a, FindingKind::kSecondArchive);
  ASSERT_EQ(second.size(), 1u) << kinds(a);
  EXPECT_EQ(second[0]->offset, first.eocd);
  EXPECT_EQ(of_kind(a, FindingKind::kDataBeforeArchive).size(), 1u);
}

TEST(ZipFindings, PrefixWithoutAnArchiveIsNotASecondArchive) {
  Spec spec;
  spec.prefix = bytes_of("PK\x05\x06 but nothing after it that makes a directory.....");
  const Built b = build(three(), spec);
  const Archive a = parse_ok(b.bytes);
  EXPECT_TRUE(of_kind(a, FindingKind::kSecondArchive).empty()) << kinds(a);
  EXPECT_EQ(of_kind(a, FindingKind::kDataBeforeArchive).size(), 1u);
}

TEST(ZipFindings, DataAfterArchive) {
  Spec spec;
  spec.trailing = Bytes(33, 0);
  const Built b = build(three(), spec);
  const Archive a = parse_ok(b.bytes);
  EXPECT_EQ(a.eocd_offset, b.eocd);
  ASSERT_EQ(a.findings.size(), 1u) << kinds(a);
  EXPECT_EQ(a.findings[0].kind, FindingKind::kDataAfterArchive);
  EXPECT_EQ(a.findings[0].offset, b.eocd + 22);
  EXPECT_NE(a.findings[0].message.find("33 bytes"), std::string::npos);
}

TEST(ZipFindings, SecondArchiveAfterTheArchive) {
  // `cat first.zip second.zip` plus one byte: the last end record that fits is the second
  // archive's, which is read (its offsets count from its own start); the first is reported.
  const Built second = build({one("x/1", bytes_of("second"))});
  Spec spec;
  spec.trailing = second.bytes;
  spec.trailing.push_back('!');
  const Built b = build(three(), spec);
  const Archive a = parse_ok(b.bytes);
  EXPECT_EQ(a.eocd_offset, b.eocd + 22 + second.eocd);
  ASSERT_EQ(a.entries.size(), 1u);
  EXPECT_EQ(a.entries[0].name, "x/1");
  EXPECT_EQ(read_ok(b.bytes, a.entries[0]), bytes_of("second"));
  auto other = of_kind(a, FindingKind::kSecondArchive);
  ASSERT_EQ(other.size(), 1u) << kinds(a);
  EXPECT_EQ(other[0]->offset, b.eocd);
  EXPECT_EQ(of_kind(a, FindingKind::kDataAfterArchive).size(), 1u) << kinds(a);
  EXPECT_EQ(of_kind(a, FindingKind::kDataBeforeArchive).size(), 1u) << kinds(a);
}

TEST(ZipFindings, SecondEndRecordInTrailingBytes) {
  // A copy of the end record after the archive whose comment length runs past the end of the
  // file: it is not the one read, but it heads the same directory and is reported.
  const Built b = build(three());
  Bytes glued = b.bytes;
  append(glued, "JUNK");
  Bytes copy(b.bytes.end() - 22, b.bytes.end());
  set(copy, 20, 255, 2);
  append(glued, copy);
  const Archive a = parse_ok(glued);
  EXPECT_EQ(a.eocd_offset, b.eocd);
  EXPECT_EQ(a.entries.size(), 3u);
  auto other = of_kind(a, FindingKind::kSecondArchive);
  ASSERT_EQ(other.size(), 1u) << kinds(a);
  EXPECT_EQ(other[0]->offset, b.bytes.size() + 4);
  auto after = of_kind(a, FindingKind::kDataAfterArchive);
  ASSERT_EQ(after.size(), 1u) << kinds(a);
  EXPECT_EQ(after[0]->offset, b.bytes.size());
}

TEST(ZipFindings, GapsBetweenEntries) {
  std::vector<TestEntry> entries = three();
  entries[0].gap = bytes_of("HIDDEN");
  entries[2].gap = Bytes(16, 0);  // as long as a data descriptor, but no flag says there is one
  const Built b = build(entries);
  const Archive a = parse_ok(b.bytes);
  auto gaps = of_kind(a, FindingKind::kGapBetweenEntries);
  ASSERT_EQ(gaps.size(), 2u) << kinds(a);
  EXPECT_EQ(gaps[0]->offset, b.data[0] + entries[0].data.size());
  EXPECT_EQ(gaps[0]->entry, "archive/data/0");
  EXPECT_NE(gaps[0]->message.find("6 bytes"), std::string::npos);
  EXPECT_EQ(gaps[1]->offset, b.data[2] + 2);
  EXPECT_NE(gaps[1]->message.find("central directory"), std::string::npos);
  EXPECT_EQ(a.findings.size(), 2u) << kinds(a);
}

TEST(ZipFindings, DescriptorGapsAreNotGapsButLongerOnesAre) {
  std::vector<TestEntry> entries = three();
  for (TestEntry& e : entries) e.descriptor = true;
  entries[1].gap = Bytes(8, 0);  // 16 + 8 = 24: a 64-bit descriptor, still allowed
  entries[2].gap = Bytes(9, 0);  // 25 bytes: more than any descriptor
  const Built b = build(entries);
  const Archive a = parse_ok(b.bytes);
  auto gaps = of_kind(a, FindingKind::kGapBetweenEntries);
  ASSERT_EQ(gaps.size(), 1u) << kinds(a);
  EXPECT_EQ(gaps[0]->offset, b.data[2] + 2);
}

TEST(ZipFindings, GapBetweenDirectoryAndEndRecord) {
  const Built plain = build(three());
  Bytes bytes(plain.bytes.begin(), plain.bytes.begin() + static_cast<long>(plain.eocd));
  append(bytes, "XXXXXXXX");
  append(bytes, std::span<const uint8_t>(plain.bytes).subspan(plain.eocd));
  const Archive a = parse_ok(bytes);
  EXPECT_EQ(a.entries.size(), 3u);
  EXPECT_EQ(a.central_directory_offset, plain.cd);
  auto gaps = of_kind(a, FindingKind::kGapBetweenEntries);
  ASSERT_EQ(gaps.size(), 1u) << kinds(a);
  EXPECT_EQ(gaps[0]->offset, plain.eocd);
  EXPECT_TRUE(of_kind(a, FindingKind::kDataBeforeArchive).empty()) << kinds(a);
}

TEST(ZipFindings, OverlappingEntries) {
  // Entry 1's record points into entry 0's bytes (same local header): both read the same data.
  std::vector<TestEntry> entries = {one("r/a", ramp(40)), one("r/b", ramp(40)),
                                    one("r/c", ramp(10))};
  entries[1].lho = 0;
  const Built b = build(entries);
  const Archive a = parse_ok(b.bytes);
  auto over = of_kind(a, FindingKind::kOverlappingEntries);
  ASSERT_EQ(over.size(), 1u) << kinds(a);
  EXPECT_EQ(over[0]->entry, "r/b");
  EXPECT_EQ(over[0]->offset, 0u);
  EXPECT_NE(over[0]->message.find("same bytes"), std::string::npos);
  // r/b's own local header is now unreferenced: a gap.
  EXPECT_EQ(of_kind(a, FindingKind::kGapBetweenEntries).size(), 1u) << kinds(a);
  EXPECT_EQ(read_ok(b.bytes, a.entries[1]), ramp(40));
}

TEST(ZipFindings, OverlapOnlyByTheDataRange) {
  // Entry 1's local header starts inside entry 0's data, not at its header.
  std::vector<TestEntry> entries = {one("r/a", Bytes(60, 'a')), one("r/b", ramp(5))};
  const Built probe = build(entries);
  // Hide a complete local header for r/b inside r/a's data.
  Bytes inner;
  put(inner, 0x04034b50, 4);
  put(inner, 20, 2);
  put(inner, 0, 4);
  put(inner, 0x21, 4);
  put(inner, crc_of(ramp(5)), 4);
  put(inner, 5, 4);
  put(inner, 5, 4);
  put(inner, 3, 2);
  put(inner, 0, 2);
  append(inner, "r/b");
  append(inner, ramp(5));
  entries[0].data = Bytes(10, 'a');
  append(entries[0].data, inner);
  entries[0].data.resize(60, 'a');
  entries[1].lho = probe.data[0] + 10;
  const Built b = build(entries);
  const Archive a = parse_ok(b.bytes);
  auto over = of_kind(a, FindingKind::kOverlappingEntries);
  ASSERT_EQ(over.size(), 1u) << kinds(a);
  EXPECT_EQ(over[0]->offset, b.data[0] + 10);
  EXPECT_EQ(read_ok(b.bytes, a.entries[1]), ramp(5));
}

TEST(ZipFindings, HeaderMismatch) {
  std::vector<TestEntry> entries = {one("r/a", bytes_of("abc")), one("r/b", bytes_of("def")),
                                    one("r/c", bytes_of("ghi")), one("r/d", bytes_of("jkl")),
                                    one("r/e", bytes_of("mno"))};
  entries[0].local_name = "r/evil";
  entries[1].local_method = 8;
  entries[2].local_sizes = std::pair<uint32_t, uint32_t>(9, 9);
  entries[3].crc = 0x1234;       // central CRC; the local header gets it too...
  entries[4].descriptor = true;  // zero local sizes are fine with a descriptor
  Built b = build(entries);
  set(b.bytes, b.local[3] + 14, crc_of(bytes_of("jkl")), 4);  // ...then the real one
  const Archive a = parse_ok(b.bytes);
  auto mm = of_kind(a, FindingKind::kHeaderMismatch);
  ASSERT_EQ(mm.size(), 4u) << kinds(a);
  EXPECT_EQ(mm[0]->entry, "r/a");
  EXPECT_EQ(mm[0]->offset, b.local[0]);
  EXPECT_NE(mm[0]->message.find("'r/evil'"), std::string::npos);
  EXPECT_EQ(mm[1]->entry, "r/b");
  EXPECT_NE(mm[1]->message.find("compression method 8"), std::string::npos);
  EXPECT_EQ(mm[2]->entry, "r/c");
  EXPECT_NE(mm[2]->message.find("sizes 9/9"), std::string::npos);
  EXPECT_EQ(mm[3]->entry, "r/d");
  EXPECT_NE(mm[3]->message.find("CRC-32"), std::string::npos);
  // The central values are the ones used.
  EXPECT_EQ(a.entries[0].name, "r/a");
  EXPECT_EQ(a.entries[0].data_offset, b.data[0]);
  EXPECT_EQ(a.entries[1].method, kMethodStored);
  EXPECT_EQ(read_ok(b.bytes, a.entries[1]), bytes_of("def"));
  EXPECT_EQ(read_ok(b.bytes, a.entries[2]), bytes_of("ghi"));
}

TEST(ZipFindings, LocalZip64SizesAreCompared) {
  // Python's force_zip64 writes the sizes into a local ZIP64 field; with markers in the 32-bit
  // fields, the values to compare are in it.
  TestEntry e = one("r/a", ramp(20));
  e.local_sizes = std::pair<uint32_t, uint32_t>(kM32, kM32);
  put(e.local_extra, 1, 2);
  put(e.local_extra, 16, 2);
  put(e.local_extra, 20, 8);
  put(e.local_extra, 20, 8);
  EXPECT_TRUE(parse_ok(build({e}).bytes).findings.empty());
  e.local_extra.resize(4);
  put(e.local_extra, 21, 8);  // uncompressed first: says 21
  put(e.local_extra, 20, 8);
  const Archive a = parse_ok(build({e}).bytes);
  ASSERT_EQ(of_kind(a, FindingKind::kHeaderMismatch).size(), 1u) << kinds(a);
}

TEST(ZipFindings, DuplicateNames) {
  const Built b = build({one("r/a", bytes_of("1")), one("r/b", bytes_of("2")),
                         one("r/a", bytes_of("3")), one("r/a", bytes_of("4"))});
  const Archive a = parse_ok(b.bytes);
  auto dup = of_kind(a, FindingKind::kDuplicateName);
  ASSERT_EQ(dup.size(), 2u) << kinds(a);
  EXPECT_EQ(dup[0]->offset, b.central[2]);
  EXPECT_EQ(dup[1]->offset, b.central[3]);
  EXPECT_EQ(dup[0]->entry, "r/a");
  EXPECT_EQ(a.findings.size(), 2u) << kinds(a);
}

TEST(ZipFindings, NamesOutsideTheRoot) {
  const Built b = build({one("other/x", bytes_of("0")), one("r/a", bytes_of("1")),
                         one("r/b", bytes_of("2")), one("r/c/../../d", bytes_of("3")),
                         one("/abs", bytes_of("4")), one("top", bytes_of("5")),
                         one("C:\\win", bytes_of("6")), one("r/.data/serialization_id", {})});
  const Archive a = parse_ok(b.bytes);
  auto out = of_kind(a, FindingKind::kNameOutsideRoot);
  std::vector<std::string> names;
  for (const Finding* f : out) names.push_back(f->entry);
  // The root is the most common first component ("r"), not the first entry's ("other").
  EXPECT_EQ(names, (std::vector<std::string>{"other/x", "r/c/../../d", "/abs", "top", "C:\\win"}))
      << kinds(a);
  EXPECT_NE(out[1]->message.find("'..'"), std::string::npos);
  EXPECT_NE(out[2]->message.find("absolute"), std::string::npos);
  EXPECT_NE(out[4]->message.find("absolute"), std::string::npos);
  EXPECT_EQ(out[0]->offset, b.central[0]);
}

TEST(ZipFindings, ManyFindingsAreSummarized) {
  std::vector<TestEntry> entries;
  for (int i = 0; i < 40; ++i) entries.push_back(one("r/same", bytes_of("x")));
  const Archive a = parse_ok(build(entries).bytes);
  auto dup = of_kind(a, FindingKind::kDuplicateName);
  ASSERT_EQ(dup.size(), 17u);
  EXPECT_NE(dup.back()->message.find("23 more"), std::string::npos) << dup.back()->message;
}

TEST(ZipFindings, FindingIds) {
  EXPECT_EQ(finding_id(FindingKind::kDataBeforeArchive), "data_before_archive");
  EXPECT_EQ(finding_id(FindingKind::kDataAfterArchive), "data_after_archive");
  EXPECT_EQ(finding_id(FindingKind::kSecondArchive), "second_archive");
  EXPECT_EQ(finding_id(FindingKind::kGapBetweenEntries), "gap_between_entries");
  EXPECT_EQ(finding_id(FindingKind::kOverlappingEntries), "overlapping_entries");
  EXPECT_EQ(finding_id(FindingKind::kHeaderMismatch), "header_mismatch");
  EXPECT_EQ(finding_id(FindingKind::kDuplicateName), "duplicate_name");
  EXPECT_EQ(finding_id(FindingKind::kNameOutsideRoot), "name_outside_root");
  EXPECT_EQ(finding_id(FindingKind::kCrcMismatch), "crc_mismatch");
  EXPECT_EQ(finding_id(FindingKind::kArchiveComment), "archive_comment");
}

// --- errors: the end record and the central directory --------------------------------------------

TEST(ZipErrors, TruncatedAnywhere) {
  const Built b = build(three());
  for (uint64_t cut : {0ul, 10ul, 21ul, 22ul, 30ul, b.data[1] + 5, b.cd, b.cd + 50, b.eocd,
                       b.eocd + 10, b.eocd + 21}) {
    const Bytes t(b.bytes.begin(), b.bytes.begin() + static_cast<long>(cut));
    auto r = parse(t);
    ASSERT_FALSE(r.is_ok()) << "accepted a cut at " << cut;
    EXPECT_EQ(r.status().code(), kCorrupt) << r.status().to_string();
    EXPECT_LE(r.status().offset(), cut) << r.status().to_string();
    EXPECT_EQ(r.status().path(), "t.zip");
  }
  expect_error(Bytes(b.bytes.begin(), b.bytes.begin() + 21), kCorrupt, 0, "21 bytes, too short");
  expect_error(Bytes(b.bytes.begin(), b.bytes.begin() + static_cast<long>(b.eocd + 21)), kCorrupt,
               0, "no end of central directory record");
}

TEST(ZipErrors, TruncatedInTheMiddle) {
  // The end record survives but an entry's bytes are gone: every offset after it is wrong.
  const Built b = build(three());
  Bytes t(b.bytes.begin(), b.bytes.begin() + static_cast<long>(b.data[1]));
  append(t, std::span<const uint8_t>(b.bytes).subspan(b.data[1] + 50));
  auto r = parse(t);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), kCorrupt) << r.status().to_string();
}

TEST(ZipErrors, NoEndRecord) {
  Built b = build(three());
  set(b.bytes, b.eocd, 0x07054b50, 4);
  expect_error(b.bytes, kCorrupt, 0, "no end of central directory record");
}

TEST(ZipErrors, CommentPastTheEnd) {
  Built b = build(three());
  set(b.bytes, b.eocd + 20, 500, 2);
  expect_error(b.bytes, kCorrupt, b.eocd + 20, "500-byte comment, which runs 500 bytes past");
}

TEST(ZipErrors, CentralDirectoryOffsetPastTheEnd) {
  Built b = build(three());
  set(b.bytes, b.eocd + 16, 99999, 4);
  expect_error(b.bytes, kCorrupt, b.eocd + 16,
               fmt::format("offset 99999 is past the end of the file ({} bytes)", b.bytes.size()));
}

TEST(ZipErrors, CentralDirectorySizePastTheEndRecord) {
  Built b = build(three());
  set(b.bytes, b.eocd + 12, 9999, 4);
  expect_error(b.bytes, kCorrupt, b.eocd + 12, "would run past the end record");
}

TEST(ZipErrors, CentralDirectoryNotWhereStated) {
  Built b = build(three());
  set(b.bytes, b.cd, 0x02014b51, 4);
  expect_error(b.bytes, kCorrupt, b.cd, "no central directory record");
}

TEST(ZipErrors, CountTooHigh) {
  std::vector<TestEntry> entries = three();
  for (TestEntry& e : entries) e.name += std::string(40, 'n');  // room for a 4th by size
  Spec spec;
  spec.count = 4;
  const Built b = build(entries, spec);
  expect_error(b.bytes, kCorrupt, b.eocd, "ends after 3 of the 4 records");
}

TEST(ZipErrors, CountTooLow) {
  Spec spec;
  spec.count = 2;
  const Built b = build(three(), spec);
  expect_error(b.bytes, kCorrupt, b.central[2], "follow the 2 records");
}

TEST(ZipErrors, CountThatCannotFit) {
  Spec spec;
  spec.count = 0xFFFF;
  const Built b = build(three(), spec);
  expect_error(b.bytes, kCorrupt, b.eocd + 10, "holds at most 3");
}

TEST(ZipErrors, CountsOnDiskDisagree) {
  Built b = build(three());
  set(b.bytes, b.eocd + 8, 2, 2);
  expect_error(b.bytes, kCorrupt, b.eocd + 8, "2 entries on this disk but 3 in total");
}

TEST(ZipErrors, MultiDisk) {
  Built b = build(three());
  set(b.bytes, b.eocd + 4, 1, 2);
  expect_error(b.bytes, kUnsupported, b.eocd + 4, "multi-disk");
  std::vector<TestEntry> entries = three();
  entries[1].disk = 2;
  const Built c = build(entries);
  expect_error(c.bytes, kUnsupported, c.central[1] + 34, "disk 2");
}

TEST(ZipErrors, LimitsAreExact) {
  const Built b = build(three());
  Limits limits;
  limits.max_entries = 3;
  EXPECT_TRUE(parse(b.bytes, limits).is_ok());
  limits.max_entries = 2;
  expect_error(b.bytes, kLimit, b.eocd + 10, "over the limit of 2", limits);
  limits = {};
  limits.max_central_directory = b.eocd - b.cd;
  EXPECT_TRUE(parse(b.bytes, limits).is_ok());
  limits.max_central_directory = b.eocd - b.cd - 1;
  expect_error(b.bytes, kLimit, b.eocd + 12, "over the limit", limits);
}

// --- errors: entries
// -------------------------------------------------------------------------------

TEST(ZipErrors, LocalHeaderOffsetPastTheEnd) {
  Built b = build(three());
  set(b.bytes, b.central[2] + 42, 123456, 4);
  expect_error(b.bytes, kCorrupt, b.central[2] + 42,
               fmt::format("central directory record 2 ('archive/version'): local header offset "
                           "123456 is past the end of the file ({} bytes)",
                           b.bytes.size()));
}

TEST(ZipErrors, LocalHeaderOffsetInsideTheDirectory) {
  Built b = build(three());
  set(b.bytes, b.central[0] + 42, b.cd - 10, 4);
  expect_error(b.bytes, kCorrupt, b.central[0] + 42, "before the central directory");
}

TEST(ZipErrors, NoLocalHeaderAtTheOffset) {
  Built b = build(three());
  set(b.bytes, b.local[1], 0x04034b51, 4);
  expect_error(b.bytes, kCorrupt, b.local[1], "('archive/data/0'): no local file header");
}

TEST(ZipErrors, LocalNameAndExtraRunIntoTheDirectory) {
  Built b = build(three());
  set(b.bytes, b.local[2] + 28, 100, 2);  // fits in the file, not before the directory
  expect_error(b.bytes, kCorrupt, b.local[2] + 26, "(115 bytes) run into the central directory");
  set(b.bytes, b.local[2] + 28, 1000, 2);
  expect_error(b.bytes, kCorrupt, b.local[2] + 26, "run past the end of the file");
}

TEST(ZipErrors, DataPastTheEnd) {
  std::vector<TestEntry> entries = three();
  entries[2].csize = entries[2].usize = 1 << 20;
  const Built b = build(entries);
  expect_error(b.bytes, kCorrupt, b.data[2], "run past the end of the file");
  entries = three();
  entries[0].csize = entries[0].usize = 300;  // fits in the file, not before the directory
  const Built c = build(entries);
  expect_error(c.bytes, kCorrupt, c.data[0], "run into the central directory");
}

TEST(ZipErrors, StoredSizesDiffer) {
  std::vector<TestEntry> entries = three();
  entries[1].usize = 101;
  const Built b = build(entries);
  expect_error(b.bytes, kCorrupt, b.central[1] + 20,
               "compressed size is 100 and its uncompressed size 101");
}

TEST(ZipErrors, Encrypted) {
  std::vector<TestEntry> entries = three();
  entries[1].flags = 1;
  const Built b = build(entries);
  expect_error(b.bytes, kUnsupported, b.central[1] + 8, "encrypted");
  entries[1].flags = 1 << 6;  // strong encryption
  const Built c = build(entries);
  expect_error(c.bytes, kUnsupported, c.central[1] + 8, "encrypted");
}

TEST(ZipErrors, UnsupportedMethod) {
  std::vector<TestEntry> entries = three();
  entries[1].method = 12;
  const Built b = build(entries);
  expect_error(b.bytes, kUnsupported, b.central[1] + 10, "compression method 12 (bzip2)");
}

TEST(ZipErrors, CrcMismatch) {
  std::vector<TestEntry> entries = {one("r/s", ramp(30)), one("r/d", ramp(3000), 8)};
  entries[0].crc = 0x12345678;
  entries[1].crc = crc_of(ramp(3000)) ^ 1;
  const Built b = build(entries);
  expect_status(entry_error(b.bytes, 0), kCorrupt, b.data[0], "says 12345678");
  expect_status(entry_error(b.bytes, 1), kCorrupt, b.data[1], "CRC-32");
  // A prefix does not check the CRC.
  MemorySource src(b.bytes, "t.zip");
  const Archive a = parse_ok(b.bytes);
  auto p = read_entry_prefix(src, a.entries[1], 10);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  const Bytes want = ramp(3000);
  EXPECT_EQ(*p, Bytes(want.begin(), want.begin() + 10));
}

TEST(ZipErrors, InvalidDeflateData) {
  TestEntry e = one("r/a", ramp(50), 8);
  e.payload = Bytes(20, 0xFF);
  const Built b = build({e});
  expect_status(entry_error(b.bytes, 0), kCorrupt, b.data[0] + 1, "deflate data is invalid");
}

TEST(ZipErrors, DeflateStreamCutOff) {
  TestEntry e = one("r/a", ramp(5000), 8);
  e.payload = deflate_raw(e.data);
  e.payload->resize(e.payload->size() - 5);
  const Built b = build({e});
  const Status s = entry_error(b.bytes, 0);
  expect_status(s, kCorrupt, b.data[0] + e.payload->size(), "cut off");
  // The start of the entry still inflates.
  MemorySource src(b.bytes, "t.zip");
  auto p = read_entry_prefix(src, parse_ok(b.bytes).entries[0], 100);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->size(), 100u);
}

TEST(ZipErrors, DeflateStreamWithTrailingData) {
  TestEntry e = one("r/a", ramp(50), 8);
  e.payload = deflate_raw(e.data);
  append(*e.payload, "extra");
  const Built b = build({e});
  expect_status(entry_error(b.bytes, 0), kCorrupt, b.data[0] + e.payload->size() - 5,
                "ends 5 bytes before");
}

TEST(ZipErrors, InflatedSizeLies) {
  TestEntry e = one("r/a", ramp(80), 8);
  e.usize = 81;
  const Built more = build({e});
  expect_status(entry_error(more.bytes, 0), kCorrupt, more.data[0] + deflate_raw(ramp(80)).size(),
                "inflates to 80 bytes, but its central directory record states 81");
  e.usize = 79;
  const Built less = build({e});
  const Status s = entry_error(less.bytes, 0);
  EXPECT_EQ(s.code(), kCorrupt);
  EXPECT_NE(s.message().find("more than the 79 bytes"), std::string::npos) << s.to_string();
  // A prefix that stops before the end cannot tell, and must not fail for the claim.
  MemorySource src(less.bytes, "t.zip");
  auto p = read_entry_prefix(src, parse_ok(less.bytes).entries[0], 79);
  EXPECT_TRUE(p.is_ok());
  // But a prefix asking beyond a stream that ends early fails.
  MemorySource src2(more.bytes, "t.zip");
  auto q = read_entry_prefix(src2, parse_ok(more.bytes).entries[0], 1000);
  ASSERT_FALSE(q.is_ok());
  EXPECT_EQ(q.status().code(), kCorrupt);
}

TEST(ZipErrors, InflateLimitIsExact) {
  const Built b = build({one("r/a", Bytes(100000, 0), 8)});
  Limits limits;
  limits.max_inflated_entry = 100000;
  const Archive a = parse_ok(b.bytes);
  EXPECT_EQ(read_ok(b.bytes, a.entries[0], limits).size(), 100000u);
  limits.max_inflated_entry = 99999;
  MemorySource src(b.bytes, "t.zip");
  auto r = read_entry(src, a.entries[0], limits);
  ASSERT_FALSE(r.is_ok());
  expect_status(r.status(), kLimit, b.data[0], "over the limit of 99999 bytes");
}

TEST(ZipErrors, HandMadeEntryOutsideTheSource) {
  const Built b = build(three());
  Entry e = parse_ok(b.bytes).entries[1];
  e.data_offset = UINT64_MAX - 10;  // + compressed size wraps
  MemorySource src(b.bytes, "t.zip");
  auto r = read_entry(src, e);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), kCorrupt);
  EXPECT_LE(r.status().offset(), b.bytes.size());
  auto p = read_entry_prefix(src, e, 10);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), kCorrupt);
}

// --- errors: ZIP64 ---------------------------------------------------------------------------

Built zip64_archive(std::vector<TestEntry> entries, Spec spec = {}) {
  for (TestEntry& e : entries) e.zip64 = true;
  spec.zip64 = true;
  return build(entries, spec);
}

TEST(ZipErrors, Zip64LocatorPastTheEnd) {
  Spec spec;
  spec.locator_offset = 1ull << 40;
  const Built b = zip64_archive(three(), spec);
  expect_error(b.bytes, kCorrupt, b.locator + 8, "points to a ZIP64 end record at 1099511627776");
  spec.locator_offset = UINT64_MAX;  // + 56 wraps
  const Built c = zip64_archive(three(), spec);
  expect_error(c.bytes, kCorrupt, c.locator + 8, "18446744073709551615");
}

TEST(ZipErrors, Zip64LocatorPointsAtNothing) {
  // Where the locator points there is no record; the one right before the locator is only
  // believed when data before the archive explains the difference (it does not here).
  Spec spec;
  spec.locator_offset = 0;
  const Built b = zip64_archive(three(), spec);
  expect_error(b.bytes, kCorrupt, b.locator + 8, "but the ZIP64 end record is at");
  Built c = zip64_archive(three(), spec);
  set(c.bytes, c.zip64_eocd, 0, 4);  // and no record where it should be either
  expect_error(c.bytes, kCorrupt, c.locator + 8, "no ZIP64 end of central directory record");
}

TEST(ZipErrors, Zip64RecordSizeTooLarge) {
  Built b = zip64_archive(three());
  set(b.bytes, b.zip64_eocd + 4, 1000, 8);
  expect_error(b.bytes, kCorrupt, b.zip64_eocd + 4, "gives its size as 1000 bytes");
}

TEST(ZipErrors, Zip64MarkersWithoutLocator) {
  Built b = zip64_archive(three());
  set(b.bytes, b.locator, 0, 4);  // the locator is gone
  expect_error(b.bytes, kCorrupt, b.eocd + 4, "no ZIP64 end of central directory locator");
  Built c = build(three());
  set(c.bytes, c.eocd + 16, kM32, 4);
  expect_error(c.bytes, kCorrupt, c.eocd + 16, "a ZIP64 marker");
}

TEST(ZipErrors, Zip64MultiDisk) {
  Spec spec;
  spec.disk = 3;
  const Built b = zip64_archive(three(), spec);
  expect_error(b.bytes, kUnsupported, b.zip64_eocd + 16, "multi-disk");
  Built c = zip64_archive(three());
  set(c.bytes, c.locator + 16, 2, 4);
  expect_error(c.bytes, kUnsupported, c.locator, "multi-disk");
}

TEST(ZipErrors, Zip64HugeCounts) {
  Spec spec;
  spec.count = 1ull << 63;
  const Built b = zip64_archive(three(), spec);
  expect_error(b.bytes, kLimit, b.zip64_eocd + 32, "over the limit");
  // Even with no entry limit, the count is refused before anything is allocated for it.
  Limits limits;
  limits.max_entries = UINT64_MAX;
  expect_error(b.bytes, kCorrupt, b.zip64_eocd + 32,
               fmt::format("holds at most {}", (b.zip64_eocd - b.cd) / 46), limits);
}

TEST(ZipErrors, Zip64DirectoryOffsetPlusSizeWraps) {
  Spec spec;
  spec.cd_offset = UINT64_MAX - 8;
  const Built b = zip64_archive(three(), spec);
  expect_error(b.bytes, kCorrupt, b.zip64_eocd + 48, "past the end of the file");
  spec = {};
  spec.cd_size = UINT64_MAX - 100;
  const Built c = zip64_archive(three(), spec);
  expect_error(c.bytes, kCorrupt, c.zip64_eocd + 40, "2^64");
}

TEST(ZipErrors, Zip64LocalHeaderOffsetWraps) {
  std::vector<TestEntry> entries = three();
  entries[1].lho = UINT64_MAX - 10;
  const Built b = zip64_archive(entries);
  // The value is in the ZIP64 field: usize, csize, then the offset.
  const uint64_t field = b.central[1] + 46 + entries[1].name.size() + 4 + 16;
  expect_error(b.bytes, kCorrupt, field,
               "local header offset 18446744073709551605 is past the end");
  // Relative offsets (data before the archive) must not wrap either.
  Spec spec;
  spec.prefix = Bytes(64, 'p');
  spec.relative = true;
  const Built c = zip64_archive(entries, spec);
  expect_error(c.bytes, kCorrupt, c.central[1] + 46 + entries[1].name.size() + 20,
               "past the end of the file");
}

TEST(ZipErrors, Zip64SizeWraps) {
  std::vector<TestEntry> entries = three();
  entries[1].csize = entries[1].usize = UINT64_MAX - 40;
  const Built b = zip64_archive(entries);
  expect_error(b.bytes, kCorrupt, b.data[1], "run past the end of the file");
}

TEST(ZipErrors, Zip64ExtraMissingOrShort) {
  std::vector<TestEntry> entries = three();
  entries[1].lho = kM32;
  const Built b = build(entries);
  expect_error(b.bytes, kCorrupt, b.central[1] + 46 + entries[1].name.size(),
               "the local header offset is 0xFFFFFFFF, which means its value is in a ZIP64 "
               "extra field, but the record has none");
  entries = three();
  entries[1].usize = entries[1].csize = kM32;
  put(entries[1].central_extra, 1, 2);
  put(entries[1].central_extra, 8, 2);
  put(entries[1].central_extra, 100, 8);
  const Built c = build(entries);
  expect_error(c.bytes, kCorrupt, c.central[1] + 46 + entries[1].name.size() + 4,
               "no room for the compressed size");
}

// --- archives written by Python (zipfile, torch.save) ------------------------------------------

constexpr const char* kOracleScript = R"PY(
import os, random, sys, zipfile
d, mode = sys.argv[1], sys.argv[2]
if mode == "zipfile":
    path = os.path.join(d, "py.zip")
    def info(name, method):
        i = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
        i.compress_type = method
        return i
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info("root/text", zipfile.ZIP_DEFLATED), b"the quick brown fox " * 150000)
        zf.writestr(info("root/random", zipfile.ZIP_DEFLATED), random.Random(1).randbytes(1500000))
        zf.writestr(info("root/stored", zipfile.ZIP_STORED), bytes(range(256)) * 3)
        zf.writestr(info("root/empty", zipfile.ZIP_DEFLATED), b"")
        with zf.open(info("root/z64", zipfile.ZIP_DEFLATED), "w", force_zip64=True) as f:
            f.write(b"zip64 " * 1000)
        with zf.open(info("root/z64s", zipfile.ZIP_STORED), "w", force_zip64=True) as f:
            f.write(b"stored zip64")
else:
    try:
        import torch
    except ImportError:
        sys.exit(77)
    path = os.path.join(d, "model.pt")
    torch.save({"a": torch.arange(10), "w": torch.ones(3, 5, dtype=torch.float16),
                "n": {"b": torch.zeros(7, dtype=torch.bfloat16)}}, path)
with zipfile.ZipFile(path) as zf, open(os.path.join(d, "manifest.tsv"), "w") as m:
    for i, zi in enumerate(zf.infolist()):
        with open(os.path.join(d, "expected-%d" % i), "wb") as f:
            f.write(zf.read(zi))
        m.write("%s\t%d\t%d\t%d\t%d\t%d\n" % (zi.filename, zi.header_offset, zi.compress_size,
                                              zi.file_size, zi.compress_type, zi.CRC))
print(path)
)PY";

struct OracleEntry {
  std::string name;
  uint64_t header_offset, compress_size, file_size, method, crc;
};

/// Runs the oracle script; returns the archive's path, or "" when the test should be skipped.
std::string run_oracle(const std::string& dir, const std::string& mode) {
  if (access("/usr/bin/python3", X_OK) != 0) return "";
  const std::string script = dir + "/oracle.py";
  test::write_bytes(script, bytes_of(kOracleScript));
  const std::string cmd =
      "/usr/bin/python3 " + script + " " + dir + " " + mode + " > " + dir + "/out.txt 2>&1";
  const int rc = std::system(cmd.c_str());
  if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) return "";
  const Bytes out = test::read_bytes(dir + "/out.txt");
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << std::string(out.begin(), out.end());
  return dir + (mode == "zipfile" ? "/py.zip" : "/model.pt");
}

std::vector<OracleEntry> read_manifest(const std::string& dir) {
  std::ifstream in(dir + "/manifest.tsv");
  std::vector<OracleEntry> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    OracleEntry e;
    std::getline(fields, e.name, '\t');
    fields >> e.header_offset >> e.compress_size >> e.file_size >> e.method >> e.crc;
    out.push_back(e);
  }
  return out;
}

/// Reads the archive from its file and compares every entry with what Python read.
Archive check_against_oracle(const std::string& dir, const std::string& path) {
  auto file = InputFile::open(path);
  EXPECT_TRUE(file.is_ok()) << file.status().to_string();
  if (!file.is_ok()) return {};
  const FileSource src(*file);
  auto a = read_archive(src);
  EXPECT_TRUE(a.is_ok()) << a.status().to_string();
  if (!a.is_ok()) return {};
  const std::vector<OracleEntry> expected = read_manifest(dir);
  EXPECT_EQ(a->entries.size(), expected.size());
  for (size_t i = 0; i < std::min(expected.size(), a->entries.size()); ++i) {
    const Entry& e = a->entries[i];
    const OracleEntry& x = expected[i];
    EXPECT_EQ(e.name, x.name);
    EXPECT_EQ(e.local_header_offset, x.header_offset) << x.name;
    EXPECT_EQ(e.compressed_size, x.compress_size) << x.name;
    EXPECT_EQ(e.uncompressed_size, x.file_size) << x.name;
    EXPECT_EQ(e.method, x.method) << x.name;
    EXPECT_EQ(e.crc32, x.crc) << x.name;
    auto data = read_entry(src, e);
    EXPECT_TRUE(data.is_ok()) << data.status().to_string();
    if (!data.is_ok()) continue;
    EXPECT_TRUE(*data == test::read_bytes(fmt::format("{}/expected-{}", dir, i))) << x.name;
    auto prefix = read_entry_prefix(src, e, 1000);
    EXPECT_TRUE(prefix.is_ok()) << prefix.status().to_string();
    if (!prefix.is_ok()) continue;
    EXPECT_TRUE(std::equal(prefix->begin(), prefix->end(), data->begin())) << x.name;
  }
  return std::move(a).value();
}

TEST(ZipOracle, PythonZipfile) {
  const std::string dir = test::scratch_dir();
  const std::string path = run_oracle(dir, "zipfile");
  if (path.empty()) GTEST_SKIP() << "/usr/bin/python3 is not available";
  const Archive a = check_against_oracle(dir, path);
  EXPECT_EQ(a.entries.size(), 6u);
  EXPECT_TRUE(a.findings.empty()) << kinds(a);
  const Entry* text = a.find("root/text");
  ASSERT_NE(text, nullptr);
  EXPECT_EQ(text->uncompressed_size, 3000000u);  // more than one output buffer
  const Entry* random = a.find("root/random");
  ASSERT_NE(random, nullptr);
  EXPECT_GT(random->compressed_size, 1u << 20);  // more than one input chunk
}

TEST(ZipOracle, TorchSave) {
  const std::string dir = test::scratch_dir();
  const std::string path = run_oracle(dir, "torch");
  if (path.empty()) GTEST_SKIP() << "/usr/bin/python3 with torch is not available";
  const Archive a = check_against_oracle(dir, path);
  EXPECT_TRUE(a.findings.empty()) << kinds(a);
  EXPECT_EQ(a.archive_start, 0u);
  ASSERT_GE(a.entries.size(), 5u);  // data.pkl, three tensors, version (and newer extras)
  size_t tensors = 0;
  for (const Entry& e : a.entries) {
    if (e.name.find("/data/") == std::string::npos) continue;
    ++tensors;
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name << " is not 64-byte aligned";
  }
  EXPECT_EQ(tensors, 3u);
  // torch.arange(10) is ten little-endian int64s.
  bool found_arange = false;
  auto file = InputFile::open(path);
  ASSERT_TRUE(file.is_ok());
  const FileSource src(*file);
  for (const Entry& e : a.entries) {
    if (e.name.find("/data/") == std::string::npos || e.uncompressed_size != 80) continue;
    auto data = read_entry(src, e);
    ASSERT_TRUE(data.is_ok());
    Bytes want;
    for (uint64_t i = 0; i < 10; ++i) put(want, i, 8);
    found_arange = found_arange || *data == want;
  }
  EXPECT_TRUE(found_arange);
}

}  // namespace
}  // namespace ckptkit::zip
