// Producers for ggml's block types: quantize (any input, through F32) and dequantize (a GGUF
// tensor's blocks to F32 or a cast of it). The kernels are src/tensor/quant.h; these only
// stage the values through the executor's scratch buffer.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "ckptkit/cast.h"
#include "io/errors.h"
#include "pipeline/plan.h"
#include "tensor/quant.h"

namespace ckptkit {
namespace {

/// Bytes of scratch per element a quantized type's blocks take, rounded up.
uint64_t block_bytes_per_element(DType t) {
  const DTypeInfo& d = dtype_info(t);
  return (d.block_bytes + d.block - 1u) / d.block;
}

/// Whether a block of zeros quantizes to all-zero bytes.
bool zeros_are_zero_bytes(DType type, QuantPath path) {
  const DTypeInfo& d = dtype_info(type);
  std::vector<float> zeros(d.block, 0.0f);
  std::vector<uint8_t> bytes(d.block_bytes, 0xFF);
  if (!quantize_rows(type, path, zeros.data(), 1, d.block, bytes.data()).is_ok()) return false;
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

/// Whether a block of zero bytes dequantizes to +0.0 everywhere (Q8_0, Q4_1, the K types; not
/// Q4_0 or Q5_0, whose zero nibble means -8·d, which is -0.0).
bool zero_bytes_are_zeros(DType type) {
  const DTypeInfo& d = dtype_info(type);
  std::vector<uint8_t> bytes(d.block_bytes, 0);
  std::vector<float> values(d.block, 1.0f);
  if (!dequantize_blocks(type, bytes.data(), d.block, values.data()).is_ok()) return false;
  return std::all_of(values.begin(), values.end(), [](float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    return bits == 0;
  });
}

/// Start of the F32 staging area after `used` bytes of scratch, 64-byte aligned.
constexpr uint64_t kAlign = 64;
uint64_t aligned(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

class QuantizeProducer final : public TensorProducer {
 public:
  QuantizeProducer(std::unique_ptr<TensorProducer> source, DType stage, DType type, QuantPath path,
                   uint64_t row)
      : source_(std::move(source)), stage_(stage), type_(type), path_(path), row_(row) {}

  // The F32 values, then the source's own scratch (at least 2 bytes per element, which the
  // rounding through F16/BF16 uses), plus alignment slack.
  uint64_t scratch_bytes_per_element() const override {
    return 4 + std::max<uint64_t>(2, source_->scratch_bytes_per_element()) + 1;
  }
  uint64_t input_bytes_per_element() const override { return source_->input_bytes_per_element(); }
  // The importance path weighs each value by its row's mean square, so it quantizes whole
  // rows; the reference path's blocks are independent of each other.
  uint64_t granule() const override {
    return path_ == QuantPath::kReference ? source_->granule() : std::lcm(source_->granule(), row_);
  }
  // A hole in the source stays a hole where zeros quantize to zero bytes (Q8_0, the K types;
  // not Q4_0, whose zero nibble is 8).
  bool is_hole(uint64_t first, uint64_t count) const override {
    return zeros_are_zero_bytes(type_, path_) && source_->is_hole(first, count);
  }

  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> scratch) const override {
    auto* f = reinterpret_cast<float*>(scratch.data());
    const uint64_t f_bytes = aligned(count * 4);
    if (f_bytes > scratch.size()) return error(ErrorCode::kInternal, "quantize scratch too small");
    std::span<uint8_t> rest = scratch.subspan(f_bytes);
    CKPT_RETURN_IF_ERROR(source_->produce(first, count, scratch.first(count * 4), rest));
    // The first step's rounding (ComfyUI quantizes the F16/BF16 file its converter wrote).
    if (stage_ != DType::F32) {
      CKPT_RETURN_IF_ERROR(cast_elements(DType::F32, stage_, f, rest.data(), count));
      CKPT_RETURN_IF_ERROR(cast_elements(stage_, DType::F32, rest.data(), f, count));
    }
    if (path_ == QuantPath::kReference) return quantize_rows(type_, path_, f, 1, count, out.data());
    return quantize_rows(type_, path_, f, count / row_, row_, out.data());
  }

 private:
  std::unique_ptr<TensorProducer> source_;
  DType stage_, type_;
  QuantPath path_;
  uint64_t row_;
};

class DequantizeProducer final : public TensorProducer {
 public:
  DequantizeProducer(const InputFile* file, uint64_t offset, DType from, DType to)
      : file_(file), offset_(offset), from_(from), to_(to) {}

  uint64_t scratch_bytes_per_element() const override {
    return block_bytes_per_element(from_) + 4 + 1;
  }
  uint64_t input_bytes_per_element() const override { return block_bytes_per_element(from_); }
  uint64_t granule() const override { return dtype_info(from_).block; }
  // Sparse GGUF files (tests, sampled models) stay sparse where zero blocks mean +0.
  bool is_hole(uint64_t first, uint64_t count) const override {
    return zero_bytes_are_zeros(from_) &&
           file_->is_hole(offset_ + dtype_bytes(from_, first).value_or(0),
                          dtype_bytes(from_, count).value_or(0));
  }

  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> scratch) const override {
    const uint64_t at = dtype_bytes(from_, first).value_or(0);
    const uint64_t n = dtype_bytes(from_, count).value_or(0);
    if (aligned(n) + count * 4 > scratch.size())
      return error(ErrorCode::kInternal, "dequantize scratch too small");
    CKPT_RETURN_IF_ERROR(file_->pread_exact(scratch.first(n), offset_ + at, "tensor data"));
    float* f = to_ == DType::F32 ? reinterpret_cast<float*>(out.data())
                                 : reinterpret_cast<float*>(scratch.data() + aligned(n));
    CKPT_RETURN_IF_ERROR(dequantize_blocks(from_, scratch.data(), count, f));
    if (to_ == DType::F32) return Status::ok();
    return cast_elements(DType::F32, to_, f, out.data(), count);
  }

 private:
  const InputFile* file_;
  uint64_t offset_;
  DType from_, to_;
};

}  // namespace

std::unique_ptr<TensorProducer> make_quantize_producer(std::unique_ptr<TensorProducer> source,
                                                       DType stage, DType type, QuantPath path,
                                                       uint64_t row) {
  return std::make_unique<QuantizeProducer>(std::move(source), stage, type, path, row);
}

std::unique_ptr<TensorProducer> make_dequantize_producer(const InputFile* file, uint64_t offset,
                                                         DType from, DType to) {
  return std::make_unique<DequantizeProducer>(file, offset, from, to);
}

}  // namespace ckptkit
