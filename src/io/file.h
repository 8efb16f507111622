// Files as the pipeline reads them: read-only inputs accessed with pread and reusable aligned
// buffers. Outputs are in io/output.h.
//
// Thread safety: InputFile::pread_exact may be called from many threads at once (pread carries
// its own offset). Opening and destruction are single-threaded.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "ckptkit/status.h"

namespace ckptkit {

class InputFile {
 public:
  /// Opens for reading only (inputs are never opened for writing). Directories are refused.
  static Result<InputFile> open(const std::string& path);

  InputFile(InputFile&& other) noexcept;
  InputFile& operator=(InputFile&& other) noexcept;
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile();

  /// Reads exactly out.size() bytes at `offset`. Reading past the end of the file is a Corrupt
  /// status naming what was expected there (`what`), since for a model file it means truncation.
  Status pread_exact(std::span<uint8_t> out, uint64_t offset, std::string_view what) const;

  /// True when [offset, offset + len) is all hole (sparse files: it reads as zeros, and
  /// copies and casts of it can stay holes). One lseek(SEEK_DATA).
  bool is_hole(uint64_t offset, uint64_t len) const;

  /// Tells the kernel the range will be read sequentially soon (readahead).
  void advise_sequential(uint64_t offset, uint64_t length) const;

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  dev_t device() const { return dev_; }
  ino_t inode() const { return ino_; }

 private:
  InputFile(int fd, std::string path, uint64_t size, dev_t dev, ino_t ino)
      : fd_(fd), size_(size), path_(std::move(path)), dev_(dev), ino_(ino) {}
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

/// A page-aligned buffer, huge-page advised and pre-faulted once, then reused: first-touch page
/// faults are the dominant cost of fresh memory on small machines.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size);
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<uint8_t> span() { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ckptkit
