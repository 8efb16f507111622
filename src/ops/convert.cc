// convert: a plan that casts floating-point tensors and copies everything else.
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <map>
#include <optional>

#include "ckptkit/cast.h"
#include "ckptkit/ops.h"
#include "ckptkit/scan.h"
#include "formats/torch/reader.h"
#include "io/errors.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

/// Deflated storages of a zip (torch never writes them; re-zipping tools do) are inflated once,
/// in order, into an unlinked temporary beside the output, and read from there like stored
/// ones. Memory stays two small buffers; the disk holds the inflated bytes until the end.
class Spill {
 public:
  ~Spill() {
    if (fd_ >= 0) ::close(fd_);
  }

  Status run(const InputFile& in, const Checkpoint& ck, const std::string& out_path) {
    for (size_t i = 0; i < ck.torch.storages.size(); ++i) {
      const StorageInfo& s = ck.torch.storages[i];
      if (!s.deflated) continue;
      if (fd_ < 0) CKPT_RETURN_IF_ERROR(open_temp(out_path));
      base_[static_cast<int32_t>(i)] = at_;
      CKPT_RETURN_IF_ERROR(inflate(in, s));
    }
    if (fd_ >= 0) {
      CKPT_ASSIGN_OR_RETURN(InputFile f, InputFile::open("/proc/self/fd/" + std::to_string(fd_)));
      file_.emplace(std::move(f));
    }
    return Status::ok();
  }

  /// The file and the tensor description to read `t` from.
  std::pair<const InputFile*, TensorInfo> locate(const InputFile& in, const Checkpoint& ck,
                                                 const TensorInfo& t) const {
    if (t.storage < 0 || !file_) return {&in, t};
    auto it = base_.find(t.storage);
    if (it == base_.end()) return {&in, t};
    TensorInfo moved = t;
    const uint64_t within = t.begin - ck.torch.storages[static_cast<size_t>(t.storage)].offset;
    moved.begin = it->second + within;
    moved.end = moved.begin + t.nbytes();
    return {&*file_, moved};
  }

  const InputFile* file() const { return file_ ? &*file_ : nullptr; }

 private:
  Status open_temp(const std::string& out_path) {
    const std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
    const std::string dir = parent.empty() ? std::string(".") : parent.string();
    fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0) {  // a file system without O_TMPFILE: a named temporary, unlinked at once
      std::string name = dir + "/.ckptkit-inflate-XXXXXX";
      fd_ = ::mkostemp(name.data(), O_CLOEXEC);
      if (fd_ < 0) return os_error("cannot create a temporary file for inflated tensors in", dir);
      ::unlink(name.c_str());
    }
    return Status::ok();
  }

  Status inflate(const InputFile& in, const StorageInfo& s) {
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
      return Status(ErrorCode::kInternal, "zlib inflateInit2 failed");
    std::vector<uint8_t> src(1u << 20), dst(4u << 20);
    uint64_t read = 0, written = 0;
    uLong crc = crc32(0L, Z_NULL, 0);
    int rc = Z_OK;
    Status st;
    while (rc != Z_STREAM_END && st.is_ok()) {
      if (z.avail_in == 0 && read < s.compressed_size) {
        const uint64_t n = std::min<uint64_t>(src.size(), s.compressed_size - read);
        st = in.pread_exact(std::span(src).first(n), s.offset + read, "deflated tensor data");
        if (!st.is_ok()) break;
        z.next_in = src.data();
        z.avail_in = static_cast<uInt>(n);
        read += n;
      }
      z.next_out = dst.data();
      z.avail_out = static_cast<uInt>(dst.size());
      rc = ::inflate(&z, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END) {
        st = Status(ErrorCode::kCorrupt,
                    fmt::format("entry '{}': the deflate stream is corrupt ({})", s.entry,
                                z.msg ? z.msg : "zlib error"),
                    in.path(), s.offset + read);
        break;
      }
      const uint64_t got = dst.size() - z.avail_out;
      if (got > 0) {
        crc = crc32(crc, dst.data(), static_cast<uInt>(got));
        uint64_t done = 0;
        while (done < got) {
          const ssize_t w = ::pwrite(fd_, dst.data() + done, got - done,
                                     static_cast<off_t>(at_ + written + done));
          if (w < 0) {
            if (errno == EINTR) continue;
            st = os_error("cannot write inflated tensor data to a temporary file", in.path());
            break;
          }
          done += static_cast<uint64_t>(w);
        }
        written += got;
      }
      if (rc != Z_STREAM_END && got == 0 && z.avail_in == 0 && read >= s.compressed_size)
        st = Status(ErrorCode::kCorrupt,
                    fmt::format("entry '{}': the deflate stream ends early", s.entry), in.path(),
                    s.offset + read);
    }
    inflateEnd(&z);
    CKPT_RETURN_IF_ERROR(st);
    if (written < s.nbytes || static_cast<uint32_t>(crc) != s.crc32)
      return Status(ErrorCode::kCorrupt,
                    fmt::format("entry '{}': inflated to {} bytes with CRC-32 {:08x}; the "
                                "archive says at least {} bytes with CRC-32 {:08x}",
                                s.entry, written, static_cast<uint32_t>(crc), s.nbytes, s.crc32),
                    in.path(), s.offset);
    at_ += written;
    return Status::ok();
  }

  int fd_ = -1;
  uint64_t at_ = 0;
  std::map<int32_t, uint64_t> base_;
  std::optional<InputFile> file_;
};

}  // namespace

