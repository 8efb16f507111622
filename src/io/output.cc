// Output files and folders that appear whole or not at all (see output.h for the contract).
//
// The registry of live named temporaries is a fixed array of path slots so that the signal
// handler touches only async-signal-safe things: an atomic flag per slot and unlink(2).
// Anonymous temporaries need no registry: the kernel frees them with the process.
#include "io/output.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>

#include "io/errors.h"

namespace ckptkit {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kTempTag = ".ckptkit-tmp-";

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
    bool expected = false;
    if (!s.live.load(std::memory_order_acquire)) {
      std::memcpy(s.path, path.c_str(), path.size() + 1);
      if (s.live.compare_exchange_strong(expected, true, std::memory_order_release)) return i;
    }
  }
  return -1;  // more than kSlots outputs at once: the next run's stale cleanup catches them
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

/// Holds SIGINT/SIGTERM/SIGHUP for its lifetime: between creating a named temporary and
/// registering it, and while outputs are being linked into place (a signal then takes effect
/// once the outputs are complete).
class SignalHold {
 public:
  SignalHold() {
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    ::pthread_sigmask(SIG_BLOCK, &block, &old_);
  }
  ~SignalHold() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  SignalHold(const SignalHold&) = delete;
  SignalHold& operator=(const SignalHold&) = delete;

 private:
  sigset_t old_;
};

std::string parent_dir(const std::string& path) {
  std::string dir = fs::path(path).parent_path().string();
  return dir.empty() ? std::string(".") : dir;
}

std::string base_name(const std::string& path) { return fs::path(path).filename().string(); }

/// `.BASE.ckptkit-tmp-PID-` : the prefix of every temporary name; BASE shortened so that the
/// whole name stays within NAME_MAX.
std::string temp_prefix(const std::string& base) {
  return fmt::format(".{}{}{}-", base.substr(0, 192), kTempTag, ::getpid());
}

std::string random_suffix() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char bytes[6] = {};
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) {
    const auto t = static_cast<uint64_t>(std::time(nullptr)) ^ reinterpret_cast<uintptr_t>(bytes);
    for (size_t i = 0; i < sizeof bytes; ++i) bytes[i] = static_cast<unsigned char>(t >> (8 * i));
  }
  std::string s;
  for (unsigned char b : bytes) s += kAlphabet[b % (sizeof kAlphabet - 1)];
  return s;
}

/// The writer's pid in a temporary's name `.BASE.ckptkit-tmp-PID-XXXXXX`, or 0 when the name
/// is not of that form.
pid_t temp_owner(std::string_view name) {
  if (name.size() < 2 || name[0] != '.') return 0;
  const size_t tag = name.rfind(kTempTag);
  if (tag == std::string_view::npos) return 0;
  std::string_view rest = name.substr(tag + kTempTag.size());
  const size_t dash = rest.find('-');
  if (dash == 0 || dash == std::string_view::npos || rest.size() - dash - 1 != 6) return 0;
  int64_t pid = 0;
  for (char c : rest.substr(0, dash)) {
    if (c < '0' || c > '9' || pid > (int64_t{1} << 31)) return 0;
    pid = pid * 10 + (c - '0');
  }
  for (char c : rest.substr(dash + 1))
    if (!std::isalnum(static_cast<unsigned char>(c))) return 0;
  return static_cast<pid_t>(pid);
}

Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return os_error("cannot open the folder to sync it", dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) return os_error("cannot sync the folder", dir, err);
  return Status::ok();
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

/// A folder outputs can be written into: it exists, is a folder and is writable (a read-only
/// file system and a missing permission are found here, before any work).
Status check_writable_dir(const std::string& dir, std::string_view what) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    return errno == ENOENT
               ? Status(ErrorCode::kNotFound, fmt::format("the {} does not exist", what), dir)
               : os_error(fmt::format("cannot use the {}", what), dir);
  if (!S_ISDIR(st.st_mode))
    return Status(ErrorCode::kInvalidArgument, fmt::format("the {} is not a folder", what), dir);
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return os_error(fmt::format("cannot write into the {}", what), dir);
  return Status::ok();
}

/// Refusals shared by single outputs and the files of a folder.
Status check_destination(const std::string& path, std::span<const InputFile* const> inputs,
                         bool force) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::ok();
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
    return Status(ErrorCode::kInvalidArgument, "the output path is a folder, not a file", path);
  if (!force)
    return Status(ErrorCode::kInvalidArgument,
                  "the output file already exists (use --force to replace it)", path);
  return Status::ok();
}

