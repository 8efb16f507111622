// Reader for the ZIP archives that torch.save writes since PyTorch 1.6 (.ckpt/.pt/.bin).
//
// Byte layout (APPNOTE.TXT 6.3.x; all integers little-endian):
//
//   [local file header "PK\3\4" (30 bytes + name + extra) | entry data]...   one per entry
//   [central directory: "PK\1\2" records (46 bytes + name + extra + comment)]...
//   [ZIP64 end of central directory "PK\6\6" (56+ bytes)]     only when a field overflows 32 bits
//   [ZIP64 EOCD locator "PK\6\7" (20 bytes)]                  ditto
//   [end of central directory "PK\5\6" (22 bytes + comment ≤ 65535)]
//
// torch writes entries `<root>/data.pkl`, `<root>/data/<key>`, `<root>/byteorder`,
// `<root>/version` (and `.data/serialization_id`, …) with method 0 (stored), data aligned to 64
// bytes via padding in the local header's extra field, and ZIP64 fields where sizes need them.
// The root name is whatever the file was saved as (`archive/`, `v1-5-pruned/`, …).
//
// The reader is strict about what would make reading wrong (every offset and size checked
// against the file with overflow-safe arithmetic; entries must lie inside the archive) and
// lenient about what only looks odd: those are collected as `findings` for `scan`/`verify`
// instead of failing (a second archive appended, data before the first entry, local and central
// headers that disagree on a name, overlapping entries, ...).
//
// Thread safety: an Archive is immutable after read_archive() returns; read_entry() may be
// called from several threads.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/status.h"
#include "io/source.h"

namespace ckptkit::zip {

inline constexpr uint16_t kMethodStored = 0;
inline constexpr uint16_t kMethodDeflated = 8;

struct Entry {
  std::string name;                  ///< as in the central directory ("archive/data/0")
  uint16_t method = 0;               ///< kMethodStored or kMethodDeflated (others refused)
  uint16_t flags = 0;                ///< general purpose bit flags (bit 0 encrypted: refused)
  uint32_t crc32 = 0;                ///< from the central directory
  uint64_t compressed_size = 0;      ///< bytes stored in the archive
  uint64_t uncompressed_size = 0;    ///< bytes after inflating (== compressed for stored)
  uint64_t central_offset = 0;       ///< absolute offset of its "PK\1\2" record (for messages)
  uint64_t local_header_offset = 0;  ///< absolute offset of its "PK\3\4" header
  uint64_t data_offset = 0;          ///< absolute offset of the first stored byte
  /// The first stored bytes (up to 8), when reading the local header already covered them
  /// (`head_size` says how many; 0 when not): lets scan sniff a storage without another read.
  std::array<uint8_t, 8> head{};
  uint8_t head_size = 0;
};

enum class FindingKind : uint8_t {
  kDataBeforeArchive,   ///< bytes before the first local header (a polyglot, or a prefixed file)
  kDataAfterArchive,    ///< bytes after the end of central directory record + its comment
  kSecondArchive,       ///< another "PK\5\6"/central directory found: two archives in one file
  kGapBetweenEntries,   ///< bytes between entries that no entry covers
  kOverlappingEntries,  ///< two entries' [local header, data end) ranges overlap
  kHeaderMismatch,      ///< local header disagrees with the central record (name, sizes, method)
  kDuplicateName,       ///< two entries with the same name (which one a reader uses differs)
  kNameOutsideRoot,     ///< entries under different root folders, absolute paths or ".."
  kCrcMismatch,     ///< reserved for a later verify pass (read_entry reports a CRC mismatch as an
                    ///< error)
  kArchiveComment,  ///< a non-empty archive comment (torch never writes one)
};

/// The stable identifier used in JSON ("data_before_archive", ...).
std::string_view finding_id(FindingKind kind);

/// Whether `data` (an entry's whole uncompressed data) has the CRC-32 its central record states.
bool crc_matches(const Entry& e, std::span<const uint8_t> data);

struct Finding {
  FindingKind kind;
  uint64_t offset = 0;  ///< absolute offset where it was seen
  std::string entry;    ///< the entry concerned, if any
  std::string message;  ///< plain words: what is odd and why it matters
};

struct Limits {
  uint64_t max_entries = 1u << 20;                ///< central directory records
  uint64_t max_inflated_entry = 256ull << 20;     ///< read_entry() of a deflated entry
  uint64_t max_central_directory = 256ull << 20;  ///< bytes; it is read into memory at once
  /// read_entry() refuses data whose CRC-32 differs from the central record. torch.load does
  /// not check CRCs (PyTorch builds miniz with MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS), so scan
  /// turns this off, reads what torch would read and reports the mismatch (crc_matches).
  bool check_crc = true;
};

struct Archive {
  std::vector<Entry> entries;  ///< in central directory order
  /// Structural oddities that did not stop reading, sorted by offset, at most 16 per kind (plus
  /// one summary finding) so that a hostile archive cannot make millions.
  std::vector<Finding> findings;
  uint64_t archive_start = 0;  ///< offset of the first local header (0 normally; the central
                               ///< directory's offset for an empty archive)
  uint64_t central_directory_offset = 0;
  uint64_t eocd_offset = 0;  ///< absolute offset of "PK\5\6"
  bool zip64 = false;        ///< a value came from a ZIP64 end record or extra field

  /// The first entry with exactly this name, or nullptr.
  const Entry* find(std::string_view name) const;
};

/// Parses the central directory and every local header. Errors (Corrupt, naming the path and
/// the byte offset) for anything that makes entries unreadable: no end record, a central
/// directory or entry reaching outside the file, counts that disagree, unsupported compression
/// or encryption, sizes that overflow.
Result<Archive> read_archive(const ByteSource& src, const Limits& limits = {});

/// Reads a whole entry into memory: stored entries with one read, deflated ones through zlib
/// (raw deflate), refusing more than limits.max_inflated_entry bytes or an output whose size
/// differs from uncompressed_size. The CRC-32 is checked; a mismatch is a Corrupt error.
Result<std::vector<uint8_t>> read_entry(const ByteSource& src, const Entry& entry,
                                        const Limits& limits = {});

/// Reads up to `max_bytes` from the start of an entry (stored: a plain read; deflated:
/// inflates only that much). For sniffing an entry's content without reading it all.
Result<std::vector<uint8_t>> read_entry_prefix(const ByteSource& src, const Entry& entry,
                                               uint64_t max_bytes);

}  // namespace ckptkit::zip
