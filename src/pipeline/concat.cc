// Concatenation along the first dimension: OpenCLIP's fused q/k/v projection rebuilt from
// Hugging Face's three separate ones. Each chunk is delegated to the parts it overlaps.
#include <algorithm>

#include "pipeline/plan.h"

namespace ckptkit {
namespace {

class ConcatProducer final : public TensorProducer {
 public:
  ConcatProducer(std::vector<std::unique_ptr<TensorProducer>> parts, std::vector<uint64_t> counts,
                 DType to)
      : parts_(std::move(parts)),
        counts_(std::move(counts)),
        elsize_(dtype_info(to).bits / 8),
        whole_bytes_(!is_quantized(to) && dtype_info(to).bits % 8 == 0) {
    for (const auto& p : parts_) scratch_ = std::max(scratch_, p->scratch_bytes_per_element());
  }

  uint64_t scratch_bytes_per_element() const override { return std::max<uint64_t>(scratch_, 1); }

  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> scratch) const override {
    uint64_t base = 0;
    const uint64_t end = first + count;
    for (size_t i = 0; i < parts_.size() && base < end; ++i) {
      const uint64_t lo = std::max(first, base), hi = std::min(end, base + counts_[i]);
      if (lo < hi) {
        CKPT_RETURN_IF_ERROR(parts_[i]->produce(
            lo - base, hi - lo, out.subspan((lo - first) * elsize_, (hi - lo) * elsize_), scratch));
      }
      base += counts_[i];
    }
    return Status::ok();
  }

  /// The parts' input ranges when every part is a plain copy of whole-byte elements.
  std::vector<CopySegment> copy_segments() const override {
    std::vector<CopySegment> out;
    if (!whole_bytes_ || elsize_ == 0) return out;
    for (size_t i = 0; i < parts_.size(); ++i) {
      const auto src = parts_[i]->copy_source();
      if (!src) return {};
      out.push_back({src->file, src->offset, counts_[i] * elsize_});
    }
    return out;
  }

  /// A hole where every part it overlaps is one (a sparse input stays sparse).
  bool is_hole(uint64_t first, uint64_t count) const override {
    uint64_t base = 0;
    const uint64_t end = first + count;
    for (size_t i = 0; i < parts_.size() && base < end; ++i) {
      const uint64_t lo = std::max(first, base), hi = std::min(end, base + counts_[i]);
      if (lo < hi && !parts_[i]->is_hole(lo - base, hi - lo)) return false;
      base += counts_[i];
    }
    return true;
  }

 private:
  std::vector<std::unique_ptr<TensorProducer>> parts_;
  std::vector<uint64_t> counts_;
  uint64_t elsize_;
  bool whole_bytes_;
  uint64_t scratch_ = 0;
};

}  // namespace

std::unique_ptr<TensorProducer> make_concat_producer(
    std::vector<std::unique_ptr<TensorProducer>> parts, std::vector<uint64_t> counts, DType to) {
  return std::make_unique<ConcatProducer>(std::move(parts), std::move(counts), to);
}

}  // namespace ckptkit