Status appeared_meanwhile(const std::string& dest) {
  return Status(ErrorCode::kInvalidArgument,
                "the output appeared while this one was being written (another process?); it "
                "was not replaced (use --force to replace it)",
                dest);
}

/// The available space of the file system holding `fd`, or nullopt when it cannot be known.
std::optional<uint64_t> free_space(int fd) {
  struct statvfs sv {};
  if (::fstatvfs(fd, &sv) != 0 || sv.f_frsize == 0) return std::nullopt;
  return static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
}

}  // namespace

namespace detail {

bool test_fs_lacks(std::string_view feature) {
  static const std::string features = [] {
    const char* v = std::getenv("CKPTKIT_TEST_FS");
    return std::string(v ? v : "");
  }();
  std::string_view rest = features;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    if (rest.substr(0, comma) == feature) return true;
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return false;
}

void test_hold(std::string_view point) {
  static const char* hold = std::getenv("CKPTKIT_TEST_HOLD");
  if (hold == nullptr) return;
  std::string_view h = hold;
  double seconds = 60;
  if (const size_t colon = h.find(':'); colon != std::string_view::npos) {
    seconds = std::strtod(std::string(h.substr(colon + 1)).c_str(), nullptr);
    h = h.substr(0, colon);
  }
  if (h != point) return;
  std::fprintf(stderr, "ckptkit: test hold at %.*s\n", static_cast<int>(point.size()),
               point.data());
  std::fflush(stderr);
  timespec ts{
      static_cast<time_t>(seconds),
      static_cast<long>((seconds - static_cast<double>(static_cast<time_t>(seconds))) * 1e9)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

}  // namespace detail

std::string nearest_existing_dir(const std::string& path) {
  fs::path p = path.empty() ? fs::path(".") : fs::path(path);
  for (;;) {
    if (is_dir(p.string())) return p.string();
    fs::path parent = p.parent_path();
    if (parent.empty()) return ".";
    if (parent == p) return p.string();
    p = parent;
  }
}

size_t remove_stale_temporaries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  const int dfd = ::dirfd(d);
  size_t removed = 0;
  std::vector<std::string> stale_dirs;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    const pid_t pid = temp_owner(name);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its writer may still be running
    const int fd = ::openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat st {};
    // A writer in another pid namespace holds the lock even though its pid means nothing here.
    const bool unlocked = ::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &st) == 0;
    if (unlocked && S_ISREG(st.st_mode) && ::unlinkat(dfd, e->d_name, 0) == 0) ++removed;
    if (unlocked && S_ISDIR(st.st_mode)) stale_dirs.emplace_back(name);
    ::close(fd);
  }
  ::closedir(d);
  for (const std::string& name : stale_dirs) {
    std::error_code ec;  // remove_all never follows symbolic links
    if (fs::remove_all(fs::path(dir) / name, ec) > 0 && !ec) ++removed;
  }
  return removed;
}

Status check_safetensors_output_name(const std::string& path) {
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0)
    return Status(ErrorCode::kInvalidArgument,
                  "this command writes safetensors, not GGUF: name the output .safetensors, then "
                  "`ckptkit convert OUT.safetensors -o OUT.gguf --quant TYPE`",
                  path);
  return Status::ok();
}

Status check_output_path(const std::string& path, bool force) {
  CKPT_RETURN_IF_ERROR(check_destination(path, {}, force));
  const std::string dir = parent_dir(path);
  CKPT_RETURN_IF_ERROR(check_writable_dir(dir, "output folder"));
  remove_stale_temporaries(dir);
  return Status::ok();
}

Status check_output_folder(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
    return Status(ErrorCode::kInvalidArgument, "the output path exists and is not a folder", dir);
  const std::string existing = nearest_existing_dir(dir);
  CKPT_RETURN_IF_ERROR(check_writable_dir(
      existing, existing == dir ? "output folder" : "folder the output folder would be made in"));
  remove_stale_temporaries(existing);
  return Status::ok();
}

void install_cleanup_signal_handlers() {
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) return;
  struct sigaction sa {};
  sa.sa_handler = cleanup_and_reraise;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

// --- OutputFile ------------------------------------------------------------------------------

