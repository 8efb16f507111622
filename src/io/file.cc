#include "io/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "io/errors.h"

namespace ckptkit {

bool InputFile::is_hole(uint64_t offset, uint64_t len) const {
  if (len == 0) return true;
  const off_t data = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
  if (data < 0) return errno == ENXIO;  // no data after offset
  return static_cast<uint64_t>(data) >= offset + len;
}

Result<InputFile> InputFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return os_error("cannot open", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = os_error("cannot stat", path);
    ::close(fd);
    return s;
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return Status(ErrorCode::kInvalidArgument, "is a directory, not a checkpoint file", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status(ErrorCode::kInvalidArgument, "is not a regular file", path);
  }
  return InputFile(fd, path, static_cast<uint64_t>(st.st_size), st.st_dev, st.st_ino);
}

InputFile::InputFile(InputFile&& other) noexcept
    : fd_(other.fd_),
      size_(other.size_),
      path_(std::move(other.path_)),
      dev_(other.dev_),
      ino_(other.ino_) {
  other.fd_ = -1;
}

InputFile& InputFile::operator=(InputFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    size_ = other.size_;
    path_ = std::move(other.path_);
    dev_ = other.dev_;
    ino_ = other.ino_;
    other.fd_ = -1;
  }
  return *this;
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status InputFile::pread_exact(std::span<uint8_t> out, uint64_t offset,
                              std::string_view what) const {
  uint64_t done = 0;
  while (done < out.size()) {
    ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("read failed", path_, errno, offset + done);
    }
    if (n == 0) {
      return Status(ErrorCode::kCorrupt,
                    fmt::format("file ends at byte {} while reading {} ({} bytes expected at "
                                "offset {}): the file is truncated",
                                offset + done, what, out.size(), offset),
                    path_, offset + done);
    }
    done += static_cast<uint64_t>(n);
  }
  return Status::ok();
}

void InputFile::advise_sequential(uint64_t offset, uint64_t length) const {
  (void)::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
                        POSIX_FADV_WILLNEED);
}

AlignedBuffer::AlignedBuffer(size_t size) : size_(size) {
  if (size == 0) return;
  constexpr size_t kHuge = size_t{2} << 20;
  size_t alloc = (size + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, alloc);
  if (p == nullptr) throw std::bad_alloc();
  (void)::madvise(p, alloc, MADV_HUGEPAGE);
  std::memset(p, 0, size);  // pre-fault once; every later use is warm
  data_ = static_cast<uint8_t*>(p);
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    std::free(data_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

}  // namespace ckptkit
