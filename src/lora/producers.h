// Internal: the producers `lora extract` and `lora resize` share. A module's two factors are
// two output tensors computed together: both producers hold the module's job, the first chunk
// of either computes it, and the job drops its factors once both are written.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "ckptkit/cast.h"
#include "pipeline/plan.h"

namespace ckptkit::detail {

/// A module whose factors are computed once: `compute()` fills `up` and `down` (F32).
class FactorJob {
 public:
  virtual ~FactorJob() = default;
  std::vector<float> up, down;

  /// Elements [first, first + count) of up (or down), cast to `to`; computes on first use.
  Status produce(bool want_up, DType to, uint64_t first, uint64_t count, std::span<uint8_t> out) {
    std::call_once(once_, [&] { status_ = compute(); });
    CKPT_RETURN_IF_ERROR(status_);
    const std::vector<float>& v = want_up ? up : down;
    CKPT_RETURN_IF_ERROR(cast_elements(DType::F32, to, v.data() + first, out.data(), count));
    if (written_.fetch_add(count) + count == up.size() + down.size()) {
      std::vector<float>().swap(up);
      std::vector<float>().swap(down);
    }
    return Status::ok();
  }

 protected:
  virtual Status compute() = 0;

 private:
  std::once_flag once_;
  Status status_;
  std::atomic<uint64_t> written_{0};
};

class FactorProducer final : public TensorProducer {
 public:
  FactorProducer(std::shared_ptr<FactorJob> job, bool up, DType out)
      : job_(std::move(job)), up_(up), out_(out) {}
  uint64_t scratch_bytes_per_element() const override { return 0; }
  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t>) const override {
    return job_->produce(up_, out_, first, count, out);
  }

 private:
  std::shared_ptr<FactorJob> job_;
  bool up_;
  DType out_;
};

/// A scalar (an alpha) of the output dtype.
class ScalarProducer final : public TensorProducer {
 public:
  ScalarProducer(float v, DType out) : v_(v), out_(out) {}
  uint64_t scratch_bytes_per_element() const override { return 0; }
  Status produce(uint64_t, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t>) const override {
    return cast_elements(DType::F32, out_, &v_, out.data(), count);
  }

 private:
  float v_;
  DType out_;
};

}  // namespace ckptkit::detail
