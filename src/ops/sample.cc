// sample: synthetic checkpoints with exactly the names, dtypes and shapes of a published layout.
//
// Values are a pure function of (seed, tensor name, element index) — a counter-based generator
// — so a file is identical whatever the thread count or chunk size. Scales follow what trained
// weights look like: matrices ~ N(0, 1/fan_in), biases ~ N(0, 0.02²), norm gains ~ 1 ± 0.02,
// CLIP position_ids count 0..N-1, EMA decay 0.9999, CLIP logit_scale ln(100). Buffers that the
// architecture fixes are written with their real values (model/schedule.h): SD1/SD2's DDPM
// schedule and SD3's flow sigmas, so that loaders which read them (A1111, stable-diffusion.cpp)
// see a sound model.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "ckptkit/cast.h"
#include "ckptkit/ops.h"
#include "io/errors.h"
#include "model/layouts.h"
#include "model/schedule.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

uint64_t mix64(uint64_t x) {  // SplitMix64 finalizer
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

uint64_t hash_name(std::string_view s, uint64_t seed) {
  uint64_t h = 0xCBF29CE484222325ull ^ mix64(seed + 0x9E3779B97F4A7C15ull);
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  return mix64(h);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

enum class Fill : uint8_t { kNormal, kGain, kConstant, kArange, kCounter, kTable };

struct FillRule {
  Fill fill;
  float scale;                                                // standard deviation, or the constant
  std::shared_ptr<const std::vector<float>> table = nullptr;  // kTable: every value
};

/// The values of a buffer whose contents the architecture fixes, or null.
std::shared_ptr<const std::vector<float>> fixed_values(const TensorLayout& t) {
  if (t.shape.size() != 1 || t.shape[0] == 0 || t.shape[0] > 100000) return nullptr;
  const size_t n = t.shape[0];
  const auto& names = detail::ddpm_buffer_names();
  if (std::find(names.begin(), names.end(), t.name) != names.end()) {
    const auto all = detail::ddpm_buffers(detail::scaled_linear_betas(0.00085, 0.012, n));
    const std::vector<double>& v = all.find(t.name)->second;
    return std::make_shared<const std::vector<float>>(v.begin(), v.end());  // to_torch: F32
  }
  if (ends_with(t.name, "model_sampling.sigmas"))  // SD3 (ComfyUI), shift 3
    return std::make_shared<const std::vector<float>>(detail::flow_sigmas(3.0f, n));
  return nullptr;
}

FillRule rule_for(const TensorLayout& t) {
  const std::string_view n = t.name;
  if (is_float(t.dtype))
    if (auto table = fixed_values(t)) return {Fill::kTable, 0, std::move(table)};
  if (!is_float(t.dtype)) {
    if (ends_with(n, "position_ids")) return {Fill::kArange, 0};
    return {Fill::kCounter, 0};
  }
  if (t.shape.empty()) {
    if (ends_with(n, "decay")) return {Fill::kConstant, 0.9999f};
    if (ends_with(n, "logit_scale")) return {Fill::kConstant, 4.6052f};  // ln(100), CLIP's
    return {Fill::kConstant, 1.0f};
  }
  if (t.shape.size() == 1) {
    if (ends_with(n, "bias") || contains(n, "beta")) return {Fill::kNormal, 0.02f};
    if (contains(n, "norm") || contains(n, "ln_") || ends_with(n, "scale") ||
        ends_with(n, ".weight"))
      return {Fill::kGain, 0.02f};
    return {Fill::kNormal, 0.02f};
  }
  const uint64_t numel = shape_numel(t.shape).value_or(1);
  const double fan_in = static_cast<double>(numel / std::max<uint64_t>(1, t.shape[0]));
  return {Fill::kNormal, static_cast<float>(1.0 / std::sqrt(std::max(1.0, fan_in)))};
}

/// Approximately standard normal (Irwin–Hall of four 16-bit uniforms, scaled to unit variance).
inline float normal_at(uint64_t key, uint64_t index) {
  const uint64_t h = mix64(key + index * 0x9E3779B97F4A7C15ull);
  const uint32_t s = static_cast<uint32_t>(h & 0xFFFF) + static_cast<uint32_t>((h >> 16) & 0xFFFF) +
                     static_cast<uint32_t>((h >> 32) & 0xFFFF) + static_cast<uint32_t>(h >> 48);
  return (static_cast<float>(s) * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

class SampleProducer final : public TensorProducer {
 public:
  SampleProducer(const TensorLayout& layout, DType out, uint64_t key)
      : out_(out),
        key_(key),
        rule_(rule_for(layout)),
        last_dim_(layout.shape.empty() ? 1 : std::max<uint64_t>(1, layout.shape.back())) {}

  uint64_t scratch_bytes_per_element() const override { return is_float(out_) ? 4 : 0; }

  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> scratch) const override {
    if (!is_float(out_)) return fill_integers(first, count, out);
    float* f = out_ == DType::F32 ? reinterpret_cast<float*>(out.data())
                                  : reinterpret_cast<float*>(scratch.data());
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t idx = first + i;
      switch (rule_.fill) {
        case Fill::kConstant:
          f[i] = rule_.scale;
          break;
        case Fill::kTable:
          f[i] = (*rule_.table)[idx];
          break;
        case Fill::kGain:
          f[i] = 1.0f + rule_.scale * normal_at(key_, idx);
          break;
        default:
          f[i] = rule_.scale * normal_at(key_, idx);
          break;
      }
    }
    if (out_ == DType::F32) return Status::ok();
    return cast_elements(DType::F32, out_, f, out.data(), count);
  }

 private:
  Status fill_integers(uint64_t first, uint64_t count, std::span<uint8_t> out) const {
    const unsigned size = dtype_info(out_).bits / 8;
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t idx = first + i;
      uint64_t v = rule_.fill == Fill::kArange ? idx % last_dim_ : mix64(key_ + idx) % 1000;
      if (out_ == DType::BOOL) v &= 1;
      std::memcpy(out.data() + i * size, &v, size);  // little-endian host
    }
    return Status::ok();
  }

  DType out_;
  uint64_t key_;
  FillRule rule_;
  uint64_t last_dim_;
};

}  // namespace