Result<std::unique_ptr<OutputFile>> OutputFile::create(const std::string& path,
                                                       std::span<const InputFile* const> inputs,
                                                       const OutputOptions& options) {
  CKPT_RETURN_IF_ERROR(check_destination(path, inputs, options.force));
  const std::string dir = parent_dir(path);
  CKPT_RETURN_IF_ERROR(check_writable_dir(dir, "output folder"));
  remove_stale_temporaries(dir);
  std::unique_ptr<OutputFile> out(new OutputFile(path, options));
  CKPT_RETURN_IF_ERROR(out->open_temporary(dir));
  return out;
}

Status OutputFile::open_temporary(const std::string& dir) {
  if (!detail::test_fs_lacks("no-tmpfile")) {
    fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
    if (fd_ >= 0) {
      (void)::flock(fd_, LOCK_EX | LOCK_NB);
      return Status::ok();
    }
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
      return os_error("cannot create the output file in", dir);
  }
  // No O_TMPFILE here: a named temporary, registered for the signal handlers and locked for
  // the stale cleanup of later runs.
  std::string name = fmt::format("{}/{}XXXXXX", dir, temp_prefix(base_name(path_)));
  {
    SignalHold hold;
    fd_ = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd_ < 0) return os_error("cannot create a temporary output file in", dir);
    slot_ = register_temp(name);
  }
  named_temp_ = name;
  (void)::flock(fd_, LOCK_EX | LOCK_NB);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  (void)::fchmod(fd_, 0644 & ~mask);
  return Status::ok();
}

OutputFile::~OutputFile() {
  close_pipe();
  if (!committed_ && !named_temp_.empty()) ::unlink(named_temp_.c_str());
  unregister_temp(slot_);
  if (fd_ >= 0) ::close(fd_);
}

Status OutputFile::write_error(int err, uint64_t offset) const {
  if (err == ENOSPC || err == EDQUOT) {
    const std::optional<uint64_t> avail = free_space(fd_);
    return Status(
        ErrorCode::kIoError,
        fmt::format("the disk is full: writing the output ({}) failed at byte {}{}: {}",
                    human_bytes(size_), offset,
                    avail ? fmt::format(", {} free", human_bytes(*avail)) : "", std::strerror(err)),
        path_, offset);
  }
  return os_error("write failed", path_, err, offset);
}

Status OutputFile::truncate(uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return write_error(errno, 0);
  size_ = size;
  return Status::ok();
}

Status OutputFile::reserve(std::span<const ByteRange> ranges) {
  if (detail::test_fs_lacks("no-reserve")) return Status::ok();
  uint64_t total = 0;
  for (const ByteRange& r : ranges) total += r.length;
  if (total == 0) return Status::ok();
  auto no_room = [&](std::optional<uint64_t> avail) {
    return Status(ErrorCode::kIoError,
                  fmt::format("not enough space for the output: it needs {} ({} bytes), the "
                              "file system has {} free; nothing was written",
                              human_bytes(total), total,
                              avail ? human_bytes(*avail) : std::string("less than that")),
                  path_);
  };
  const std::optional<uint64_t> avail = free_space(fd_);
  if (avail && total > *avail) return no_room(avail);
  for (const ByteRange& r : ranges) {
    if (r.length == 0) continue;
    if (::fallocate(fd_, 0, static_cast<off_t>(r.offset), static_cast<off_t>(r.length)) == 0)
      continue;
    const int err = errno;
    if (err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) return Status::ok();
    if (err == ENOSPC || err == EDQUOT) return no_room(free_space(fd_));
    return write_error(err, r.offset);
  }
  return Status::ok();
}

Status OutputFile::pwrite_all(std::span<const uint8_t> data, uint64_t offset) {
  uint64_t done = 0;
  while (done < data.size()) {
    ssize_t n =
        ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return write_error(errno, offset + done);
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
        return write_error(e, offset + done);
      }
      left -= static_cast<uint64_t>(n);
      done += static_cast<uint64_t>(n);
    }
  }
  if (done < data.size()) return pwrite_all(data.subspan(done), offset + done);
  return Status::ok();
}

Status OutputFile::sync_data() {
  close_pipe();
  if (options_.sync && ::fsync(fd_) != 0) {
    const int err = errno;
    return err == ENOSPC || err == EDQUOT ? write_error(err, size_)
                                          : os_error("cannot sync the output", path_, err);
  }
  return Status::ok();
}

