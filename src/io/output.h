// Outputs that appear whole or not at all, whatever happens to the process.
//
// A file is written as an anonymous temporary (open(2) with O_TMPFILE) in the directory where
// it will live, and only commit() gives it a name: linkat(2) through /proc/self/fd, or, with
// --force over an existing file, a link to a private name renamed over the destination. A
// process killed at any instant before that (SIGKILL, the OOM killer, a power cut) leaves no
// file at all: the kernel frees an unlinked inode when its last descriptor closes.
//
// Where the file system has no O_TMPFILE (vfat, some network file systems), the temporary is a
// named file `.NAME.ckptkit-tmp-PID-XXXXXX` beside the destination. SIGINT/SIGTERM/SIGHUP and
// every error remove it; after a SIGKILL it stays until the next ckptkit run that writes into
// that folder, which removes temporaries of this naming whose process is gone (the pid in the
// name is not running and nothing holds the flock(2) that every writer keeps on its temporary,
// so a writer in another pid namespace on the same disk is never touched).
//
// A folder of outputs (OutputFolder: `split`, and every writer of several files) writes each
// file the same way; commit() links them all into a staging directory
// `.DIR.ckptkit-tmp-PID-XXXXXX` beside the topmost folder that does not exist yet and renames
// it into place, so a new folder appears complete or not at all. Files that go into folders
// that already exist are linked one after another at the very end (each file whole).
//
// Before any long work, space for everything the output will hold is reserved (statvfs, then
// fallocate(2) of the ranges that will be written, holes excepted), so a full disk is an error
// with the sizes in it rather than a failure an hour in.
//
// Thread safety: pwrite_all, write_block and reserve may be called from several threads;
// creating, committing and destruction are single-threaded.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/status.h"
#include "io/file.h"

namespace ckptkit {

struct OutputOptions {
  bool force = false;  ///< replace an existing destination
  bool sync = true;    ///< fsync the data before its link and the directory after
};

/// A byte range of an output file that will be written (space to reserve).
struct ByteRange {
  uint64_t offset;
  uint64_t length;
};

/// Checks an output file path before any work is done: not a directory, absent unless `force`,
/// in a folder that exists and can be written. Removes stale temporaries found in that folder.
Status check_output_path(const std::string& path, bool force);

/// Refuses a `.gguf` name for an output that is written as safetensors (the name would lie to
/// every loader); `convert --quant` writes GGUF.
Status check_safetensors_output_name(const std::string& path);

/// The same for an output folder (`split -o DIR`): DIR is a folder or does not exist yet, and
/// the nearest folder that exists can be written.
Status check_output_folder(const std::string& dir);

/// The deepest directory of `path`'s ancestors (or `path` itself) that exists: where a
/// temporary for something under `path` can be created on the right file system.
std::string nearest_existing_dir(const std::string& path);

/// Removes the temporaries of ckptkit's naming in `dir` whose writer is gone. Returns how
/// many were removed; never fails (a folder that cannot be listed is left alone).
size_t remove_stale_temporaries(const std::string& dir);

/// An output file that appears at its destination only when commit() succeeds.
class OutputFile {
 public:
  /// Creates the temporary in `path`'s folder. Refuses (InvalidArgument) when `path` exists and
  /// `force` is off, when it is a directory, or when it is the same file as one of `inputs`.
  static Result<std::unique_ptr<OutputFile>> create(const std::string& path,
                                                    std::span<const InputFile* const> inputs,
                                                    const OutputOptions& options);
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  /// Removes the temporary if it was not committed.
  ~OutputFile();

  /// Sets the final size up front; the unwritten parts stay holes (sparse).
  Status truncate(uint64_t size);
  /// Reserves disk space for `ranges` (sorted, not overlapping), after checking that the file
  /// system has that much free: an error names both sizes. A file system that cannot reserve
  /// (no fallocate) is not an error.
  Status reserve(std::span<const ByteRange> ranges);
  Status pwrite_all(std::span<const uint8_t> data, uint64_t offset);
  /// pwrite_all for large blocks: the pages of `data` are lent to the kernel (vmsplice) and
  /// copied into the page cache kernel-side (splice), which on virtual machines where the
  /// kernel's reads of user memory are slow costs a fraction of write()'s copy (measured 2–3×
  /// less system time). Falls back to pwrite where splicing is not supported. `data` may be
  /// reused as soon as it returns. Calls are serialized internally.
  Status write_block(std::span<const uint8_t> data, uint64_t offset);
  /// fsync, link into place (replacing the destination only with `force`), fsync the folder.
  Status commit();

  int fd() const { return fd_; }
  /// The destination (what error messages name).
  const std::string& path() const { return path_; }

  /// An OS error while writing this output, with the sizes when the disk is full.
  Status write_error(int err, uint64_t offset) const;

 private:
  friend class OutputFolder;
  OutputFile(std::string path, OutputOptions options) : path_(std::move(path)), options_(options) {}
  /// Creates the temporary in `dir` (anonymous, or named where O_TMPFILE is missing).
  Status open_temporary(const std::string& dir);
  Status sync_data();
  /// Gives the temporary the name `dest` (absolute or relative path); replaces an existing
  /// `dest` only when `replace`.
  Status link_as(const std::string& dest, bool replace);

  int fd_ = -1;
  std::string path_;
  std::string named_temp_;  ///< empty for an anonymous temporary
  int slot_ = -1;           ///< signal-cleanup registry slot of a named temporary
  OutputOptions options_;
  uint64_t size_ = 0;
  bool committed_ = false;
  // write_block's pipe (created on first use) and whether splicing works on this file.
  std::mutex splice_mu_;
  int pipe_[2] = {-1, -1};
  bool splice_ok_ = true;
  void close_pipe();
};

/// Several output files under one folder that appear together.
class OutputFolder {
 public:
  /// `root` is the folder the files go under; it and its subfolders may or may not exist.
  static Result<std::unique_ptr<OutputFolder>> begin(const std::string& root,
                                                     const OutputOptions& options);
  /// Creates the temporary of `root/relative` (checked like OutputFile::create).
  Result<OutputFile*> add(const std::string& relative, std::span<const InputFile* const> inputs);
  /// Links every file into place: new folders through a staging folder renamed at once.
  Status commit();

  const std::string& root() const { return root_; }

 private:
  OutputFolder(std::string root, OutputOptions options)
      : root_(std::move(root)), options_(options) {}
  std::string root_;
  OutputOptions options_;
  std::vector<std::unique_ptr<OutputFile>> files_;
};

/// Installs SIGINT/SIGTERM/SIGHUP handlers that unlink every live named temporary and then
/// die by the same signal. Idempotent; the CLI calls it at start.
void install_cleanup_signal_handlers();

namespace detail {
/// Test switch: true when the environment variable CKPTKIT_TEST_FS lists `feature`
/// ("no-tmpfile": behave as on a file system without O_TMPFILE; "no-reserve": without
/// fallocate or free-space figures). Read once.
bool test_fs_lacks(std::string_view feature);
/// Test hook: when CKPTKIT_TEST_HOLD is `point` (or `point:SECONDS`), says so on stderr and
/// sleeps (60 s by default) so that a test can kill the process at a known instant.
void test_hold(std::string_view point);
}  // namespace detail

}  // namespace ckptkit
