// ZIP reader for torch.save archives. The byte layout it reads is in zip.h; the field offsets
// used below are those of APPNOTE.TXT 6.3.x:
//
//   end of central directory (22 bytes + comment)
//     0 "PK\5\6"  4 this disk (2)  6 disk of the central directory (2)  8 records on this disk (2)
//     10 records in total (2)  12 central directory size (4)  16 its offset (4)  20 comment length
//   ZIP64 end of central directory locator (20 bytes, right before the record above)
//     0 "PK\6\7"  4 disk of the ZIP64 record (4)  8 offset of the ZIP64 record (8)  16 disks (4)
//   ZIP64 end of central directory (56 bytes + extensible data)
//     0 "PK\6\6"  4 size of the rest (8)  12 versions (2+2)  16 this disk (4)  20 disk of the
//     central directory (4)  24 records on this disk (8)  32 records in total (8)
//     40 central directory size (8)  48 its offset (8)
//   central directory record (46 bytes + name + extra + comment)
//     0 "PK\1\2"  4 versions (2+2)  8 flags (2)  10 method (2)  12 time, date (2+2)  16 CRC-32 (4)
//     20 compressed size (4)  24 uncompressed size (4)  28 name length (2)  30 extra length (2)
//     32 comment length (2)  34 disk of the local header (2)  36 attributes (2+4)
//     42 local header offset (4)
//   local file header (30 bytes + name + extra)
//     0 "PK\3\4"  4 version (2)  6 flags (2)  8 method (2)  10 time, date (2+2)  14 CRC-32 (4)
//     18 compressed size (4)  22 uncompressed size (4)  26 name length (2)  28 extra length (2)
//   extra field: records of id (2), data size (2), data. The ZIP64 one (id 0x0001) holds 64-bit
//     values for exactly those fields whose 32-bit value is 0xFFFFFFFF (disk: 0xFFFF), in the
//     order uncompressed size, compressed size, local header offset, disk.
//   data descriptor (flag bit 3): after the data, ["PK\7\x08"] CRC-32, sizes (4+4 or 8+8).
//
// Every offset and size from the file is checked against the file size with overflow-checked
// arithmetic before it is used; errors name the absolute offset of the field that is wrong.
#include "formats/torch/zip.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <utility>

#include "io/errors.h"