Status OutputFile::link_as(const std::string& dest, bool replace) {
  if (!named_temp_.empty()) {
    int rc = replace ? ::rename(named_temp_.c_str(), dest.c_str())
                     : ::renameat2(AT_FDCWD, named_temp_.c_str(), AT_FDCWD, dest.c_str(),
                                   RENAME_NOREPLACE);
    if (rc != 0 && !replace && (errno == EINVAL || errno == ENOSYS)) {
      // No RENAME_NOREPLACE on this file system: link(2) refuses an existing name too.
      rc = ::link(named_temp_.c_str(), dest.c_str());
      if (rc == 0) ::unlink(named_temp_.c_str());
    }
    if (rc != 0)
      return errno == EEXIST ? appeared_meanwhile(dest)
                             : os_error("cannot move the finished output into place", dest);
    unregister_temp(slot_);
    slot_ = -1;
    named_temp_.clear();
    return Status::ok();
  }
  // Anonymous: give the inode a name. /proc/self/fd needs no privilege; AT_EMPTY_PATH is the
  // way without /proc (it needs CAP_DAC_READ_SEARCH).
  const std::string proc = fmt::format("/proc/self/fd/{}", fd_);
  auto link_to = [&](const std::string& name) {
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW) == 0) return 0;
    int err = errno;
    if (err == ENOENT && ::access("/proc/self/fd", F_OK) != 0) {
      if (::linkat(fd_, "", AT_FDCWD, name.c_str(), AT_EMPTY_PATH) == 0) return 0;
      err = errno;
    }
    return err;
  };
  if (!replace) {
    const int err = link_to(dest);
    if (err == EEXIST) return appeared_meanwhile(dest);
    if (err != 0) return os_error("cannot link the finished output into place", dest, err);
    return Status::ok();
  }
  // link(2) never replaces: link under a private name, then rename over the destination.
  const std::string dir = parent_dir(dest);
  std::string temp;
  int err = EEXIST;
  for (int attempt = 0; attempt < 16 && err == EEXIST; ++attempt) {
    temp = fmt::format("{}/{}{}", dir, temp_prefix(base_name(dest)), random_suffix());
    err = link_to(temp);
  }
  if (err != 0) return os_error("cannot link the finished output into place", dest, err);
  detail::test_hold("rename");
  if (::rename(temp.c_str(), dest.c_str()) != 0) {
    err = errno;
    ::unlink(temp.c_str());
    return os_error("cannot move the finished output into place", dest, err);
  }
  return Status::ok();
}

Status OutputFile::commit() {
  CKPT_RETURN_IF_ERROR(sync_data());
  detail::test_hold("link");
  {
    SignalHold hold;
    CKPT_RETURN_IF_ERROR(link_as(path_, options_.force));
    committed_ = true;
  }
  if (::close(fd_) != 0) {
    fd_ = -1;
    return os_error("cannot close the output", path_);
  }
  fd_ = -1;
  if (options_.sync) CKPT_RETURN_IF_ERROR(fsync_dir(parent_dir(path_)));
  return Status::ok();
}

// --- OutputFolder ----------------------------------------------------------------------------

Result<std::unique_ptr<OutputFolder>> OutputFolder::begin(const std::string& root,
                                                          const OutputOptions& options) {
  CKPT_RETURN_IF_ERROR(check_output_folder(root));
  return std::unique_ptr<OutputFolder>(new OutputFolder(root, options));
}

Result<OutputFile*> OutputFolder::add(const std::string& relative,
                                      std::span<const InputFile* const> inputs) {
  const std::string path = (fs::path(root_) / relative).string();
  for (const auto& f : files_)
    if (f->path_ == path)
      return Status(ErrorCode::kInternal, "two outputs of one folder have the same name", path);
  CKPT_RETURN_IF_ERROR(check_destination(path, inputs, options_.force));
  // The temporary lives on the file system the file will live on: its folder, or the nearest
  // folder above it that exists (the rest is made at commit).
  const std::string dir = nearest_existing_dir(parent_dir(path));
  remove_stale_temporaries(dir);
  std::unique_ptr<OutputFile> out(new OutputFile(path, options_));
  CKPT_RETURN_IF_ERROR(out->open_temporary(dir));
  files_.push_back(std::move(out));
  return files_.back().get();
}

