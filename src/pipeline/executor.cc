// The streaming executor: header first, then the data section filled by worker threads.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <numeric>
#include <thread>

#include "ckptkit/cast.h"
#include "ckptkit/safetensors.h"
#include "io/errors.h"
#include "pipeline/plan.h"
#include "pipeline/progress.h"

namespace ckptkit {
namespace {

constexpr uint64_t kMinBuffer = 1ull << 20;
constexpr uint64_t kMaxBuffer = 32ull << 20;
constexpr uint64_t kCopyChunk = 64ull << 20;       // kernel copies need no user buffer
constexpr uint64_t kWritebackEvery = 64ull << 20;  // start writeback early, fsync is then short

struct Chunk {
  size_t tensor;        // index into plan.tensors
  uint64_t first;       // first element
  uint64_t count;       // elements
  uint64_t out_offset;  // absolute offset in the output file
  uint64_t out_bytes;
};

/// Elements that make a whole number of bytes (2 for F4, 4 for F6, a block for quantized
/// types, else 1).
uint64_t element_granule(DType t) {
  if (is_quantized(t)) return dtype_info(t).block;
  const unsigned bits = dtype_info(t).bits;
  uint64_t g = 1;
  while ((g * bits) % 8 != 0) ++g;
  return g;
}

/// Bytes of `count` elements, `count` a multiple of element_granule(t).
uint64_t bytes_of(DType t, uint64_t count) { return dtype_bytes(t, count).value_or(0); }

class CopyProducer final : public TensorProducer {
 public:
  CopyProducer(const InputFile* file, uint64_t offset, DType dtype)
      : file_(file), offset_(offset), dtype_(dtype) {}
  uint64_t scratch_bytes_per_element() const override { return 0; }
  std::optional<CopySource> copy_source() const override { return CopySource{file_, offset_}; }
  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t>) const override {
    return file_->pread_exact(out.first(bytes_of(dtype_, count)), offset_ + bytes_of(dtype_, first),
                              "tensor data");
  }
  bool is_hole(uint64_t first, uint64_t count) const override {
    return file_->is_hole(offset_ + bytes_of(dtype_, first), bytes_of(dtype_, count));
  }

 private:
  const InputFile* file_;
  uint64_t offset_;
  DType dtype_;
};

class CastProducer final : public TensorProducer {
 public:
  CastProducer(const InputFile* file, uint64_t offset, DType from, DType to)
      : file_(file), offset_(offset), from_(from), to_(to) {}
  uint64_t scratch_bytes_per_element() const override { return dtype_info(from_).bits / 8; }
  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> scratch) const override {
    const uint64_t in_size = dtype_info(from_).bits / 8;
    auto in = scratch.first(count * in_size);
    CKPT_RETURN_IF_ERROR(file_->pread_exact(in, offset_ + first * in_size, "tensor data"));
    return cast_elements(from_, to_, in.data(), out.data(), count);
  }
  // Zeros cast to zeros in every float type, so a hole stays a hole.
  bool is_hole(uint64_t first, uint64_t count) const override {
    const uint64_t in_size = dtype_info(from_).bits / 8;
    return is_float(from_) && is_float(to_) &&
           file_->is_hole(offset_ + first * in_size, count * in_size);
  }

 private:
  const InputFile* file_;
  uint64_t offset_;
  DType from_, to_;
};