namespace ckptkit::zip {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50;         // "PK\3\4"
constexpr uint32_t kCentralSig = 0x02014b50;       // "PK\1\2"
constexpr uint32_t kEocdSig = 0x06054b50;          // "PK\5\6"
constexpr uint32_t kZip64EocdSig = 0x06064b50;     // "PK\6\6"
constexpr uint32_t kZip64LocatorSig = 0x07064b50;  // "PK\6\7"

constexpr uint64_t kEocdSize = 22;
constexpr uint64_t kMaxComment = 65535;
constexpr uint64_t kLocatorSize = 20;
constexpr uint64_t kZip64EocdSize = 56;
constexpr uint64_t kCentralSize = 46;
constexpr uint64_t kLocalSize = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint32_t kMarker32 = 0xFFFFFFFF;
constexpr uint16_t kMarker16 = 0xFFFF;

constexpr uint16_t kFlagEncrypted = 1u << 0;
constexpr uint16_t kFlagDescriptor = 1u << 3;
constexpr uint16_t kFlagStrongEncryption = 1u << 6;

// Local headers are read with one call: the fixed part, the central directory's name length and
// this much room for the extra field (torch's alignment padding is < 64 + 4 bytes, a ZIP64
// field 20). Longer extras cost a second read.
constexpr uint64_t kLocalExtraSlack = 128;

// Findings come from the file: a hostile archive could otherwise make a million of them. The
// first few of each kind are kept, then one summary.
constexpr uint64_t kMaxFindingsPerKind = 16;

// A second "PK\5\6" is looked for in at most this many bytes of what precedes or follows the
// archive, and at most this many candidates are checked.
constexpr uint64_t kSecondArchiveScan = 1ull << 20;
constexpr int kSecondArchiveCandidates = 16;

constexpr uint64_t kInflateInputChunk = 1ull << 20;
constexpr uint64_t kPrefixInputChunk = 64ull << 10;
constexpr uint64_t kInitialOutput = 1ull << 20;

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t le64(const uint8_t* p) {
  return static_cast<uint64_t>(le32(p)) | (static_cast<uint64_t>(le32(p + 4)) << 32);
}

/// a + b, or nullopt when it does not fit in 64 bits.
std::optional<uint64_t> add(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// An entry name as it may appear inside a one-line message: control bytes escaped, cut short.
std::string printable(std::string_view name) {
  constexpr size_t kMax = 200;
  std::string out;
  for (size_t i = 0; i < name.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7F || c == '\\')
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  if (name.size() > kMax) out += "...";
  return out;
}

/// How messages name an entry by its central directory record: "central directory record 3
/// ('archive/data/2')".
std::string record_label(uint64_t index, std::string_view name) {
  return fmt::format("central directory record {} ('{}')", index, printable(name));
}

std::string_view method_name(uint16_t method) {
  switch (method) {
    case 0:
      return "stored";
    case 1:
      return "shrink";
    case 6:
      return "implode";
    case 8:
      return "deflate";
    case 9:
      return "deflate64";
    case 12:
      return "bzip2";
    case 14:
      return "LZMA";
    case 93:
      return "zstandard";
    case 95:
      return "xz";
    case 98:
      return "PPMd";
    case 99:
      return "AES encryption";
    default:
      return "unknown";
  }
}

Status unsupported_at(uint64_t offset, std::string message) {
  return Status(ErrorCode::kUnsupported, std::move(message), {}, offset);
}

Status limit_at(uint64_t offset, std::string message) {
  return Status(ErrorCode::kLimitExceeded, std::move(message), {}, offset);
}

/// Where a ZIP64 extended-information field (id 0x0001) lies inside an extra field.
struct Zip64Field {
  bool found = false;
  uint64_t begin = 0;  ///< offset of its data inside the extra field
  uint64_t size = 0;
};

/// Walks the extra field's records. Malformed records end the walk without an error: only a
/// ZIP64 field that is needed and missing makes an entry unreadable, and the caller says so.
Zip64Field find_zip64_field(std::span<const uint8_t> extra) {
  uint64_t i = 0;
  while (i + 4 <= extra.size()) {
    const uint16_t id = le16(extra.data() + i);
    const uint16_t len = le16(extra.data() + i + 2);
    if (i + 4 + len > extra.size()) break;
    if (id == kZip64ExtraId) return {true, i + 4, len};
    i += 4 + len;
  }
  return {};
}

/// The 64-bit values of a central record: each marked 32-bit field replaced from ZIP64 data.
struct Sizes {
  uint64_t uncompressed = 0;
  uint64_t compressed = 0;
  uint64_t local_header_offset = 0;
  uint64_t disk = 0;
  uint64_t compressed_field_at = 0;  ///< absolute offset of the field that held compressed
  uint64_t offset_field_at = 0;      ///< ditto for the local header offset
  bool zip64 = false;
};

class FindingList {
 public:
  explicit FindingList(std::vector<Finding>& out) : out_(out) {}

  void add(FindingKind kind, uint64_t offset, std::string entry, std::string message) {
    auto& n = count_[static_cast<size_t>(kind)];
    if (n++ < kMaxFindingsPerKind)
      out_.push_back({kind, offset, std::move(entry), std::move(message)});
    else if (n == kMaxFindingsPerKind + 1)
      first_dropped_[static_cast<size_t>(kind)] = offset;
  }

  /// Adds one summary per kind that had more findings than were kept.
  void finish() {
    for (size_t k = 0; k < count_.size(); ++k) {
      if (count_[k] <= kMaxFindingsPerKind) continue;
      out_.push_back({static_cast<FindingKind>(k),
                      first_dropped_[k],
                      {},
                      fmt::format("{} more findings of this kind are not listed",
                                  count_[k] - kMaxFindingsPerKind)});
    }
    std::stable_sort(out_.begin(), out_.end(),
                     [](const Finding& a, const Finding& b) { return a.offset < b.offset; });
  }

 private:
  static constexpr size_t kKinds = static_cast<size_t>(FindingKind::kArchiveComment) + 1;
  std::vector<Finding>& out_;
  std::array<uint64_t, kKinds> count_{};
  std::array<uint64_t, kKinds> first_dropped_{};
};

class ArchiveReader {
 public:
  ArchiveReader(const ByteSource& src, const Limits& limits)
      : src_(src), limits_(limits), size_(src.size()), findings_(archive_.findings) {}

  Result<Archive> read() {
    CKPT_RETURN_IF_ERROR(find_end_record());
    CKPT_RETURN_IF_ERROR(read_zip64_end_record());
    CKPT_RETURN_IF_ERROR(check_counts());
    CKPT_RETURN_IF_ERROR(locate_central_directory());
    CKPT_RETURN_IF_ERROR(read_central_directory());
    for (size_t i = 0; i < archive_.entries.size(); ++i) CKPT_RETURN_IF_ERROR(read_local_header(i));
    CKPT_RETURN_IF_ERROR(check_layout());
    check_names();
    findings_.finish();
    return std::move(archive_);
  }

 private:
  // --- end of central directory --------------------------------------------------------------

  // The record is found from the end: it is the only fixed point of a ZIP file, and it is
  // followed only by its comment. A "PK\5\6" whose comment reaches exactly the end of the file
  // is the one every reader agrees on; without one, the last record that fits is taken and the
  // bytes after it are reported.
  Status find_end_record() {
    if (size_ < kEocdSize)
      return corrupt_at(0,
                        "file is {} bytes, too short for a ZIP archive (its end of central "
                        "directory record alone is 22 bytes)",
                        size_);
    const uint64_t tail_len = std::min(size_, kEocdSize + kMaxComment);
    tail_start_ = size_ - tail_len;
    tail_.resize(tail_len);
    CKPT_RETURN_IF_ERROR(src_.read(tail_, tail_start_, "the end of a ZIP archive"));

    constexpr uint64_t kNone = UINT64_MAX;
    uint64_t exact = kNone, fitting = kNone, too_long = kNone;
    for (uint64_t p = tail_len - kEocdSize + 1; p-- > 0;) {
      if (tail_[p] != 'P' || le32(&tail_[p]) != kEocdSig) continue;
      const uint64_t end = p + kEocdSize + le16(&tail_[p + 20]);
      if (end == tail_len) {
        exact = p;
        break;
      }
      if (end < tail_len && fitting == kNone) fitting = p;
      if (end > tail_len && too_long == kNone) too_long = p;
    }
    uint64_t p = exact != kNone ? exact : fitting;
    if (p == kNone) {
      if (too_long != kNone)
        return corrupt_at(tail_start_ + too_long + 20,
                          "the end of central directory record at {} has a {}-byte comment, "
                          "which runs {} bytes past the end of the file: the file is truncated",
                          tail_start_ + too_long, le16(&tail_[too_long + 20]),
                          too_long + kEocdSize + le16(&tail_[too_long + 20]) - tail_len);
      return corrupt_at(tail_start_,
                        "no end of central directory record (\"PK\\5\\6\") in the last {} bytes: "
                        "not a ZIP archive, or truncated",
                        tail_len);
    }
    const uint8_t* r = &tail_[p];
    eocd_ = tail_start_ + p;
    archive_.eocd_offset = eocd_;
    disk_ = le16(r + 4);
    cd_disk_ = le16(r + 6);
    count_on_disk_ = le16(r + 8);
    count_ = le16(r + 10);
    cd_size_ = le32(r + 12);
    cd_offset_ = le32(r + 16);
    const uint16_t comment_len = le16(r + 20);
    eocd_end_ = eocd_ + kEocdSize + comment_len;

    if (comment_len > 0)
      findings_.add(FindingKind::kArchiveComment, eocd_ + kEocdSize, {},
                    fmt::format("the archive has a {}-byte comment; torch never writes one, and a "
                                "comment can carry hidden data or make the file pass for another "
                                "format",
                                comment_len));
    if (eocd_end_ < size_) {
      findings_.add(FindingKind::kDataAfterArchive, eocd_end_, {},
                    fmt::format("{} bytes follow the end of central directory record and its "
                                "comment: ZIP readers ignore them, so they can hide another file "
                                "appended to the archive",
                                size_ - eocd_end_));
      // Anything after the chosen record is in the tail buffer (the record itself is).
      look_for_second_archive(eocd_end_, size_);
    }
    return Status::ok();
  }

  // --- ZIP64 -----------------------------------------------------------------------------------

  Status read_zip64_end_record() {
    cd_end_ = eocd_;
    if (eocd_ < kLocatorSize) return Status::ok();
    const uint64_t loc_at = eocd_ - kLocatorSize;
    std::array<uint8_t, kLocatorSize> loc{};
    if (loc_at >= tail_start_)
      std::memcpy(loc.data(), &tail_[loc_at - tail_start_], loc.size());
    else
      CKPT_RETURN_IF_ERROR(src_.read(loc, loc_at, "the ZIP64 end of central directory locator"));
    if (le32(loc.data()) != kZip64LocatorSig) return Status::ok();

    const uint32_t z_disk = le32(&loc[4]);
    const uint64_t stated = le64(&loc[8]);
    const uint32_t disks = le32(&loc[16]);
    if (z_disk != 0 || disks > 1)
      return unsupported_at(loc_at, fmt::format("multi-disk (split or spanned) archives are not "
                                                "supported: the ZIP64 locator names {} disks",
                                                std::max<uint64_t>(disks, uint64_t{z_disk} + 1)));
    // The record lies right before the locator unless it carries extensible data.
    auto stated_end = add(stated, kZip64EocdSize);
    if (!stated_end || *stated_end > loc_at)
      return corrupt_at(loc_at + 8,
                        "the ZIP64 locator at {} points to a ZIP64 end record at {}, which "
                        "would not end before the locator ({} bytes into a {}-byte file)",
                        loc_at, stated, loc_at, size_);
    std::array<uint8_t, kZip64EocdSize> rec{};
    CKPT_RETURN_IF_ERROR(src_.read(rec, stated, "the ZIP64 end of central directory record"));
    uint64_t at = stated;
    if (le32(rec.data()) != kZip64EocdSig) {
      // Offsets written relative to an archive that was later prefixed with other data: the
      // record is where the locator's position says it must be (what Python's zipfile assumes).
      const uint64_t expected = loc_at - kZip64EocdSize;
      bool found = false;
      if (expected > stated) {
        CKPT_RETURN_IF_ERROR(src_.read(rec, expected, "the ZIP64 end of central directory record"));
        found = le32(rec.data()) == kZip64EocdSig;
      }
      if (!found)
        return corrupt_at(loc_at + 8,
                          "the ZIP64 locator at {} points to {}, where there is no ZIP64 end of "
                          "central directory record (\"PK\\6\\6\")",
                          loc_at, stated);
      at = expected;
      zip64_shift_ = expected - stated;
    }
    const uint64_t rest = le64(&rec[4]);
    auto rec_end = add(at, 12);
    if (rest < kZip64EocdSize - 12 || !(rec_end = add(*rec_end, rest)) || *rec_end > loc_at)
      return corrupt_at(at + 4,
                        "the ZIP64 end record at {} gives its size as {} bytes, which does not "
                        "fit between its fixed part (44 bytes) and the locator at {}",
                        at, rest, loc_at);
    archive_.zip64 = true;
    zip64_at_ = at;
    locator_at_ = loc_at;
    cd_end_ = at;
    // The ZIP64 values are the authoritative ones: the 32-bit fields hold 0xFFFF(FFFF) markers
    // or copies.
    disk_ = le32(&rec[16]);
    cd_disk_ = le32(&rec[20]);
    count_on_disk_ = le64(&rec[24]);
    count_ = le64(&rec[32]);
    cd_size_ = le64(&rec[40]);
    cd_offset_ = le64(&rec[48]);
    return Status::ok();
  }

  /// Where the fields of the end record in use live (for error offsets).
  uint64_t field_at(uint64_t eocd_field, uint64_t zip64_field) const {
    return archive_.zip64 ? zip64_at_ + zip64_field : eocd_ + eocd_field;
  }

  /// A hint for 32-bit values that look like ZIP64 markers in an archive without ZIP64 records.
  std::string marker_hint(uint64_t value) const {
    if (archive_.zip64 || (value != kMarker32 && value != kMarker16)) return {};
    return " (a ZIP64 marker, but the archive has no ZIP64 end of central directory locator "
           "before its end record)";
  }

  Status check_counts() {
    if (!archive_.zip64 && (disk_ == kMarker16 || cd_disk_ == kMarker16))
      return corrupt_at(eocd_ + 4,
                        "the end record's disk numbers are 0xFFFF, the marker of a ZIP64 archive, "
                        "but there is no ZIP64 end of central directory locator before it at {}: "
                        "the file is truncated or damaged",
                        eocd_ >= kLocatorSize ? eocd_ - kLocatorSize : 0);
    if (disk_ != 0 || cd_disk_ != 0)
      return unsupported_at(
          field_at(4, 16),
          fmt::format("multi-disk (split or spanned) archives are not supported: the end record "
                      "is on disk {} and the central directory starts on disk {}",
                      disk_, cd_disk_));
    if (count_on_disk_ != count_)
      return corrupt_at(field_at(8, 24),
                        "the end record counts {} entries on this disk but {} in total, in an "
                        "archive of one disk",
                        count_on_disk_, count_);
    if (count_ > limits_.max_entries)
      return limit_at(field_at(10, 32),
                      fmt::format("the archive has {} entries, over the limit of {}", count_,
                                  limits_.max_entries));
    return Status::ok();
  }

  // --- central directory -----------------------------------------------------------------------

  Status locate_central_directory() {
    const uint64_t size_at = field_at(12, 40);
    const uint64_t offset_at = field_at(16, 48);
    auto stated_end = add(cd_offset_, cd_size_);
    if (!stated_end || *stated_end > cd_end_) {
      if (cd_offset_ >= size_)
        return corrupt_at(offset_at,
                          "the central directory offset {}{} is past the end of the file ({} "
                          "bytes)",
                          cd_offset_, marker_hint(cd_offset_), size_);
      return corrupt_at(size_at,
                        "the central directory [{}, {}) (size {}{}) would run past the {}end "
                        "record at {}",
                        cd_offset_, stated_end ? fmt::format("{}", *stated_end) : "2^64+", cd_size_,
                        marker_hint(cd_size_), archive_.zip64 ? "ZIP64 " : "", cd_end_);
    }
    if (cd_size_ > limits_.max_central_directory)
      return limit_at(size_at, fmt::format("the central directory is {} bytes, over the limit of "
                                           "{} bytes",
                                           cd_size_, limits_.max_central_directory));
    // Checked before anything is allocated: a count is only believable if the records fit.
    if (count_ > cd_size_ / kCentralSize)
      return corrupt_at(field_at(10, 32),
                        "the end record claims {} entries{}, but a central directory of {} bytes "
                        "holds at most {} (each record is at least 46 bytes)",
                        count_, marker_hint(count_), cd_size_, cd_size_ / kCentralSize);

    const uint64_t slack = cd_end_ - *stated_end;
    cd_start_ = cd_offset_;
    if (slack > 0) {
      // Either offsets relative to an archive that was later prefixed with other data (the
      // directory then ends right at the end record, `slack` bytes after where it is said to),
      // or bytes between the directory and the end record.
      bool at_stated = false;
      if (count_ > 0) {  // then the directory holds at least 46 bytes
        std::array<uint8_t, 4> sig{};
        CKPT_RETURN_IF_ERROR(src_.read(sig, cd_offset_, "the central directory"));
        at_stated = le32(sig.data()) == kCentralSig;
      }
      if (at_stated) {
        findings_.add(FindingKind::kGapBetweenEntries, *stated_end, {},
                      fmt::format("{} bytes between the end of the central directory and the end "
                                  "record belong to nothing: hidden content ZIP tools do not show",
                                  slack));
      } else {
        shift_ = slack;
        cd_start_ = cd_offset_ + slack;
      }
    }
    // A ZIP64 record found by its position rather than its stated offset is only explained by
    // data before the archive, and then the directory must be shifted by the same amount.
    if (zip64_shift_ != 0 && zip64_shift_ != shift_)
      return corrupt_at(locator_at_ + 8,
                        "the ZIP64 locator at {} points to {}, but the ZIP64 end record is at {} "
                        "and the central directory {}",
                        locator_at_, zip64_at_ - zip64_shift_, zip64_at_,
                        shift_ == 0 ? std::string("is where the end record says")
                                    : fmt::format("is shifted by {} bytes", shift_));
    archive_.central_directory_offset = cd_start_;
    if (cd_size_ > 0) {
      cd_.resize(cd_size_);
      CKPT_RETURN_IF_ERROR(src_.read(cd_, cd_start_, "the central directory"));
      if (count_ > 0 && le32(cd_.data()) != kCentralSig)
        return corrupt_at(cd_start_,
                          "no central directory record (\"PK\\1\\2\") at {}, where the end record "
                          "at {} says the central directory starts",
                          cd_start_, eocd_);
    }
    return Status::ok();
  }

  /// Resolves the ZIP64 values of one central record whose fixed part starts at `r`.
  Status resolve_sizes(const uint8_t* r, uint64_t rec_at, std::span<const uint8_t> extra,
                       uint64_t extra_at, uint64_t index, std::string_view name, Sizes& s) {
    const uint32_t c32 = le32(r + 20), u32 = le32(r + 24), o32 = le32(r + 42);
    const uint16_t d16 = le16(r + 34);
    s.uncompressed = u32;
    s.compressed = c32;
    s.local_header_offset = o32;
    s.disk = d16;
    s.compressed_field_at = rec_at + 20;
    s.offset_field_at = rec_at + 42;
    if (u32 != kMarker32 && c32 != kMarker32 && o32 != kMarker32 && d16 != kMarker16)
      return Status::ok();
    const Zip64Field z = find_zip64_field(extra);
    uint64_t pos = 0;
    auto take = [&](uint64_t& value, uint64_t width, std::string_view what,
                    uint64_t* field_at) -> Status {
      if (!z.found)
        return corrupt_at(extra_at,
                          "{}: the {} is 0x{:X}, which means its value is in a ZIP64 extra field, "
                          "but the record has none",
                          record_label(index, name), what, width == 8 ? kMarker32 : kMarker16);
      if (pos + width > z.size)
        return corrupt_at(extra_at + z.begin,
                          "{}: the ZIP64 extra field ({} bytes) has no room for the {}",
                          record_label(index, name), z.size, what);
      const uint8_t* p = extra.data() + z.begin + pos;
      value = width == 8 ? le64(p) : le32(p);
      if (field_at != nullptr) *field_at = extra_at + z.begin + pos;
      pos += width;
      s.zip64 = true;
      return Status::ok();
    };
    if (u32 == kMarker32)
      CKPT_RETURN_IF_ERROR(take(s.uncompressed, 8, "uncompressed size", nullptr));
    if (c32 == kMarker32)
      CKPT_RETURN_IF_ERROR(take(s.compressed, 8, "compressed size", &s.compressed_field_at));
    if (o32 == kMarker32)
      CKPT_RETURN_IF_ERROR(
          take(s.local_header_offset, 8, "local header offset", &s.offset_field_at));
    if (d16 == kMarker16) CKPT_RETURN_IF_ERROR(take(s.disk, 4, "disk number", nullptr));
    return Status::ok();
  }

  Status read_central_directory() {
    archive_.entries.reserve(count_);
    descriptor_.reserve(count_);
    uint64_t pos = 0;
    for (uint64_t i = 0; i < count_; ++i) {
      const uint64_t at = cd_start_ + pos;
      if (cd_size_ - pos < kCentralSize)
        return corrupt_at(at,
                          "the central directory ends after {} of the {} records the end record "
                          "announces ({} bytes left, a record needs at least 46)",
                          i, count_, cd_size_ - pos);
      const uint8_t* r = &cd_[pos];
      if (le32(r) != kCentralSig)
        return corrupt_at(at,
                          "central directory record {} has no \"PK\\1\\2\" signature: the "
                          "directory holds fewer records than the {} its end record announces, "
                          "or is damaged",
                          i, count_);
      const uint16_t name_len = le16(r + 28), extra_len = le16(r + 30), comment_len = le16(r + 32);
      const uint64_t var_len = uint64_t{name_len} + extra_len + comment_len;
      if (cd_size_ - pos - kCentralSize < var_len)
        return corrupt_at(at + 28,
                          "central directory record {}: its name, extra field and comment ({} "
                          "bytes) run past the end of the central directory",
                          i, var_len);
      Entry e;
      e.name.assign(reinterpret_cast<const char*>(r + kCentralSize), name_len);
      e.flags = le16(r + 8);
      e.method = le16(r + 10);
      e.crc32 = le32(r + 16);
      e.central_offset = at;
      auto label = [&] { return record_label(i, e.name); };
      const std::span<const uint8_t> extra(r + kCentralSize + name_len, extra_len);
      Sizes s;
      CKPT_RETURN_IF_ERROR(resolve_sizes(r, at, extra, at + kCentralSize + name_len, i, e.name, s));
      if (s.zip64) archive_.zip64 = true;
      if (s.disk != 0)
        return unsupported_at(at + 34, fmt::format("{}: the entry starts on disk {}; multi-disk "
                                                   "archives are not supported",
                                                   label(), s.disk));
      if ((e.flags & (kFlagEncrypted | kFlagStrongEncryption)) != 0)
        return unsupported_at(at + 8, fmt::format("{}: the entry is encrypted (flags {:#06x}); "
                                                  "encrypted archives are not supported",
                                                  label(), e.flags));
      if (e.method != kMethodStored && e.method != kMethodDeflated)
        return unsupported_at(at + 10,
                              fmt::format("{}: compression method {} ({}) is not supported, only "
                                          "stored (0) and deflate (8)",
                                          label(), e.method, method_name(e.method)));
      if (e.method == kMethodStored && s.compressed != s.uncompressed)
        return corrupt_at(s.compressed_field_at,
                          "{}: a stored entry must have equal sizes, but its compressed size is "
                          "{} and its uncompressed size {}",
                          label(), s.compressed, s.uncompressed);
      auto lho = add(s.local_header_offset, shift_);
      if (!lho || *lho >= size_)
        return corrupt_at(s.offset_field_at,
                          "{}: local header offset {}{} is past the end of the file ({} bytes)",
                          label(), s.local_header_offset,
                          shift_ ? fmt::format(" + {} (bytes before the archive)", shift_) : "",
                          size_);
      if (cd_start_ - std::min(*lho, cd_start_) < kLocalSize)
        return corrupt_at(s.offset_field_at,
                          "{}: local header offset {}{} is not followed by a 30-byte local "
                          "header before the central directory at {}",
                          label(), s.local_header_offset,
                          shift_ ? fmt::format(" + {} (bytes before the archive)", shift_) : "",
                          cd_start_);
      e.compressed_size = s.compressed;
      e.uncompressed_size = s.uncompressed;
      e.local_header_offset = *lho;
      archive_.entries.push_back(std::move(e));
      descriptor_.push_back((archive_.entries.back().flags & kFlagDescriptor) != 0);
      pos += kCentralSize + var_len;
    }
    if (pos != cd_size_)
      return corrupt_at(cd_start_ + pos,
                        "{} bytes of the central directory follow the {} records its end record "
                        "announces{}: the count and the directory disagree",
                        cd_size_ - pos, count_,
                        cd_size_ - pos >= 4 && le32(&cd_[pos]) == kCentralSig
                            ? " (another record starts there)"
                            : "");
    return Status::ok();
  }

  // --- local headers ---------------------------------------------------------------------------

  Status read_local_header(size_t index) {
    Entry& e = archive_.entries[index];
    const uint64_t lho = e.local_header_offset;
    auto label = [&] { return record_label(index, e.name); };
    // Checked by read_central_directory: at least 30 bytes before the central directory.
    const uint64_t room = cd_start_ - lho;
    const uint64_t want = std::min(room, kLocalSize + e.name.size() + kLocalExtraSlack);
    local_.resize(want);
    CKPT_RETURN_IF_ERROR(src_.read(local_, lho, "a local file header"));
    const uint8_t* h = local_.data();
    if (le32(h) != kLocalSig)
      return corrupt_at(lho,
                        "{}: no local file header (\"PK\\3\\4\") at {}, where its central "
                        "directory record at {} says it starts",
                        label(), lho, e.central_offset);
    const uint16_t flags = le16(h + 6), method = le16(h + 8);
    const uint32_t crc = le32(h + 14), c32 = le32(h + 18), u32 = le32(h + 22);
    const uint16_t name_len = le16(h + 26), extra_len = le16(h + 28);
    const uint64_t header_len = kLocalSize + name_len + extra_len;
    if (header_len > room)
      return corrupt_at(lho + 26,
                        "{}: the local header's name and extra field ({} bytes) run {} the "
                        "central directory at {}",
                        label(), name_len + extra_len,
                        lho + header_len > size_ ? "past the end of the file, after" : "into",
                        cd_start_);
    if (header_len > want) {
      local_.resize(header_len);
      CKPT_RETURN_IF_ERROR(src_.read(std::span<uint8_t>(local_).subspan(want), lho + want,
                                     "a local file header's extra field"));
      h = local_.data();
    }
    e.data_offset = lho + header_len;
    if (local_.size() > header_len) {
      const uint64_t n = std::min<uint64_t>({local_.size() - header_len, e.head.size(),
                                             e.compressed_size});
      std::memcpy(e.head.data(), local_.data() + header_len, n);
      e.head_size = static_cast<uint8_t>(n);
    }
    auto data_end = add(e.data_offset, e.compressed_size);
    if (!data_end || *data_end > cd_start_)
      return corrupt_at(e.data_offset, "{}: its {} bytes of data starting at {} run {} ({} bytes)",
                        label(), e.compressed_size, e.data_offset,
                        !data_end || *data_end > size_ ? "past the end of the file"
                                                       : "into the central directory",
                        !data_end || *data_end > size_ ? size_ : cd_start_);

    // Disagreements do not stop reading (the central directory is what random-access readers
    // use), but a streaming reader would follow the local header and see something else.
    const std::string_view local_name(reinterpret_cast<const char*>(h + kLocalSize), name_len);
    std::vector<std::string> diffs;
    if (local_name != e.name) diffs.push_back(fmt::format("the name '{}'", printable(local_name)));
    if (method != e.method)
      diffs.push_back(
          fmt::format("compression method {} (the central directory says {})", method, e.method));
    if (((flags ^ e.flags) & kFlagEncrypted) != 0)
      diffs.push_back(fmt::format("encryption flag {}", flags & kFlagEncrypted));
    if ((flags & kFlagDescriptor) == 0 && (e.flags & kFlagDescriptor) == 0) {
      // Without a data descriptor the local header carries the real CRC and sizes.
      uint64_t lu = u32, lc = c32;
      bool known = true;
      if (u32 == kMarker32 || c32 == kMarker32) {
        const auto extra = std::span<const uint8_t>(h + kLocalSize + name_len, extra_len);
        const Zip64Field z = find_zip64_field(extra);
        // APPNOTE wants both sizes in a local ZIP64 field; some writers store only the marked.
        uint64_t pos = 0;
        if (!z.found) {
          known = false;
        } else if (z.size >= 16) {
          lu = le64(extra.data() + z.begin);
          lc = le64(extra.data() + z.begin + 8);
        } else {
          for (uint64_t* v : {&lu, &lc}) {
            if (*v != kMarker32) continue;
            if (pos + 8 > z.size) {
              known = false;
              break;
            }
            *v = le64(extra.data() + z.begin + pos);
            pos += 8;
          }
        }
        if (z.found) archive_.zip64 = true;
      }
      if (crc != e.crc32)
        diffs.push_back(
            fmt::format("CRC-32 {:08x} (the central directory says {:08x})", crc, e.crc32));
      if (known && (lc != e.compressed_size || lu != e.uncompressed_size))
        diffs.push_back(fmt::format("sizes {}/{} (the central directory says {}/{})", lc, lu,
                                    e.compressed_size, e.uncompressed_size));
    }
    if ((flags & kFlagDescriptor) != 0) descriptor_[index] = true;
    if (!diffs.empty()) {
      std::string what;
      for (size_t i = 0; i < diffs.size(); ++i) what += (i ? ", " : "") + diffs[i];
      findings_.add(FindingKind::kHeaderMismatch, lho, e.name,
                    fmt::format("the local header of '{}' at {} gives {}: a reader that streams "
                                "the archive from the start follows the local header and may "
                                "extract something else than one that uses the central directory",
                                printable(e.name), lho, what));
    }
    return Status::ok();
  }

  // --- layout: data before, between, over and after entries ------------------------------------

  static bool is_descriptor_size(uint64_t gap) {
    // CRC and sizes, 32- or 64-bit, with or without the optional "PK\7\x08" signature.
    return gap == 12 || gap == 16 || gap == 20 || gap == 24;
  }

  Status check_layout() {
    const auto& entries = archive_.entries;
    std::vector<size_t> order(entries.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return entries[a].local_header_offset != entries[b].local_header_offset
                 ? entries[a].local_header_offset < entries[b].local_header_offset
                 : a < b;
    });
    archive_.archive_start = order.empty() ? cd_start_ : entries[order[0]].local_header_offset;
    const uint64_t start = archive_.archive_start;
    if (start > 0) {
      if (shift_ > 0)
        findings_.add(FindingKind::kDataBeforeArchive, 0, {},
                      fmt::format("{} bytes precede the archive, whose offsets count from its own "
                                  "start (every offset is {} bytes short): the ZIP was glued "
                                  "after other content, and readers that take offsets as "
                                  "absolute see that content instead",
                                  start, shift_));
      else
        findings_.add(FindingKind::kDataBeforeArchive, 0, {},
                      fmt::format("{} bytes precede the first local header at {}: the file starts "
                                  "as something else (a polyglot or self-extractor), and a tool "
                                  "that reads it from the start sees that other content",
                                  start, start));
      const uint64_t from = start - std::min(start, kSecondArchiveScan);
      look_for_second_archive(from, start);
    }

    uint64_t cursor = start;
    size_t owner = SIZE_MAX;  // the entry whose data ends at `cursor`
    auto name_of = [&](size_t i) { return printable(entries[i].name); };
    for (size_t idx : order) {
      const Entry& e = entries[idx];
      const uint64_t end = e.data_offset + e.compressed_size;  // checked in read_local_header
      if (e.local_header_offset > cursor) {
        const uint64_t gap = e.local_header_offset - cursor;
        if (!(owner != SIZE_MAX && descriptor_[owner] && is_descriptor_size(gap)))
          findings_.add(FindingKind::kGapBetweenEntries, cursor, e.name,
                        fmt::format("{} bytes at [{}, {}) before entry '{}' belong to no entry: "
                                    "hidden content that ZIP tools do not list",
                                    gap, cursor, e.local_header_offset, name_of(idx)));
      } else if (e.local_header_offset < cursor && owner != SIZE_MAX) {
        findings_.add(
            FindingKind::kOverlappingEntries, e.local_header_offset, e.name,
            fmt::format("entry '{}' [{}, {}) overlaps entry '{}', which extends to {}: "
                        "two entries claim the same bytes, so a reader may see "
                        "different content depending on which directory it trusts "
                        "(also a zip-bomb technique)",
                        name_of(idx), e.local_header_offset, end, name_of(owner), cursor));
      }
      if (end > cursor || owner == SIZE_MAX) {
        cursor = std::max(cursor, end);
        owner = idx;
      }
    }
    if (cd_start_ > cursor) {
      const uint64_t gap = cd_start_ - cursor;
      if (!(owner != SIZE_MAX && descriptor_[owner] && is_descriptor_size(gap)))
        findings_.add(FindingKind::kGapBetweenEntries, cursor, {},
                      fmt::format("{} bytes at [{}, {}) between the last entry and the central "
                                  "directory belong to no entry: hidden content that ZIP tools "
                                  "do not list",
                                  gap, cursor, cd_start_));
    }
    return Status::ok();
  }

  /// Reports a "PK\5\6" in [begin, end) that heads a plausible central directory of its own.
  /// Only the last kSecondArchiveScan bytes before `end` are looked at.
  void look_for_second_archive(uint64_t begin, uint64_t end) {
    if (end - begin < kEocdSize) return;
    std::vector<uint8_t> own;
    const uint8_t* bytes = nullptr;
    if (begin >= tail_start_ && end <= tail_start_ + tail_.size()) {
      bytes = &tail_[begin - tail_start_];
    } else {
      own.resize(end - begin);
      if (!src_.read(own, begin, "data outside the archive").is_ok()) return;
      bytes = own.data();
    }
    const uint64_t n = end - begin;
    int checked = 0;
    for (uint64_t p = n - kEocdSize + 1; p-- > 0 && checked < kSecondArchiveCandidates;) {
      if (bytes[p] != 'P' || le32(bytes + p) != kEocdSig) continue;
      ++checked;
      const uint64_t at = begin + p;
      const uint64_t count = le16(bytes + p + 10);
      const uint64_t size = le32(bytes + p + 12);
      const uint64_t offset = le32(bytes + p + 16);
      bool heads = false;
      if (count == 0 && size == 0) {
        heads = true;  // an empty archive's directory is just its end record
      } else if (size >= kCentralSize && size <= at && offset <= at - size) {
        // Offsets absolute, or relative to where that archive started.
        for (uint64_t cd : {offset, at - size}) {
          std::array<uint8_t, 4> sig{};
          if (src_.read(sig, cd, "a central directory").is_ok() && le32(sig.data()) == kCentralSig)
            heads = true;
        }
      }
      if (!heads) continue;
      findings_.add(FindingKind::kSecondArchive, at, {},
                    fmt::format("another end of central directory record at {} heads a central "
                                "directory of its own ({} entries): the file holds two archives, "
                                "and which one a tool shows depends on how it searches",
                                at, count));
      return;
    }
  }

  // --- names -----------------------------------------------------------------------------------

  void check_names() {
    const auto& entries = archive_.entries;
    // Duplicates, by sorting (no hash table of every name).
    std::vector<size_t> order(entries.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return entries[a].name != entries[b].name ? entries[a].name < entries[b].name : a < b;
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const Entry& a = entries[order[k - 1]];
      const Entry& b = entries[order[k]];
      if (a.name != b.name) continue;
      findings_.add(FindingKind::kDuplicateName, b.central_offset, b.name,
                    fmt::format("the name '{}' appears more than once (central directory records "
                                "at {} and {}): readers disagree on which entry they extract",
                                printable(b.name), a.central_offset, b.central_offset));
    }

    // torch puts everything under one folder; the most common first component of the relative
    // names is taken as it.
    auto root_of = [](std::string_view name) { return name.substr(0, name.find('/')); };
    auto in_folder = [](std::string_view name) {
      const size_t slash = name.find('/');
      return slash != std::string_view::npos && slash > 0 && !is_absolute(name);
    };
    std::map<std::string_view, uint64_t> roots;
    for (const Entry& e : entries)
      if (in_folder(e.name)) ++roots[root_of(e.name)];
    std::string_view root;
    uint64_t best = 0;
    for (const Entry& e : entries) {  // ties go to the root of the earliest entry
      if (!in_folder(e.name)) continue;
      const uint64_t n = roots[root_of(e.name)];
      if (n > best) {
        best = n;
        root = root_of(e.name);
      }
    }
    for (const Entry& e : entries) {
      const std::string_view name = e.name;
      std::string why;
      if (name.empty()) {
        why = "has an empty name";
      } else if (is_absolute(name)) {
        why = "is an absolute path, which an extracting tool may write anywhere";
      } else if (has_dot_dot(name)) {
        why = "contains a '..' component, which an extracting tool may write outside its folder";
      } else if (!in_folder(name)) {
        why =
            "is not inside a folder (torch writes every entry under one root folder, so this "
            "one was added by something else)";
      } else if (root_of(name) != root) {
        why = fmt::format(
            "is under '{}/', not the archive's root folder '{}/' (torch writes "
            "every entry under one root folder, so this one was added by "
            "something else)",
            printable(root_of(name)), printable(root));
      }
      if (why.empty()) continue;
      findings_.add(FindingKind::kNameOutsideRoot, e.central_offset, e.name,
                    fmt::format("entry '{}' {}", printable(name), why));
    }
  }

  /// "/x", "\\x" and Windows drive paths ("C:\\x", "c:x").
  static bool is_absolute(std::string_view name) {
    if (name.empty()) return false;
    if (name[0] == '/' || name[0] == '\\') return true;
    const char c = name[0];
    return name.size() >= 2 && name[1] == ':' && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'));
  }

  static bool has_dot_dot(std::string_view name) {
    size_t begin = 0;
    while (begin <= name.size()) {
      size_t end = name.find_first_of("/\\", begin);
      if (end == std::string_view::npos) end = name.size();
      if (name.substr(begin, end - begin) == "..") return true;
      begin = end + 1;
    }
    return false;
  }

  const ByteSource& src_;
  const Limits& limits_;
  const uint64_t size_;
  Archive archive_;
  FindingList findings_;

  std::vector<uint8_t> tail_;  ///< the last ≤ 22 + 65535 bytes of the file
  uint64_t tail_start_ = 0;
  uint64_t eocd_ = 0;
  uint64_t eocd_end_ = 0;  ///< after the end record's comment
  uint64_t zip64_at_ = 0;
  uint64_t zip64_shift_ = 0;  ///< where the ZIP64 record is minus where the locator says
  uint64_t locator_at_ = 0;
  uint64_t disk_ = 0, cd_disk_ = 0, count_on_disk_ = 0, count_ = 0;
  uint64_t cd_size_ = 0, cd_offset_ = 0;  ///< as stated
  uint64_t cd_end_ = 0;    ///< where the central directory must end: the (ZIP64) end record
  uint64_t cd_start_ = 0;  ///< where it actually starts (stated + shift_)
  uint64_t shift_ = 0;     ///< added to every stated offset (data prefixed to the archive)
  std::vector<uint8_t> cd_;
  std::vector<uint8_t> local_;
  std::vector<bool> descriptor_;  ///< per entry: flag bit 3 (a data descriptor follows)
};

// --- entry data ------------------------------------------------------------------------------

std::string entry_label(const Entry& e) { return fmt::format("entry '{}'", printable(e.name)); }

/// What read_archive guarantees, checked again since an Entry is a plain struct.
Status check_readable(const ByteSource& src, const Entry& e) {
  if ((e.flags & (kFlagEncrypted | kFlagStrongEncryption)) != 0)
    return unsupported_at(
        e.central_offset,
        fmt::format("{} is encrypted; encrypted archives are not supported", entry_label(e)));
  if (e.method != kMethodStored && e.method != kMethodDeflated)
    return unsupported_at(e.central_offset,
                          fmt::format("{}: compression method {} ({}) is not supported",
                                      entry_label(e), e.method, method_name(e.method)));
  auto end = add(e.data_offset, e.compressed_size);
  if (!end || *end > src.size())
    return corrupt_at(std::min(e.data_offset, src.size()),
                      "{}: its {} bytes of data at {} run past the end of the file ({} bytes)",
                      entry_label(e), e.compressed_size, e.data_offset, src.size());
  if (e.method == kMethodStored && e.compressed_size != e.uncompressed_size)
    return corrupt_at(e.central_offset,
                      "{}: a stored entry must have equal sizes, but they are {} and {}",
                      entry_label(e), e.compressed_size, e.uncompressed_size);
  return Status::ok();
}

/// Inflates the first `want` bytes of a deflated entry. With `whole`, `want` is the entry's
/// uncompressed size and the stream must end exactly there with no compressed bytes left over;
/// otherwise it stops once `want` bytes are out.
Result<std::vector<uint8_t>> inflate_entry(const ByteSource& src, const Entry& e, uint64_t want,
                                           bool whole) {
  std::vector<uint8_t> out;
  if (want == 0 && !whole) return out;
  // Some writers store an empty file as no bytes at all rather than an empty deflate stream.
  if (whole && want == 0 && e.compressed_size == 0) return out;
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
    return Status(ErrorCode::kInternal, "zlib could not start an inflate stream");
  struct End {
    z_stream* zs;
    ~End() { inflateEnd(zs); }
  } end_guard{&zs};

  const uint64_t chunk =
      std::min(e.compressed_size, whole ? kInflateInputChunk : kPrefixInputChunk);
  std::vector<uint8_t> in(chunk);
  out.resize(std::min(want, kInitialOutput));
  uint64_t read = 0;      // compressed bytes read so far
  uint64_t produced = 0;  // bytes inflated so far
  uint8_t probe = 0;      // room for one byte beyond `want`, to see whether more would come
  for (;;) {
    if (zs.avail_in == 0 && read < e.compressed_size) {
      const uint64_t n = std::min(e.compressed_size - read, chunk);
      CKPT_RETURN_IF_ERROR(
          src.read(std::span<uint8_t>(in).first(n), e.data_offset + read, "deflated entry data"));
      zs.next_in = in.data();
      zs.avail_in = static_cast<uInt>(n);
      read += n;
    }
    if (produced == out.size() && out.size() < want)
      out.resize(std::min(want, out.size() * 2 + kInitialOutput));
    const bool probing = produced == want;
    if (probing && !whole) break;
    if (probing) {
      zs.next_out = &probe;
      zs.avail_out = 1;
    } else {
      zs.next_out = out.data() + produced;
      zs.avail_out = static_cast<uInt>(std::min<uint64_t>(out.size() - produced, 1u << 30));
    }
    const uInt room = zs.avail_out;
    const int ret = inflate(&zs, Z_NO_FLUSH);
    const uint64_t made = room - zs.avail_out;
    const uint64_t at = e.data_offset + std::min<uint64_t>(zs.total_in, e.compressed_size);
    if (probing && made > 0)
      return corrupt_at(at,
                        "{} inflates to more than the {} bytes its central directory record "
                        "states",
                        entry_label(e), want);
    if (!probing) produced += made;
    if (ret == Z_STREAM_END) {
      const uint64_t left = zs.avail_in + (e.compressed_size - read);
      if (whole && left > 0)
        return corrupt_at(at,
                          "{}: the deflate stream ends {} bytes before the entry's compressed "
                          "data does",
                          entry_label(e), left);
      if (produced < want)
        return corrupt_at(at,
                          "{} inflates to {} bytes, but its central directory record states "
                          "{}",
                          entry_label(e), produced, whole ? want : e.uncompressed_size);
      break;
    }
    if (ret == Z_OK) continue;
    if (ret == Z_BUF_ERROR && zs.avail_in == 0 && read == e.compressed_size)
      return corrupt_at(at,
                        "{}: the deflate stream is cut off: its {} compressed bytes end before the "
                        "stream's end marker ({} bytes inflated)",
                        entry_label(e), e.compressed_size, produced);
    if (ret == Z_MEM_ERROR) return Status(ErrorCode::kInternal, "zlib ran out of memory");
    return corrupt_at(at, "{}: the deflate data is invalid ({})", entry_label(e),
                      zs.msg != nullptr ? zs.msg : "zlib error");
  }
  out.resize(produced);
  return out;
}

Result<std::vector<uint8_t>> read_entry_impl(const ByteSource& src, const Entry& e,
                                             const Limits& limits) {
  CKPT_RETURN_IF_ERROR(check_readable(src, e));
  std::vector<uint8_t> data;
  if (e.method == kMethodStored) {
    data.resize(e.compressed_size);
    CKPT_RETURN_IF_ERROR(src.read(data, e.data_offset, "stored entry data"));
  } else {
    if (e.uncompressed_size > limits.max_inflated_entry)
      return limit_at(e.data_offset,
                      fmt::format("{} inflates to {} bytes, over the limit of {} bytes",
                                  entry_label(e), e.uncompressed_size, limits.max_inflated_entry));
    CKPT_ASSIGN_OR_RETURN(data, inflate_entry(src, e, e.uncompressed_size, true));
  }
  if (!limits.check_crc) return data;
  // crc32_z takes a size_t length; one call covers any entry.
  const uint32_t crc = static_cast<uint32_t>(crc32_z(0, data.data(), data.size()));
  if (crc != e.crc32)
    return corrupt_at(e.data_offset,
                      "{}: the CRC-32 of its data is {:08x}, but its central directory record at "
                      "{} says {:08x}: the data is damaged or was changed",
                      entry_label(e), crc, e.central_offset, e.crc32);
  return data;
}

}  // namespace

