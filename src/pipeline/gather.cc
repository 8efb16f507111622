// Producer for tensors that are not a plain run of little-endian bytes: PyTorch views (storage
// offset + strides, materialized here in C order) and big-endian archives (byte-swapped).
//
// Views are rare in real checkpoints, so the design favours bounded memory and simplicity over
// speed: a chunk's elements are gathered through a per-thread window of the storage (at most
// kWindowBytes), reloaded when an element falls outside it. A chunk whose source span fits the
// window costs one read.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ckptkit/cast.h"
#include "io/errors.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

constexpr uint64_t kWindowBytes = 16ull << 20;

template <typename U>
void byteswap_as(uint8_t* p, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) {
    U v;
    std::memcpy(&v, p + i * sizeof(U), sizeof(U));
    if constexpr (sizeof(U) == 2) v = __builtin_bswap16(v);
    if constexpr (sizeof(U) == 4) v = __builtin_bswap32(v);
    if constexpr (sizeof(U) == 8) v = __builtin_bswap64(v);
    std::memcpy(p + i * sizeof(U), &v, sizeof(U));
  }
}

void byteswap(uint8_t* p, uint64_t count, unsigned size) {
  switch (size) {
    case 2:
      return byteswap_as<uint16_t>(p, count);
    case 4:
      return byteswap_as<uint32_t>(p, count);
    case 8:
      return byteswap_as<uint64_t>(p, count);
    default:
      return;
  }
}

class GatherProducer final : public TensorProducer {
 public:
  GatherProducer(const InputFile* file, const TensorInfo& t, DType to)
      : file_(file),
        base_(t.begin),
        shape_(t.shape),
        strides_(t.strides),
        swap_(t.big_endian),
        from_(t.dtype),
        to_(to),
        elsize_(dtype_info(t.dtype).bits / 8) {
    if (strides_.empty()) {  // contiguous (only byte-swapped)
      strides_.assign(shape_.size(), 1);
      for (size_t d = shape_.size(); d-- > 1;) strides_[d - 1] = strides_[d] * shape_[d];
    }
  }

  uint64_t scratch_bytes_per_element() const override { return elsize_; }

  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> scratch) const override {
    uint8_t* dst = scratch.data();
    CKPT_RETURN_IF_ERROR(gather(first, count, dst));
    if (swap_) byteswap(dst, count, elsize_);
    if (from_ == to_) {
      std::memcpy(out.data(), dst, count * elsize_);
      return Status::ok();
    }
    return cast_elements(from_, to_, dst, out.data(), count);
  }

 private:
  /// Storage element index of output element `linear` (C order).
  uint64_t source_index(uint64_t linear) const {
    uint64_t idx = 0;
    for (size_t d = shape_.size(); d-- > 0;) {
      const uint64_t i = linear % shape_[d];
      linear /= shape_[d];
      idx += i * strides_[d];
    }
    return idx;
  }

  Status gather(uint64_t first, uint64_t count, uint8_t* dst) const {
    // Source span of this chunk: elements are visited in output order; the span's bounds come
    // from a first pass (cheap next to the I/O).
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint64_t k = 0; k < count; ++k) {
      const uint64_t s = source_index(first + k);
      lo = std::min(lo, s);
      hi = std::max(hi, s);
    }
    thread_local std::vector<uint8_t> window;
    const uint64_t window_elems = std::max<uint64_t>(1, kWindowBytes / elsize_);
    uint64_t wbeg = 0, wend = 0;  // elements [wbeg, wend) are in `window`
    auto load = [&](uint64_t from) -> Status {
      const uint64_t n = std::min<uint64_t>(window_elems, hi + 1 - from);
      window.resize(n * elsize_);
      CKPT_RETURN_IF_ERROR(
          file_->pread_exact(window, base_ + from * elsize_, "tensor data (a strided view)"));
      wbeg = from;
      wend = from + n;
      return Status::ok();
    };
    CKPT_RETURN_IF_ERROR(load(lo));
    for (uint64_t k = 0; k < count; ++k) {
      const uint64_t s = source_index(first + k);
      if (s < wbeg || s >= wend) CKPT_RETURN_IF_ERROR(load(s));
      std::memcpy(dst + k * elsize_, window.data() + (s - wbeg) * elsize_, elsize_);
    }
    return Status::ok();
  }

  const InputFile* file_;
  uint64_t base_;
  Shape shape_;
  std::vector<uint64_t> strides_;
  bool swap_;
  DType from_, to_;
  unsigned elsize_;
};

}  // namespace

std::unique_ptr<TensorProducer> make_tensor_producer(const InputFile* file, const TensorInfo& t,
                                                     uint64_t data_offset, DType to) {
  if (is_quantized(t.dtype) && to != t.dtype)
    return make_dequantize_producer(file, data_offset + t.begin, t.dtype, to);
  if (t.is_plain()) return make_cast_producer(file, data_offset + t.begin, t.dtype, to);
  return std::make_unique<GatherProducer>(file, t, to);
}

}  // namespace ckptkit
