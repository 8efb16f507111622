// Atomic output files and their cleanup on signals.
//
// The registry of live temporaries is a fixed array of path slots so that the signal handler
// touches only async-signal-safe things: an atomic flag per slot and unlink(2).
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <climits>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "io/errors.h"
#include "io/file.h"

namespace ckptkit {
namespace {

constexpr int kSlots = 64;
struct Slot {
  std::atomic<bool> live{false};
  char path[PATH_MAX]{};
};
// constinit: zero pages in .bss, never touched unless used. A dynamically initialized array
// here cost every run 256 KB of page faults before main().
constinit std::array<Slot, kSlots> g_slots{};

int register_temp(const std::string& path) {
  if (path.size() >= PATH_MAX) return -1;
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[static_cast<size_t>(i)];
    if (!s.live.load(std::memory_order_acquire)) {
      std::memcpy(s.path, path.c_str(), path.size() + 1);
      s.live.store(true, std::memory_order_release);
      return i;
    }
  }
  return -1;  // more than kSlots outputs at once: cleanup on signal is then best effort
}

void unregister_temp(int slot) {
  if (slot >= 0) g_slots[static_cast<size_t>(slot)].live.store(false, std::memory_order_release);
}

extern "C" void cleanup_and_reraise(int sig) {
  for (Slot& s : g_slots) {
    if (s.live.load(std::memory_order_acquire)) ::unlink(s.path);
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

std::string parent_dir(const std::string& path) {
  std::filesystem::path p(path);
  std::string dir = p.parent_path().string();
  return dir.empty() ? std::string(".") : dir;
}

Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return os_error("cannot open directory to sync it", dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) return os_error("cannot sync directory", dir, err);
  return Status::ok();
}

}  // namespace

void install_cleanup_signal_handlers() {
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) return;
  struct sigaction sa {};
  sa.sa_handler = cleanup_and_reraise;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

OutputFile::OutputFile(int fd, std::string path, std::string temp_path, int slot,
                       OutputOptions options)
    : fd_(fd),
      path_(std::move(path)),
      temp_path_(std::move(temp_path)),
      slot_(slot),
      options_(options) {}

Result<std::unique_ptr<OutputFile>> OutputFile::create(const std::string& path,
                                                       std::span<const InputFile* const> inputs,
                                                       const OutputOptions& options) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    for (const InputFile* in : inputs) {
      if (in != nullptr && in->device() == st.st_dev && in->inode() == st.st_ino) {
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("refusing to overwrite the input file {}: write to another "
                                  "path (inputs are never modified)",
                                  in->path()),
                      path);
      }
    }
    if (S_ISDIR(st.st_mode))
      return Status(ErrorCode::kInvalidArgument, "output path is a directory", path);
    if (!options.force)
      return Status(ErrorCode::kInvalidArgument,
                    "output file already exists (use --force to replace it)", path);
  }
  std::string dir = parent_dir(path);
  std::string base = std::filesystem::path(path).filename().string();
  std::string templ = dir + "/." + base + ".ckptkit-tmp-XXXXXX";
  std::string buf = templ;
  // A signal between creating the temporary and registering it would leave it behind: hold
  // SIGINT/SIGTERM/SIGHUP until the registry knows the name (found by test_cli's signal test).
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &block, &old);
  int fd = ::mkostemp(buf.data(), O_CLOEXEC);
  const int create_errno = errno;
  const int slot = fd >= 0 ? register_temp(buf) : -1;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (fd < 0) return os_error("cannot create a temporary output file in", dir, create_errno);
  (void)::fchmod(
      fd, 0644 & ~[] {
        mode_t m = ::umask(0);
        ::umask(m);
        return m;
      }());
  return std::unique_ptr<OutputFile>(new OutputFile(fd, path, buf, slot, options));
}

OutputFile::~OutputFile() {
  close_pipe();
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
  unregister_temp(slot_);
}

Status OutputFile::truncate(uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
    return os_error("cannot size the output file", temp_path_);
  return Status::ok();
}

Status OutputFile::pwrite_all(std::span<const uint8_t> data, uint64_t offset) {
  uint64_t done = 0;
  while (done < data.size()) {
    ssize_t n =
        ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("write failed", path_, errno, offset + done);
    }
    done += static_cast<uint64_t>(n);
  }
  return Status::ok();
}

void OutputFile::close_pipe() {
  for (int& p : pipe_)
    if (p >= 0) ::close(p), p = -1;
}

Status OutputFile::write_block(std::span<const uint8_t> data, uint64_t offset) {
  std::lock_guard<std::mutex> lock(splice_mu_);
  if (splice_ok_ && pipe_[0] < 0) {
    if (::pipe2(pipe_, O_CLOEXEC) != 0) {
      splice_ok_ = false;
    } else {
      (void)::fcntl(pipe_[1], F_SETPIPE_SZ, 1 << 20);  // fewer round trips; the default works too
    }
  }
  uint64_t done = 0;
  // Where splicing is refused (EINVAL: a file system without splice_write), the bytes not yet
  // in the file are written with pwrite; whatever the pipe still holds is discarded with it.
  auto fall_back = [&] {
    close_pipe();
    splice_ok_ = false;
    return pwrite_all(data.subspan(done), offset + done);
  };
  while (splice_ok_ && done < data.size()) {
    // The pipe is empty here, so vmsplice takes what fits (up to its size) without blocking.
    iovec iov{const_cast<uint8_t*>(data.data() + done), data.size() - done};
    const ssize_t lent = ::vmsplice(pipe_[1], &iov, 1, SPLICE_F_NONBLOCK);
    if (lent < 0) {
      if (errno == EINTR) continue;
      return fall_back();
    }
    uint64_t left = static_cast<uint64_t>(lent);
    while (left > 0) {
      loff_t at = static_cast<loff_t>(offset + done);
      const ssize_t n = ::splice(pipe_[0], nullptr, fd_, &at, left, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS)) return fall_back();
      if (n <= 0) {
        const int e = n < 0 ? errno : EIO;
        close_pipe();
        splice_ok_ = false;
        return os_error("write failed", path_, e, offset + done);
      }
      left -= static_cast<uint64_t>(n);
      done += static_cast<uint64_t>(n);
    }
  }
  if (done < data.size()) return pwrite_all(data.subspan(done), offset + done);
  return Status::ok();
}

Status OutputFile::commit() {
  if (options_.sync && ::fsync(fd_) != 0) return os_error("cannot sync output", temp_path_);
  if (::close(fd_) != 0) {
    fd_ = -1;
    return os_error("cannot close output", temp_path_);
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    return os_error("cannot move the finished output into place", path_);
  committed_ = true;
  if (options_.sync) CKPT_RETURN_IF_ERROR(fsync_dir(parent_dir(path_)));
  return Status::ok();
}

}  // namespace ckptkit