/// Copies [src, src+len) of `in` to [dst, dst+len) of `out_fd` inside the kernel when it can,
/// else through `buffer` (allocated here on first need).
Status copy_data(const InputFile& in, uint64_t src, const OutputFile& out, uint64_t dst,
                 uint64_t len, AlignedBuffer& buffer, bool& kernel_copy_ok) {
  const int out_fd = out.fd();
  while (len > 0 && kernel_copy_ok) {
    loff_t s = static_cast<loff_t>(src), d = static_cast<loff_t>(dst);
    ssize_t n = ::copy_file_range(in.fd(), &s, out_fd, &d, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
        kernel_copy_ok = false;
        break;
      }
      return out.write_error(errno, dst);
    }
    if (n == 0)
      return Status(
          ErrorCode::kCorrupt,
          fmt::format("file ends at byte {} inside tensor data: the file is truncated", src),
          in.path(), src);
    src += static_cast<uint64_t>(n);
    dst += static_cast<uint64_t>(n);
    len -= static_cast<uint64_t>(n);
  }
  if (len > 0 && buffer.size() == 0) buffer = AlignedBuffer(kMinBuffer);
  while (len > 0) {
    const uint64_t k = std::min<uint64_t>(len, buffer.size());
    CKPT_RETURN_IF_ERROR(in.pread_exact(buffer.span().first(k), src, "tensor data"));
    uint64_t done = 0;
    while (done < k) {
      ssize_t n = ::pwrite(out_fd, buffer.data() + done, k - done, static_cast<off_t>(dst + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return out.write_error(errno, dst + done);
      }
      done += static_cast<uint64_t>(n);
    }
    src += k;
    dst += k;
    len -= k;
  }
  return Status::ok();
}

/// Calls `fn(offset, length)` for each range of [src, src + len) of `in` that holds data, in
/// order: holes are skipped. Real checkpoints have no holes and pay one lseek per call; sparse
/// synthetic files (sample --sparse) cost nothing to split, assemble or reserve space for.
template <typename Fn>
Status for_each_data_range(const InputFile& in, uint64_t src, uint64_t len, Fn&& fn) {
  if (src > in.size() || len > in.size() - src)
    return Status(
        ErrorCode::kCorrupt,
        fmt::format("file ends at byte {} inside tensor data: the file is truncated", in.size()),
        in.path(), in.size());
  const uint64_t end = src + len;
  while (src < end) {
    // The file position is shared between threads but nothing here reads through it.
    const off_t data = ::lseek(in.fd(), static_cast<off_t>(src), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return Status::ok();  // only a hole up to the end
      return fn(src, end - src);                // no SEEK_DATA: all of it
    }
    if (static_cast<uint64_t>(data) >= end) return Status::ok();
    src = static_cast<uint64_t>(data);
    const off_t hole = ::lseek(in.fd(), static_cast<off_t>(src), SEEK_HOLE);
    const uint64_t n =
        hole < 0 ? end - src : std::min<uint64_t>(end - src, static_cast<uint64_t>(hole) - src);
    CKPT_RETURN_IF_ERROR(fn(src, n));
    src += n;
  }
  return Status::ok();
}

/// copy_data, except that holes in the input stay holes: the output was sized with ftruncate,
/// so what is not written reads as zeros, as the hole did.
Status copy_range(const InputFile& in, uint64_t src, const OutputFile& out, uint64_t dst,
                  uint64_t len, AlignedBuffer& buffer, bool& kernel_copy_ok) {
  return for_each_data_range(in, src, len, [&](uint64_t at, uint64_t n) {
    return copy_data(in, at, out, dst + (at - src), n, buffer, kernel_copy_ok);
  });
}

/// Calls `fn(file, input_offset, output_offset, length)` for the pieces of `segments` (a
/// tensor's input ranges one after another) that bytes [begin, begin + len) of the tensor
/// come from; `out_offset` is where byte `begin` goes in the output.
template <typename Fn>
Status for_each_segment_piece(const std::vector<CopySegment>& segments, uint64_t begin,
                              uint64_t len, uint64_t out_offset, Fn&& fn) {
  const uint64_t end = begin + len;
  uint64_t base = 0;  // the tensor byte the current segment starts at
  for (const CopySegment& s : segments) {
    if (base >= end) break;
    const uint64_t lo = std::max(begin, base), hi = std::min(end, base + s.bytes);
    if (lo < hi)
      CKPT_RETURN_IF_ERROR(fn(*s.file, s.offset + (lo - base), out_offset + (lo - begin), hi - lo));
    base += s.bytes;
  }
  return Status::ok();
}

