// Random-access byte sources for parsers that must work both on files and on memory (the
// fuzzers and unit tests feed parsers from memory; the CLI from files).
//
// A ByteSource is read-only. `read` fills the whole span or fails with a Corrupt status that
// names `what` was expected at `offset` (reading past the end of a model file means truncation).
// Thread safety: read() may be called from many threads at once.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "ckptkit/status.h"
#include "io/errors.h"
#include "io/file.h"

namespace ckptkit {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  /// The path used in messages ("" for memory).
  virtual const std::string& path() const = 0;
  virtual Status read(std::span<uint8_t> out, uint64_t offset, std::string_view what) const = 0;
};

/// A view of an open InputFile; the file must outlive it.
class FileSource final : public ByteSource {
 public:
  explicit FileSource(const InputFile& file) : file_(file) {}
  uint64_t size() const override { return file_.size(); }
  const std::string& path() const override { return file_.path(); }
  Status read(std::span<uint8_t> out, uint64_t offset, std::string_view what) const override {
    return file_.pread_exact(out, offset, what);
  }
  const InputFile& file() const { return file_; }

 private:
  const InputFile& file_;
};

/// A view of bytes in memory; the bytes must outlive it.
class MemorySource final : public ByteSource {
 public:
  explicit MemorySource(std::span<const uint8_t> bytes, std::string path = {})
      : bytes_(bytes), path_(std::move(path)) {}
  uint64_t size() const override { return bytes_.size(); }
  const std::string& path() const override { return path_; }
  Status read(std::span<uint8_t> out, uint64_t offset, std::string_view what) const override {
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      Status s = corrupt_at(offset, "data ends while reading {} ({} bytes needed, {} left)", what,
                            out.size(), offset > bytes_.size() ? 0 : bytes_.size() - offset);
      s.with_path(path_);
      return s;
    }
    if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
    return Status::ok();
  }

 private:
  std::span<const uint8_t> bytes_;
  std::string path_;
};

}  // namespace ckptkit