Result<ConvertReport> convert_file(const std::string& in_path, const std::string& out_path,
                                   const ConvertOptions& options) {
  CKPT_ASSIGN_OR_RETURN(InputFile in, InputFile::open(in_path));
  ReadLimits limits;
  limits.safetensors = options.limits;
  CKPT_ASSIGN_OR_RETURN(Checkpoint ck, read_checkpoint(in, limits));
  ConvertReport report;
  report.format = ck.format;
  if (ck.format != FileFormat::kSafetensors) {
    // Reading never runs anything, but a file built to attack torch.load is refused unless the
    // caller has seen the report and insists.
    std::string summary;
    if (options.verdict) {
      report.verdict = options.verdict;  // the caller scanned this file already
    } else {
      ScanReport scan = scan_file(in_path, limits);
      if (!scan.error.is_ok()) return scan.error;
      report.verdict = scan.verdict;
      summary = " (" + scan.summary + ")";
    }
    if (report.verdict == Verdict::kDangerous && !options.allow_dangerous)
      return Status(ErrorCode::kInvalidArgument,
                    "refusing to convert a file that would run code when loaded" + summary,
                    in_path);
    report.dropped_values = ck.torch.dropped_values;
    report.other_entries = ck.torch.other_entries.size();
    report.state_dict_key = ck.torch.state_dict_key;
  }
  if (ck.tensors.empty() && ck.format != FileFormat::kSafetensors)
    return Status(ErrorCode::kNotFound,
                  "no tensors found in the file (nothing that torch.save writes for a tensor)",
                  in_path);
  Spill spill;
  CKPT_RETURN_IF_ERROR(spill.run(in, ck, out_path));
  Plan plan;
  plan.inputs = {&in};
  if (spill.file()) plan.inputs.push_back(spill.file());
  plan.metadata = ck.metadata;
  // What loaders expect of a PyTorch-derived safetensors file (transformers checks it).
  if (ck.format != FileFormat::kSafetensors) plan.metadata.emplace("format", "pt");
  for (const TensorInfo& t : ck.tensors) {
    const uint64_t src = ck.data_offset + t.begin;
    DType to = t.dtype;
    if (options.dtype && is_float(t.dtype)) to = *options.dtype;
    if (options.dtype && !is_float(t.dtype))
      ++report.kept_not_float[std::string(dtype_name(t.dtype))];
    if (to != t.dtype && !can_cast(t.dtype, to))
      return Status(ErrorCode::kUnsupported,
                    fmt::format("{} values cannot be converted to {} (the type is understood but "
                                "not computed with; --dtype keep copies it unchanged)",
                                dtype_name(t.dtype), dtype_name(to)),
                    in_path, src, t.name);
    auto [file, where] = spill.locate(in, ck, t);
    plan.tensors.push_back(
        {t.name, to, t.shape, make_tensor_producer(file, where, ck.data_offset, to)});
    if (to == t.dtype)
      ++report.tensors_copied;
    else
      ++report.tensors_cast;
    if (!t.is_plain()) ++report.tensors_materialized;
  }
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "converting";
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
  return report;
}

}  // namespace ckptkit