/// The byte ranges of the output that the chunks will write (holes left out), merged: the
/// space to reserve before the work starts.
Result<std::vector<ByteRange>> ranges_to_write(const Plan& plan, const std::vector<Chunk>& chunks,
                                               const std::vector<std::vector<CopySegment>>& segs,
                                               uint64_t header_size) {
  std::vector<ByteRange> ranges{{0, header_size}};
  auto add = [&](uint64_t offset, uint64_t length) {
    ByteRange& last = ranges.back();
    if (last.offset + last.length == offset)
      last.length += length;
    else
      ranges.push_back({offset, length});
    return Status::ok();
  };
  for (const Chunk& c : chunks) {
    const TensorProducer& p = *plan.tensors[c.tensor].producer;
    if (!segs[c.tensor].empty()) {
      CKPT_RETURN_IF_ERROR(for_each_segment_piece(
          segs[c.tensor], bytes_of(plan.tensors[c.tensor].dtype, c.first), c.out_bytes,
          c.out_offset, [&](const InputFile& in, uint64_t from, uint64_t to, uint64_t n) {
            return for_each_data_range(
                in, from, n, [&](uint64_t at, uint64_t k) { return add(to + (at - from), k); });
          }));
    } else if (!p.is_hole(c.first, c.count)) {
      CKPT_RETURN_IF_ERROR(add(c.out_offset, c.out_bytes));
    }
  }
  return ranges;
}

/// The serialized header of either format, with where each tensor's data goes.
struct OutputHeader {
  std::vector<uint8_t> bytes;
  std::vector<uint64_t> data_begin;  ///< per plan tensor, offset in the data section
  uint64_t data_size = 0;
  uint64_t file_size() const { return bytes.size() + data_size; }
};

Result<OutputHeader> serialize_header(const Plan& plan) {
  if (plan.format == OutputFormat::kGguf) {
    std::vector<GgufTensorLayout> layouts;
    layouts.reserve(plan.tensors.size());
    for (const PlannedTensor& t : plan.tensors)
      layouts.push_back({t.name, t.dtype, t.shape, t.gguf_ne});
    CKPT_ASSIGN_OR_RETURN(GgufHeader h,
                          build_gguf_header(layouts, plan.gguf_kv, plan.gguf_options));
    return OutputHeader{std::move(h.bytes), std::move(h.data_begin), h.data_size};
  }
  std::vector<TensorLayout> layouts;
  layouts.reserve(plan.tensors.size());
  for (const PlannedTensor& t : plan.tensors) layouts.push_back({t.name, t.dtype, t.shape});
  CKPT_ASSIGN_OR_RETURN(SafetensorsHeader h, build_safetensors_header(layouts, plan.metadata));
  return OutputHeader{std::move(h.bytes), std::move(h.data_begin), h.data_size};
}

}  // namespace

std::unique_ptr<TensorProducer> make_copy_producer(const InputFile* file, uint64_t offset,
                                                   DType dtype) {
  return std::make_unique<CopyProducer>(file, offset, dtype);
}

std::unique_ptr<TensorProducer> make_cast_producer(const InputFile* file, uint64_t offset,
                                                   DType from, DType to) {
  if (from == to) return make_copy_producer(file, offset, from);
  return std::make_unique<CastProducer>(file, offset, from, to);
}