std::vector<LayoutSummary> list_layouts() {
  std::vector<LayoutSummary> out;
  for (const std::string& name : layout_names()) {
    auto tensors = load_layout(name);
    if (!tensors) continue;
    LayoutSummary s;
    s.name = name;
    std::map<std::string, uint64_t> counts;
    for (const TensorLayout& t : *tensors) {
      const uint64_t n = shape_numel(t.shape).value_or(0);
      s.parameters += n;
      s.bytes += dtype_bytes(t.dtype, n).value_or(0);
      ++counts[std::string(dtype_name(t.dtype))];
    }
    s.tensors = tensors->size();
    for (const auto& [dt, c] : counts)
      s.dtypes += fmt::format("{}{} ({})", s.dtypes.empty() ? "" : ", ", dt, c);
    out.push_back(std::move(s));
  }
  return out;
}

/// Largest tensor a sparse sample still writes values for.
constexpr uint64_t kSparseValueBytes = 1024;

Result<RunStats> write_sample(const std::string& layout, const std::string& out_path,
                              const SampleOptions& options) {
  CKPT_ASSIGN_OR_RETURN(std::vector<TensorLayout> tensors, load_layout(layout));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, options.run.force));
  if (options.dtype && !is_computable(*options.dtype))
    return error(ErrorCode::kInvalidArgument, "cannot generate {} values",
                 dtype_name(*options.dtype));
  Plan plan;
  plan.metadata = {{"format", "pt"},
                   {"ckptkit.sample.layout", layout},
                   {"ckptkit.sample.seed", std::to_string(options.seed)}};
  for (const TensorLayout& t : tensors) {
    DType out = t.dtype;
    if (options.dtype && is_float(t.dtype)) out = *options.dtype;
    if (!is_computable(out))
      return error(ErrorCode::kUnsupported, "layout {} has a {} tensor, which cannot be generated",
                   layout, dtype_name(out));
    plan.tensors.push_back(
        {t.name, out, t.shape,
         std::make_unique<SampleProducer>(t, out, hash_name(t.name, options.seed))});
    // Sparse: tiny tensors (position ids, scalars) and the fixed buffers (noise schedules)
    // still get their values, so a sparse file describes a sound model; the rest is a hole.
    if (options.sparse)
      plan.tensors.back().leave_hole =
          dtype_bytes(out, shape_numel(t.shape).value_or(0)).value_or(0) > kSparseValueBytes &&
          !fixed_values(t);
  }
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "generating";
  return execute_plan(plan, out_path, run);
}

}  // namespace ckptkit