bool crc_matches(const Entry& e, std::span<const uint8_t> data) {
  return static_cast<uint32_t>(crc32_z(0, data.data(), data.size())) == e.crc32;
}

namespace {

Result<std::vector<uint8_t>> read_entry_prefix_impl(const ByteSource& src, const Entry& e,
                                                    uint64_t max_bytes) {
  CKPT_RETURN_IF_ERROR(check_readable(src, e));
  const uint64_t want = std::min(max_bytes, e.uncompressed_size);
  if (e.method == kMethodDeflated) return inflate_entry(src, e, want, false);
  std::vector<uint8_t> data(want);
  CKPT_RETURN_IF_ERROR(src.read(data, e.data_offset, "stored entry data"));
  return data;
}

template <typename T>
Result<T> with_path(Result<T> r, const ByteSource& src) {
  if (r.is_ok()) return r;
  Status s = r.status();
  s.with_path(src.path());
  return s;
}

}  // namespace

std::string_view finding_id(FindingKind kind) {
  switch (kind) {
    case FindingKind::kDataBeforeArchive:
      return "data_before_archive";
    case FindingKind::kDataAfterArchive:
      return "data_after_archive";
    case FindingKind::kSecondArchive:
      return "second_archive";
    case FindingKind::kGapBetweenEntries:
      return "gap_between_entries";
    case FindingKind::kOverlappingEntries:
      return "overlapping_entries";
    case FindingKind::kHeaderMismatch:
      return "header_mismatch";
    case FindingKind::kDuplicateName:
      return "duplicate_name";
    case FindingKind::kNameOutsideRoot:
      return "name_outside_root";
    case FindingKind::kCrcMismatch:
      return "crc_mismatch";
    case FindingKind::kArchiveComment:
      return "archive_comment";
  }
  return "unknown";
}

const Entry* Archive::find(std::string_view name) const {
  for (const Entry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

Result<Archive> read_archive(const ByteSource& src, const Limits& limits) {
  ArchiveReader reader(src, limits);
  return with_path(reader.read(), src);
}

Result<std::vector<uint8_t>> read_entry(const ByteSource& src, const Entry& entry,
                                        const Limits& limits) {
  return with_path(read_entry_impl(src, entry, limits), src);
}

Result<std::vector<uint8_t>> read_entry_prefix(const ByteSource& src, const Entry& entry,
                                               uint64_t max_bytes) {
  return with_path(read_entry_prefix_impl(src, entry, max_bytes), src);
}

}  // namespace ckptkit::zip