Result<RunStats> execute_plan(Plan& plan, const std::string& out_path, const RunOptions& options) {
  CKPT_ASSIGN_OR_RETURN(auto out, OutputFile::create(out_path, plan.inputs,
                                                     OutputOptions{options.force, options.sync}));
  CKPT_ASSIGN_OR_RETURN(RunStats stats, write_plan(plan, *out, options));
  const auto t0 = std::chrono::steady_clock::now();
  CKPT_RETURN_IF_ERROR(out->commit());
  stats.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

Result<RunStats> write_plan(Plan& plan, OutputFile& output, const RunOptions& options) {
  OutputFile* out = &output;
  const auto t0 = std::chrono::steady_clock::now();
  // 1. Reference writer order (safetensors), then the header. GGUF keeps the plan's order, as
  //    the tools whose files it reproduces do.
  if (!plan.keep_order && plan.format == OutputFormat::kSafetensors) {
    std::stable_sort(plan.tensors.begin(), plan.tensors.end(),
                     [](const PlannedTensor& a, const PlannedTensor& b) {
                       return precedes_in_writer_order(a.dtype, a.name, b.dtype, b.name);
                     });
    for (size_t i = 1; i < plan.tensors.size(); ++i)
      if (plan.tensors[i].name == plan.tensors[i - 1].name)
        return Status(ErrorCode::kInvalidArgument, "two output tensors have the same name", {},
                      kNoOffset, plan.tensors[i].name);
  }
  CKPT_ASSIGN_OR_RETURN(const OutputHeader header, serialize_header(plan));
  const uint64_t data_start = header.bytes.size();

  // 2. Threads and buffers within the memory budget.
  unsigned threads =
      options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = std::min(threads, 64u);
  uint64_t buffer = options.max_memory / (2ull * threads);
  while (buffer < kMinBuffer && threads > 1) buffer = options.max_memory / (2ull * --threads);
  buffer = std::clamp<uint64_t>(buffer, kMinBuffer, kMaxBuffer);
  buffer &= ~uint64_t{4095};

  // 3. Chunks in output order. A tensor that is one input range (copy_source) or several one
  //    after another (copy_segments) is copied in the kernel, range by range.
  std::vector<std::vector<CopySegment>> segs(plan.tensors.size());
  std::vector<Chunk> chunks;
  bool need_buffers = false;
  if (plan.fill_data) {
    for (size_t i = 0; i < plan.tensors.size(); ++i) {
      const PlannedTensor& t = plan.tensors[i];
      const uint64_t numel = shape_numel(t.shape).value_or(0);
      if (numel == 0 || t.leave_hole) continue;
      const uint64_t out_begin = data_start + header.data_begin[i];
      if (auto src = t.producer->copy_source()) {
        segs[i] = {{src->file, src->offset, bytes_of(t.dtype, numel)}};
      } else {
        segs[i] = t.producer->copy_segments();
        uint64_t sum = 0;
        for (const CopySegment& sg : segs[i]) sum += sg.bytes;
        if (sum != bytes_of(t.dtype, numel)) segs[i].clear();  // not a plain concatenation
      }
      const bool is_copy = !segs[i].empty();
      // Bytes per element, rounded up (a quantized type's fraction of a byte counts as one).
      const uint64_t elem_bytes =
          (bytes_of(t.dtype, element_granule(t.dtype)) + element_granule(t.dtype) - 1) /
          element_granule(t.dtype);
      uint64_t per_chunk;
      if (is_copy) {
        per_chunk = std::max<uint64_t>(1, kCopyChunk / std::max<uint64_t>(1, elem_bytes));
      } else {
        need_buffers = true;
        const uint64_t per_elem =
            std::max<uint64_t>({elem_bytes, t.producer->scratch_bytes_per_element(), 1});
        per_chunk = std::max<uint64_t>(1, buffer / per_elem);
      }
      // Chunks hold whole bytes of the output and whole units of what the producer reads (the
      // blocks of a quantized input).
      const uint64_t g = std::lcm(element_granule(t.dtype), t.producer->granule());
      per_chunk = std::max<uint64_t>(g, per_chunk / g * g);
      for (uint64_t first = 0; first < numel; first += per_chunk) {
        const uint64_t count = std::min(per_chunk, numel - first);
        chunks.push_back(
            {i, first, count, out_begin + bytes_of(t.dtype, first), bytes_of(t.dtype, count)});
      }
    }
  }
  threads = static_cast<unsigned>(std::min<size_t>(threads, std::max<size_t>(1, chunks.size())));

  // 4. Output: sized up front (holes where not written), space reserved for what will be
  //    written, so that a full disk fails now rather than at the end.
  CKPT_RETURN_IF_ERROR(out->truncate(header.file_size()));
  {
    CKPT_ASSIGN_OR_RETURN(auto ranges, ranges_to_write(plan, chunks, segs, header.bytes.size()));
    CKPT_RETURN_IF_ERROR(out->reserve(ranges));
  }
  CKPT_RETURN_IF_ERROR(out->pwrite_all(header.bytes, 0));
  detail::test_hold("created");

  RunStats stats;
  stats.tensors = plan.tensors.size();
  stats.bytes_written = header.file_size();
  stats.threads = threads;
  if (plan.fill_data && !chunks.empty()) {
    for (const InputFile* in : plan.inputs) in->advise_sequential(0, in->size());
    Progress progress(options.progress, options.label, header.data_size, options.monitor);
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::atomic<uint64_t> read_bytes{0};
    std::atomic<uint64_t> written_since_flush{0};
    std::mutex error_mu;
    // Buffered writes to one file serialize on the kernel's inode lock anyway, and a writer
    // that waits there spins (measured: a third of convert's CPU in rwsem_spin_on_owner on a
    // VM where the copy into fresh page-cache pages is slow). Waiting here sleeps instead, so
    // the other threads' reads and casts run while one thread writes.
    std::mutex write_mu;
    Status first_error;
    auto worker = [&] {
      AlignedBuffer out_buf, scratch;
      if (need_buffers) {
        out_buf = AlignedBuffer(buffer);
        scratch = AlignedBuffer(buffer);
      }
      bool kernel_copy_ok = true;
      for (;;) {
        if (failed.load(std::memory_order_relaxed)) return;
        if (progress.cancelled()) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (first_error.is_ok())
            first_error = Status(ErrorCode::kCancelled, "cancelled by the caller");
          failed.store(true);
          return;
        }
        const size_t idx = next.fetch_add(1, std::memory_order_relaxed);
        if (idx >= chunks.size()) return;
        if (idx == chunks.size() / 2) detail::test_hold("half");
        const Chunk& c = chunks[idx];
        const PlannedTensor& t = plan.tensors[c.tensor];
        Status s;
        if (!segs[c.tensor].empty()) {
          std::lock_guard<std::mutex> lock(write_mu);
          s = for_each_segment_piece(
              segs[c.tensor], bytes_of(t.dtype, c.first), c.out_bytes, c.out_offset,
              [&](const InputFile& in, uint64_t from, uint64_t to, uint64_t n) {
                return copy_range(in, from, *out, to, n, out_buf, kernel_copy_ok);
              });
          read_bytes.fetch_add(c.out_bytes, std::memory_order_relaxed);
        } else if (t.producer->is_hole(c.first, c.count)) {
          // Sparse in, sparse out: the output was sized with ftruncate, the range reads as 0.
        } else {
          auto dst = out_buf.span().first(c.out_bytes);
          s = t.producer->produce(c.first, c.count, dst, scratch.span());
          if (s.is_ok()) {
            std::lock_guard<std::mutex> lock(write_mu);
            s = out->write_block(dst, c.out_offset);
          }
          read_bytes.fetch_add(c.count * t.producer->input_bytes_per_element(),
                               std::memory_order_relaxed);
        }
        if (!s.is_ok()) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (first_error.is_ok()) {
            first_error = s;
            if (first_error.tensor().empty())
              first_error = Status(s.code(), s.message(), s.path(), s.offset(), t.name);
          }
          failed.store(true);
          return;
        }
        progress.add(c.out_bytes);
        if (options.sync &&
            written_since_flush.fetch_add(c.out_bytes) + c.out_bytes >= kWritebackEvery) {
          written_since_flush.store(0);
          // Start writeback of what is written so far; the final fsync then has little left.
          (void)::sync_file_range(out->fd(), 0, 0, SYNC_FILE_RANGE_WRITE);
        }
      }
    };
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < threads; ++i) pool.emplace_back(worker);
    worker();
    for (std::thread& th : pool) th.join();
    if (!first_error.is_ok()) return first_error;
    progress.finish();
    stats.bytes_read = read_bytes.load();
    stats.buffer_bytes = need_buffers ? 2ull * buffer * threads : 0;
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace ckptkit
