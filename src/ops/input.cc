#include "ops/input.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <vector>

#include "io/errors.h"
#include "io/output.h"

namespace ckptkit::detail {

Result<std::unique_ptr<OpenedInput>> OpenedInput::open(const std::string& path,
                                                       const std::string& out_path,
                                                       const OpenOptions& options) {
  std::unique_ptr<OpenedInput> in(new OpenedInput());
  if (options.verdict) {
    CKPT_ASSIGN_OR_RETURN(InputFile f, InputFile::open(path));
    in->file_.emplace(std::move(f));
    if (options.checkpoint) {
      in->ck_ = *options.checkpoint;
    } else {
      CKPT_ASSIGN_OR_RETURN(in->ck_, read_checkpoint(path, options.limits));
    }
    in->verdict_ = options.verdict;
  } else {
    // One read of the structure serves the tensor table and the scan.
    CKPT_ASSIGN_OR_RETURN(CheckedCheckpoint checked, read_and_scan(path, options.limits));
    CKPT_ASSIGN_OR_RETURN(InputFile f, InputFile::open(path));
    in->file_.emplace(std::move(f));
    in->ck_ = std::move(checked.checkpoint);
    if (checked.scan) {
      if (!checked.scan->error.is_ok()) return checked.scan->error;
      in->verdict_ = checked.scan->verdict;
      in->scan_summary_ = checked.scan->summary;
    }
  }
  const Checkpoint& ck = in->ck_;
  if (ck.format == FileFormat::kTorchZip || ck.format == FileFormat::kTorchLegacy) {
    // Reading never runs anything, but a file built to attack torch.load is refused unless the
    // caller has seen the report and insists.
    if (in->verdict_ == Verdict::kDangerous && !options.allow_dangerous)
      return Status(
          ErrorCode::kInvalidArgument,
          fmt::format("refusing to {} a file that would run code when loaded{}", options.verb,
                      in->scan_summary_.empty() ? "" : " (" + in->scan_summary_ + ")"),
          path);
    if (ck.tensors.empty())
      return Status(ErrorCode::kNotFound,
                    "no tensors found in the file (nothing that torch.save writes for a tensor)",
                    path);
  }
  CKPT_RETURN_IF_ERROR(in->spill(out_path));
  return in;
}

OpenedInput::~OpenedInput() {
  if (spill_fd_ >= 0) ::close(spill_fd_);
}

Status OpenedInput::spill(const std::string& out_path) {
  for (size_t i = 0; i < ck_.torch.storages.size(); ++i) {
    const StorageInfo& s = ck_.torch.storages[i];
    if (!s.deflated) continue;
    if (spill_fd_ < 0) {
      // The output's folder, or the nearest one above it that exists (split makes folders).
      const std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
      const std::string dir = nearest_existing_dir(parent.empty() ? "." : parent.string());
      spill_fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (spill_fd_ < 0) {  // a file system without O_TMPFILE: a named one, unlinked at once
        std::string name = dir + "/.ckptkit-inflate-XXXXXX";
        spill_fd_ = ::mkostemp(name.data(), O_CLOEXEC);
        if (spill_fd_ < 0)
          return os_error("cannot create a temporary file for inflated tensors in", dir);
        ::unlink(name.c_str());
      }
    }
    spill_base_[static_cast<int32_t>(i)] = spill_at_;
    CKPT_RETURN_IF_ERROR(inflate(s));
  }
  if (spill_fd_ >= 0) {
    CKPT_ASSIGN_OR_RETURN(InputFile f,
                          InputFile::open("/proc/self/fd/" + std::to_string(spill_fd_)));
    spill_file_.emplace(std::move(f));
  }
  return Status::ok();
}

Status OpenedInput::inflate(const StorageInfo& s) {
  const InputFile& in = *file_;
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
        const ssize_t w = ::pwrite(spill_fd_, dst.data() + done, got - done,
                                   static_cast<off_t>(spill_at_ + written + done));
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
  spill_at_ += written;
  return Status::ok();
}

std::pair<const InputFile*, TensorInfo> OpenedInput::locate(const TensorInfo& t) const {
  TensorInfo moved = t;
  moved.begin = ck_.data_offset + t.begin;
  moved.end = moved.begin + t.nbytes();
  if (t.storage < 0 || !spill_file_) return {&*file_, moved};
  auto it = spill_base_.find(t.storage);
  if (it == spill_base_.end()) return {&*file_, moved};
  const uint64_t within = t.begin - ck_.torch.storages[static_cast<size_t>(t.storage)].offset;
  moved.begin = it->second + within;
  moved.end = moved.begin + t.nbytes();
  return {&*spill_file_, moved};
}

std::unique_ptr<TensorProducer> OpenedInput::producer(const TensorInfo& t, DType to) const {
  auto [file, where] = locate(t);
  return make_tensor_producer(file, where, 0, to);
}

void OpenedInput::add_inputs(Plan& plan) const {
  plan.inputs.push_back(&*file_);
  if (spill_file_) plan.inputs.push_back(&*spill_file_);
}

std::string file_stem(const std::string& path) {
  std::string name = std::filesystem::path(path).filename().string();
  for (std::string_view ext : {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf"})
    if (name.size() > ext.size() && name.ends_with(ext))
      return name.substr(0, name.size() - ext.size());
  return name;
}

Status read_f32(const OpenedInput& in, const TensorInfo& t, std::vector<float>& out) {
  auto p = in.producer(t, DType::F32);
  const uint64_t n = t.numel();
  out.resize(n);
  std::vector<uint8_t> scratch(n * std::max<uint64_t>(1, p->scratch_bytes_per_element()));
  return p->produce(
      0, n, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), n * sizeof(float)),
      scratch);
}

}  // namespace ckptkit::detail