Status OutputFolder::commit() {
  for (auto& f : files_) CKPT_RETURN_IF_ERROR(f->sync_data());
  detail::test_hold("link");
  SignalHold hold;
  // Each file goes either straight into a folder that exists, or under the topmost folder of
  // its path that does not exist yet; that folder is built as a staging folder and renamed.
  std::map<std::string, std::vector<OutputFile*>> under_new;
  std::vector<OutputFile*> direct;
  for (auto& f : files_) {
    std::string missing;
    for (fs::path p = fs::path(f->path_).parent_path(); !p.empty() && !is_dir(p.string());
         p = p.parent_path()) {
      missing = p.string();
      if (p.parent_path() == p) break;
    }
    if (missing.empty())
      direct.push_back(f.get());
    else
      under_new[missing].push_back(f.get());
  }
  // What this commit made so far (new files, new folders), removed again if a later step
  // fails; files it replaced (--force) cannot be brought back and are left replaced.
  std::vector<std::string> linked, made;
  auto undo = [&](Status s) {
    for (const std::string& p : linked) ::unlink(p.c_str());
    for (const std::string& p : made) {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
    return s;
  };
  bool first = true;
  auto after_one = [&] {
    if (first) detail::test_hold("linked-one");
    first = false;
  };
  std::set<std::string> synced_dirs;
  for (OutputFile* f : direct) {
    const bool existed = ::access(f->path_.c_str(), F_OK) == 0;
    Status s = f->link_as(f->path_, options_.force);
    if (!s.is_ok()) return undo(s);
    f->committed_ = true;
    if (!existed) linked.push_back(f->path_);
    synced_dirs.insert(parent_dir(f->path_));
    after_one();
  }
  for (auto& [top, files] : under_new) {
    const std::string parent = parent_dir(top);
    std::string stage = fmt::format("{}/{}XXXXXX", parent, temp_prefix(base_name(top)));
    if (::mkdtemp(stage.data()) == nullptr)
      return undo(os_error("cannot create a staging folder in", parent));
    const int lock_fd = ::open(stage.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lock_fd >= 0) (void)::flock(lock_fd, LOCK_EX | LOCK_NB);
    auto drop_stage = [&](Status s) {
      std::error_code ec;
      fs::remove_all(stage, ec);
      if (lock_fd >= 0) ::close(lock_fd);
      return undo(s);
    };
    (void)::chmod(stage.c_str(), [] {
      const mode_t mask = ::umask(0);
      ::umask(mask);
      return static_cast<mode_t>(0777 & ~mask);
    }());
    std::set<std::string> stage_dirs{stage};
    for (OutputFile* f : files) {
      const std::string rel = f->path_.substr(top.size() + 1);
      const fs::path staged = fs::path(stage) / rel;
      std::error_code ec;
      fs::create_directories(staged.parent_path(), ec);
      if (ec)
        return drop_stage(Status(ErrorCode::kIoError,
                                 fmt::format("cannot create a folder: {}", ec.message()),
                                 staged.parent_path().string()));
      for (fs::path p = staged.parent_path(); p.string().size() > stage.size(); p = p.parent_path())
        stage_dirs.insert(p.string());
      Status s = f->link_as(staged.string(), false);
      if (!s.is_ok()) return drop_stage(s);
    }
    if (options_.sync)
      for (const std::string& d : stage_dirs)
        if (Status s = fsync_dir(d); !s.is_ok()) return drop_stage(s);
    detail::test_hold("staged");
    int rc = ::renameat2(AT_FDCWD, stage.c_str(), AT_FDCWD, top.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS) && !is_dir(top))
      rc = ::rename(stage.c_str(), top.c_str());
    if (rc != 0) {
      const int err = errno;
      return drop_stage(err == EEXIST || err == ENOTEMPTY
                            ? appeared_meanwhile(top)
                            : os_error("cannot move the finished folder into place", top, err));
    }
    if (lock_fd >= 0) ::close(lock_fd);
    for (OutputFile* f : files) f->committed_ = true;
    made.push_back(top);
    synced_dirs.insert(parent);
    after_one();
  }
  if (options_.sync)
    for (const std::string& d : synced_dirs) CKPT_RETURN_IF_ERROR(fsync_dir(d));
  for (auto& f : files_) {
    if (f->fd_ >= 0) ::close(f->fd_);
    f->fd_ = -1;
  }
  return Status::ok();
}

}  // namespace ckptkit
