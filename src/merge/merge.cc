// `merge`: a plan whose producers compute each output chunk from the same chunk of every input.
// See ckptkit/merge.h and docs/merge.md. Built with -ffp-contract=off (scalars computed here
// must round exactly as documented too).
#include "ckptkit/merge.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <unordered_map>

#include "ckptkit/anatomy.h"
#include "ckptkit/cast.h"
#include "ckptkit/hash.h"
#include "io/errors.h"
#include "io/json.h"
#include "merge/kernels.h"
#include "model/families.h"
#include "ops/input.h"
#include "pipeline/plan.h"

namespace ckptkit {

// --- names ---------------------------------------------------------------------------------

namespace {

struct MethodRow {
  MergeMethod method;
  std::string_view name;
  size_t min_inputs, max_inputs;
};

constexpr MethodRow kMethods[] = {
    {MergeMethod::kWeightedSum, "weighted-sum", 2, merge::kMaxMergeInputs},
    {MergeMethod::kAddDifference, "add-difference", 3, 3},
    {MergeMethod::kTrainDifference, "train-difference", 3, 3},
    {MergeMethod::kSlerp, "slerp", 2, 2},
    {MergeMethod::kTies, "ties", 2, merge::kMaxMergeInputs},
    {MergeMethod::kDare, "dare", 2, merge::kMaxMergeInputs},
    {MergeMethod::kDareTies, "dare-ties", 2, merge::kMaxMergeInputs},
};

const MethodRow& row_of(MergeMethod m) {
  for (const MethodRow& r : kMethods)
    if (r.method == m) return r;
  return kMethods[0];
}

}  // namespace

std::string_view merge_method_name(MergeMethod m) { return row_of(m).name; }

std::optional<MergeMethod> parse_merge_method(std::string_view name) {
  std::string n(name);
  for (char& c : n)
    c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const MethodRow& r : kMethods)
    if (r.name == n) return r.method;
  return std::nullopt;
}

std::vector<MergeMethod> all_merge_methods() {
  std::vector<MergeMethod> v;
  for (const MethodRow& r : kMethods) v.push_back(r.method);
  return v;
}

std::pair<size_t, size_t> merge_method_arity(MergeMethod m) {
  const MethodRow& r = row_of(m);
  return {r.min_inputs, r.max_inputs};
}

std::string_view missing_policy_name(MissingPolicy p) {
  switch (p) {
    case MissingPolicy::kTakeA:
      return "take-a";
    case MissingPolicy::kSkip:
      return "skip";
    case MissingPolicy::kError:
      return "error";
  }
  return "take-a";
}

std::optional<MissingPolicy> parse_missing_policy(std::string_view name) {
  for (MissingPolicy p : {MissingPolicy::kTakeA, MissingPolicy::kSkip, MissingPolicy::kError})
    if (missing_policy_name(p) == name) return p;
  return std::nullopt;
}

namespace {

namespace fs = std::filesystem;
using detail::file_stem;
using detail::OpenedInput;

std::string letter(size_t i) {
  return i < 26 ? std::string(1, static_cast<char>('A' + i)) : fmt::format("#{}", i + 1);
}

std::string file_name(const std::string& path) { return fs::path(path).filename().string(); }

/// The family whose block names apply, from the denoiser's architecture.
std::string block_family(const Anatomy& a) {
  const std::string& arch = a.architecture;
  if (arch == "sd1" || arch == "sd2" || arch == "sdxl-refiner") return arch;
  if (arch == "sdxl-base" || arch == "ssd-1b" || arch == "segmind-vega") return "sdxl";
  if (arch.starts_with("sd3")) return "sd3";
  if (arch.starts_with("flux1")) return "flux";
  return a.family;
}

/// Whether inputs of these two architectures can be merged tensor by tensor.
bool compatible(const Anatomy& a, const Anatomy& b) {
  if (a.architecture == b.architecture) return true;
  // FLUX.1 dev and schnell share every tensor but dev's guidance_in.
  return a.architecture.starts_with("flux1") && b.architecture.starts_with("flux1");
}

/// The α group of every tensor of `ck` (by index).
std::vector<std::string> groups_of_impl(const Checkpoint& ck, const Anatomy& a) {
  std::vector<std::string> g(ck.tensors.size(), "other");
  const std::string fam = block_family(a);
  for (const Component& c : a.components) {
    for (size_t i : c.tensors) {
      if (i >= g.size()) continue;
      switch (c.role) {
        case Role::kDiffusionModel: {
          if (c.naming != Naming::kLdm && c.naming != Naming::kBfl) break;
          std::string key = detail::strip_component_prefix(ck.tensors[i].name, c.prefix, "");
          std::string b = merge_block_of(fam, key);
          if (!b.empty()) g[i] = std::move(b);
          break;
        }
        case Role::kTextEncoder:
          g[i] = "text_encoder";
          break;
        case Role::kVae:
          g[i] = "vae";
          break;
        default:
          break;
      }
    }
  }
  return g;
}

/// Sort key that puts blocks in model order: IN, M, OUT, joint, double, single; then the rest.
std::pair<int, unsigned> group_rank(const std::string& g) {
  auto num = [&](size_t at) {
    unsigned n = 0;
    for (size_t i = at; i < g.size() && std::isdigit(static_cast<unsigned char>(g[i])); ++i)
      n = n * 10 + static_cast<unsigned>(g[i] - '0');
    return n;
  };
  if (g.starts_with("IN")) return {0, num(2)};
  if (g.starts_with("M")) return {1, num(1)};
  if (g.starts_with("OUT")) return {2, num(3)};
  if (g.starts_with("joint_blocks.")) return {3, num(13)};
  if (g.starts_with("double_blocks.")) return {4, num(14)};
  if (g.starts_with("single_blocks.")) return {5, num(14)};
  if (g == "text_encoder") return {6, 0};
  if (g == "vae") return {7, 0};
  return {8, 0};
}

bool group_less(const std::string& a, const std::string& b) {
  auto ra = group_rank(a), rb = group_rank(b);
  return ra != rb ? ra < rb : a < b;
}

std::string json_number(double v) { return fmt::format("{}", v); }

// --- producers ---------------------------------------------------------------------------------

/// One input's tensor as a source of F32 values.
struct Source {
  std::unique_ptr<TensorProducer> f32;
  const InputFile* file = nullptr;  ///< set when the bytes are plain (holes can be checked)
  uint64_t begin = 0;               ///< absolute offset of element 0 (with `file`)
  uint64_t esize = 0;               ///< bytes per element in the input
};

/// Reads elements [first, first + count) of every source as F32 into `scratch` and points
/// x[i] at them. Layout: all F32 areas first (aligned), then each source's own scratch.
Status read_sources(const std::vector<Source>& src, uint64_t first, uint64_t count,
                    std::span<uint8_t> scratch, std::vector<float*>& x) {
  uint8_t* base = scratch.data();
  uint8_t* tail = base + src.size() * count * sizeof(float);
  x.resize(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    x[i] = reinterpret_cast<float*>(base + i * count * sizeof(float));
    const uint64_t sub = count * src[i].f32->scratch_bytes_per_element();
    CKPT_RETURN_IF_ERROR(src[i].f32->produce(
        first, count, std::span<uint8_t>(reinterpret_cast<uint8_t*>(x[i]), count * sizeof(float)),
        std::span<uint8_t>(tail, sub)));
    tail += sub;
  }
  return Status::ok();
}

uint64_t sources_bytes_per_element(const std::vector<Source>& src) {
  uint64_t n = 0;
  for (const Source& s : src) n += sizeof(float) + s.f32->scratch_bytes_per_element();
  return n;
}

/// Streams the tensor: each chunk from the same chunk of every input.
class MergeProducer final : public TensorProducer {
 public:
  MergeProducer(std::vector<Source> src, merge::TensorParams p, DType out, uint64_t numel,
                bool zero_is_hole)
      : src_(std::move(src)),
        p_(std::move(p)),
        out_(out),
        numel_(numel),
        zero_is_hole_(zero_is_hole),
        per_elem_(sources_bytes_per_element(src_)) {}

  uint64_t scratch_bytes_per_element() const override { return per_elem_; }
  uint64_t input_bytes_per_element() const override {
    uint64_t n = 0;
    for (const Source& s : src_) n += s.esize;
    return n;
  }

  bool is_hole(uint64_t first, uint64_t count) const override {
    if (!zero_is_hole_) return false;
    for (const Source& s : src_)
      if (!s.file || !s.file->is_hole(s.begin + first * s.esize, count * s.esize)) return false;
    return true;
  }

  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> scratch) const override {
    if (merge::needs_stats(p_.method)) {
      std::call_once(stats_once_, [&] { stats_status_ = gather_stats(scratch); });
      CKPT_RETURN_IF_ERROR(stats_status_);
    }
    std::vector<float*> x;
    CKPT_RETURN_IF_ERROR(read_sources(src_, first, count, scratch, x));
    float* res = out_ == DType::F32 ? reinterpret_cast<float*>(out.data()) : x[0];
    merge::merge_chunk(p_, stats_, x.data(), first, count, res);
    if (out_ == DType::F32) return Status::ok();
    return cast_elements(DType::F32, out_, res, out.data(), count);
  }

 private:
  /// The whole-tensor statistics (slerp, ties), read through the caller's scratch buffer in
  /// windows as large as it holds; runs once per tensor (other threads wait).
  Status gather_stats(std::span<uint8_t> scratch) const {
    const uint64_t window = std::max<uint64_t>(1, scratch.size() / per_elem_);
    std::vector<float*> x;
    for (int pass = 0; pass < merge::stats_passes(p_.method); ++pass) {
      merge::StatsPass sp(p_, pass, numel_, stats_);
      for (uint64_t first = 0; first < numel_; first += window) {
        const uint64_t n = std::min(window, numel_ - first);
        CKPT_RETURN_IF_ERROR(read_sources(src_, first, n, scratch, x));
        sp.add(x.data(), first, n);
      }
      sp.finish(stats_);
    }
    return Status::ok();
  }

  std::vector<Source> src_;
  merge::TensorParams p_;
  DType out_;
  uint64_t numel_;
  bool zero_is_hole_;
  uint64_t per_elem_;
  mutable std::once_flag stats_once_;
  mutable Status stats_status_;
  mutable merge::TensorStats stats_;
};

/// Largest tensor merged in memory (A with extra channels): conv_in and img_in are far smaller.
constexpr uint64_t kMaxPartialElements = 64ull << 20;

/// A tensor where A has more channels than the others along `dim`: computed whole, in memory,
/// once; the overlap merged and the rest of A kept.
class PartialProducer final : public TensorProducer {
 public:
  PartialProducer(std::vector<Source> src, merge::TensorParams p, DType out, Shape a_shape,
                  Shape other_shape, size_t dim)
      : src_(std::move(src)),
        p_(std::move(p)),
        out_(out),
        a_shape_(std::move(a_shape)),
        o_shape_(std::move(other_shape)),
        dim_(dim) {}

  uint64_t scratch_bytes_per_element() const override { return 0; }

  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t>) const override {
    std::call_once(once_, [&] { status_ = compute(); });
    CKPT_RETURN_IF_ERROR(status_);
    const uint64_t es = dtype_info(out_).bits / 8;
    std::memcpy(out.data(), result_.data() + first * es, count * es);
    return Status::ok();
  }

 private:
  static Status read_all(const Source& s, uint64_t n, std::vector<float>& v) {
    v.resize(n);
    std::vector<uint8_t> sub(n * s.f32->scratch_bytes_per_element());
    return s.f32->produce(0, n, std::span<uint8_t>(reinterpret_cast<uint8_t*>(v.data()), n * 4),
                          sub);
  }

  Status compute() const {
    const uint64_t na = shape_numel(a_shape_).value_or(0);
    const uint64_t no = shape_numel(o_shape_).value_or(0);
    std::vector<float> a;  // A whole
    std::vector<std::vector<float>> others(src_.size() - 1);
    CKPT_RETURN_IF_ERROR(read_all(src_.front(), na, a));
    for (size_t i = 1; i < src_.size(); ++i)
      CKPT_RETURN_IF_ERROR(read_all(src_[i], no, others[i - 1]));
    // A's elements that the others have, in their order.
    uint64_t outer = 1, inner = 1;
    for (size_t d = 0; d < dim_; ++d) outer *= o_shape_[d];
    for (size_t d = dim_ + 1; d < o_shape_.size(); ++d) inner *= o_shape_[d];
    const uint64_t mid_o = o_shape_[dim_], mid_a = a_shape_[dim_];
    auto a_index = [&](uint64_t o, uint64_t m, uint64_t in) {
      return (o * mid_a + m) * inner + in;
    };
    std::vector<float> overlap(no);
    for (uint64_t o = 0, k = 0; o < outer; ++o)
      for (uint64_t m = 0; m < mid_o; ++m)
        for (uint64_t in = 0; in < inner; ++in, ++k) overlap[k] = a[a_index(o, m, in)];
    std::vector<const float*> x;
    x.reserve(src_.size());
    x.push_back(overlap.data());
    for (const std::vector<float>& v : others) x.push_back(v.data());
    merge::TensorStats stats;
    for (int pass = 0; pass < merge::stats_passes(p_.method); ++pass) {
      merge::StatsPass sp(p_, pass, no, stats);
      sp.add(x.data(), 0, no);
      sp.finish(stats);
    }
    std::vector<float> merged(no);
    merge::merge_chunk(p_, stats, x.data(), 0, no, merged.data());
    for (uint64_t o = 0, k = 0; o < outer; ++o)
      for (uint64_t m = 0; m < mid_o; ++m)
        for (uint64_t in = 0; in < inner; ++in, ++k) a[a_index(o, m, in)] = merged[k];
    result_.resize(na * (dtype_info(out_).bits / 8));
    return cast_elements(DType::F32, out_, a.data(), result_.data(), na);
  }

  std::vector<Source> src_;
  merge::TensorParams p_;
  DType out_;
  Shape a_shape_, o_shape_;
  size_t dim_;
  mutable std::once_flag once_;
  mutable Status status_;
  mutable std::vector<uint8_t> result_;
};

// --- planning ----------------------------------------------------------------------------------

struct Input {
  std::string path;
  std::unique_ptr<OpenedInput> in;
  Anatomy anatomy;
  std::unordered_map<std::string_view, const TensorInfo*> by_name;
};

Status bad(std::string msg) { return Status(ErrorCode::kInvalidArgument, std::move(msg)); }

bool in_unit(double v) { return v >= 0.0 && v <= 1.0; }

/// Checks what can be checked before any file is opened.
Status validate_spec(const MergeSpec& s) {
  const auto [lo, hi] = merge_method_arity(s.method);
  const size_t n = s.inputs.size();
  const std::string_view name = merge_method_name(s.method);
  if (n < lo || n > hi) {
    std::string want = lo == hi ? fmt::format("exactly {}", lo) : fmt::format("{} to {}", lo, hi);
    std::string use;
    if (s.method == MergeMethod::kAddDifference || s.method == MergeMethod::kTrainDifference)
      use = " (A + (B − C)·α: the model to change, the finetune, and the finetune's base)";
    return bad(fmt::format("{} takes {} inputs{}; {} given", name, want, use, n));
  }
  auto finite = [](double v) { return std::isfinite(v); };
  const bool x = s.allow_extrapolation;
  if (!finite(s.alpha) || (!x && !in_unit(s.alpha)))
    return bad(fmt::format("alpha {} is outside [0, 1] (give --allow-extrapolation to go beyond)",
                           s.alpha));
  for (const auto& [g, v] : s.block_alpha)
    if (!finite(v) || (!x && !in_unit(v)))
      return bad(
          fmt::format("alpha {} of {} is outside [0, 1] (give --allow-extrapolation to go "
                      "beyond)",
                      v, g));
  for (double w : s.weights)
    if (!finite(w) || (!x && !in_unit(w)))
      return bad(
          fmt::format("weight {} is outside [0, 1] (give --allow-extrapolation to go "
                      "beyond)",
                      w));
  if (s.method == MergeMethod::kWeightedSum) {
    if (!s.weights.empty() && s.weights.size() != n)
      return bad(
          fmt::format("weighted-sum takes one weight per input (A first): {} inputs, {} "
                      "weights",
                      n, s.weights.size()));
    if (n > 2 && (!s.block_alpha.empty() || !s.block_string.empty()))
      return bad(
          "per-block alpha applies to two inputs; with more, weighted-sum uses one weight "
          "per input (--weights)");
    if (!s.weights.empty()) {
      double sum = 0;
      for (double w : s.weights) sum += w;
      if (s.normalize && !(std::fabs(sum) > 0))
        return bad("the weights sum to 0 and cannot be normalized");
      if (!s.normalize && std::fabs(sum - 1.0) > 1e-6)
        return bad(
            fmt::format("weighted-sum weights must sum to 1; these sum to {} (give "
                        "--normalize to divide them by their sum)",
                        sum));
    }
  } else if (s.method == MergeMethod::kTies || s.method == MergeMethod::kDare ||
             s.method == MergeMethod::kDareTies) {
    if (!s.weights.empty() && s.weights.size() != n - 1)
      return bad(fmt::format("{} takes one weight per input after A: {} inputs, {} weights", name,
                             n, s.weights.size()));
  } else if (!s.weights.empty()) {
    return bad(fmt::format("{} takes no weights (it uses alpha)", name));
  }
  if (s.method == MergeMethod::kTies && !(s.density > 0 && s.density <= 1))
    return bad(fmt::format("density {} is outside (0, 1]", s.density));
  if ((s.method == MergeMethod::kDare || s.method == MergeMethod::kDareTies) &&
      !(s.drop >= 0 && s.drop < 1))
    return bad(fmt::format("drop probability {} is outside [0, 1)", s.drop));
  for (const auto& [part, idx] : s.part_from) {
    if (part != "vae" && part != "text_encoder")
      return bad(
          fmt::format("'{}' cannot be taken from one input: only vae and text_encoder can", part));
    if (idx >= n)
      return bad(fmt::format("{} from input {}: there are only {} inputs", part, letter(idx), n));
  }
  return Status::ok();
}

/// Everything a tensor's merge needs, for its group's α.
merge::TensorParams params_for(const MergeSpec& s, const std::vector<double>& weights, double alpha,
                               const std::string& name) {
  merge::TensorParams p;
  p.method = s.method;
  p.inputs = s.inputs.size();
  p.alpha = static_cast<float>(alpha);
  switch (s.method) {
    case MergeMethod::kWeightedSum:
      if (p.inputs == 2 && weights.empty()) {
        p.weights = {static_cast<float>(1.0 - alpha), static_cast<float>(alpha)};
      } else {
        for (double w : weights) p.weights.push_back(static_cast<float>(w));
      }
      break;
    case MergeMethod::kTrainDifference:
      p.train_scale = static_cast<float>(1.8 * alpha);
      break;
    case MergeMethod::kSlerp:
      p.slerp_t = alpha;
      break;
    case MergeMethod::kTies:
    case MergeMethod::kDare:
    case MergeMethod::kDareTies:
      for (double w : weights) p.weights.push_back(static_cast<float>(w));
      p.density = s.density;
      p.dare_rescale = static_cast<float>(1.0 / (1.0 - s.drop));
      p.dare_threshold = static_cast<uint32_t>(std::llround(s.drop * 16777216.0));
      p.dare_key = s.seed ^ merge::fnv1a64(name);
      break;
    default:
      break;
  }
  return p;
}

/// Whether the tensor's merge maps all-zero inputs to +0 (then holes in every input can stay
/// holes in the output).
bool zero_maps_to_zero(const merge::TensorParams& p) {
  if (p.method == MergeMethod::kSlerp && !(p.slerp_t >= 0 && p.slerp_t <= 1)) return false;
  merge::TensorStats st;
  st.s0 = static_cast<float>(1.0 - p.slerp_t);
  st.s1 = static_cast<float>(p.slerp_t);
  st.threshold.assign(p.inputs, 0);
  std::vector<float> zeros(p.inputs, 0.0f);
  std::vector<const float*> x(p.inputs);
  for (size_t i = 0; i < p.inputs; ++i) x[i] = &zeros[i];
  float r = 1;
  merge::merge_chunk(p, st, x.data(), 0, 1, &r);
  uint32_t bits;
  std::memcpy(&bits, &r, 4);
  return bits == 0;
}

/// If A's shape and the others' differ only in one dimension where A is larger, that dimension.
std::optional<size_t> extra_channel_dim(const Shape& a, const Shape& o) {
  if (a.size() != o.size()) return std::nullopt;
  std::optional<size_t> dim;
  for (size_t d = 0; d < a.size(); ++d) {
    if (a[d] == o[d]) continue;
    if (dim || o[d] > a[d] || o[d] == 0) return std::nullopt;
    dim = d;
  }
  return dim;
}

std::string shape_text(const Shape& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += fmt::format("{}{}", i ? "," : "", s[i]);
  return t + "]";
}

}  // namespace

// --- list-blocks ---------------------------------------------------------------------------------

Result<MergeBlocks> list_merge_blocks(const std::string& path, const SafetensorsLimits& limits) {
  ReadLimits rl;
  rl.safetensors = limits;
  CKPT_ASSIGN_OR_RETURN(Checkpoint ck, read_checkpoint(path, rl));
  const Anatomy a = analyze(ck);
  MergeBlocks out;
  out.architecture = a.architecture;
  out.family = block_family(a);
  const std::vector<std::string> g = groups_of_impl(ck, a);
  std::map<std::string, MergeGroup> by;
  for (size_t i = 0; i < g.size(); ++i) {
    MergeGroup& m = by[g[i]];
    m.name = g[i];
    m.tensors += 1;
    m.parameters += ck.tensors[i].numel();
  }
  for (auto& [name, m] : by) out.groups.push_back(m);
  std::sort(out.groups.begin(), out.groups.end(),
            [](const MergeGroup& x, const MergeGroup& y) { return group_less(x.name, y.name); });
  return out;
}

// --- merge -------------------------------------------------------------------------------------

Result<MergeReport> merge_models(const std::string& out_path, const MergeOptions& options) {
  MergeSpec spec = options.spec;
  CKPT_RETURN_IF_ERROR(validate_spec(spec));
  if (!options.dry_run) {
    CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
    CKPT_RETURN_IF_ERROR(check_output_path(out_path, options.run.force));
  }
  const size_t n = spec.inputs.size();

  // 1. Open, scan and analyze every input.
  std::vector<Input> in(n);
  for (size_t i = 0; i < n; ++i) {
    in[i].path = spec.inputs[i];
    detail::OpenOptions open;
    open.limits.safetensors = options.limits;
    open.allow_dangerous = options.allow_dangerous;
    open.verb = "merge";
    CKPT_ASSIGN_OR_RETURN(in[i].in, OpenedInput::open(spec.inputs[i], out_path, open));
    const Checkpoint& ck = in[i].in->checkpoint();
    in[i].anatomy = analyze(ck);
    for (const TensorInfo& t : ck.tensors) in[i].by_name.emplace(t.name, &t);
  }
  const Anatomy& aa = in[0].anatomy;
  auto arch_text = [](const Anatomy& a) {
    return a.architecture == "unknown" ? std::string("of an unrecognized architecture")
                                       : a.architecture;
  };
  if (aa.layout == "lora" || aa.architecture == "lora")
    return Status(ErrorCode::kUnsupported,
                  "A is a LoRA: merge takes models (baking a LoRA into a model is not done yet)",
                  spec.inputs[0]);
  if (aa.architecture == "unknown")
    return Status(ErrorCode::kUnsupported,
                  "A's architecture is not recognized, so which tensors correspond cannot be "
                  "trusted; `ckptkit inspect` shows the nearest known models",
                  spec.inputs[0]);
  for (size_t i = 1; i < n; ++i) {
    if (!compatible(aa, in[i].anatomy))
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("A is {}, {} is {}: merging needs models of the same "
                                "architecture",
                                arch_text(aa), letter(i), arch_text(in[i].anatomy)),
                    spec.inputs[i]);
  }
  const std::string family = block_family(aa);
  const Checkpoint& cka = in[0].in->checkpoint();
  const std::vector<std::string> groups = groups_of_impl(cka, aa);

  // 2. α per group: the supermerger string, then the named values over it.
  std::map<std::string, double> block_alpha;
  if (!spec.block_string.empty()) {
    CKPT_ASSIGN_OR_RETURN(block_alpha, parse_block_weights(spec.block_string, family));
    for (const auto& [g, v] : block_alpha)
      if (!std::isfinite(v) || (!spec.allow_extrapolation && !in_unit(v)))
        return bad(
            fmt::format("alpha {} of {} (from the block string) is outside [0, 1] (give "
                        "--allow-extrapolation to go beyond)",
                        v, g));
  }
  for (const auto& [g, v] : spec.block_alpha) block_alpha[g] = v;
  std::set<std::string> present(groups.begin(), groups.end());
  for (const auto& [g, v] : block_alpha) {
    if (g == "text_encoder" || g == "vae" || g == "other" || present.count(g)) continue;
    std::vector<std::string> names(present.begin(), present.end());
    std::sort(names.begin(), names.end(), group_less);
    return bad(fmt::format("{} has no block '{}' ({} model; its groups: {})",
                           file_name(spec.inputs[0]), g, family.empty() ? aa.architecture : family,
                           fmt::join(names, ", ")));
  }
  // A group's α, or the default.
  auto alpha_of = [&](const std::string& g) {
    auto it = block_alpha.find(g);
    return it == block_alpha.end() ? spec.alpha : it->second;
  };

  // Weights: normalized, defaulted.
  std::vector<double> weights = spec.weights;
  if (spec.method == MergeMethod::kWeightedSum) {
    if (weights.empty() && n > 2) weights.assign(n, 1.0 / static_cast<double>(n));
    if (spec.normalize && !weights.empty()) {
      double sum = 0;
      for (double w : weights) sum += w;
      for (double& w : weights) w /= sum;
    }
  } else if (weights.empty() &&
             (spec.method == MergeMethod::kTies || spec.method == MergeMethod::kDare ||
              spec.method == MergeMethod::kDareTies)) {
    weights.assign(n - 1,
                   spec.method == MergeMethod::kDare ? 1.0 / static_cast<double>(n - 1) : 1.0);
  }

  // 3. The plan, tensor by tensor in A's order.
  MergeReport report;
  report.architecture = aa.architecture;
  report.family = family;
  report.output = out_path;
  Plan plan;
  plan.keep_order = true;  // A's order, as docs/merge.md says
  for (const Input& i : in) i.in->add_inputs(plan);
  struct GroupTally {
    double alpha = 0;
    std::map<std::string, uint64_t> actions;
  };
  std::map<std::string, GroupTally> tally;
  std::set<std::string> not_in_a;
  for (size_t i = 1; i < n; ++i)
    for (const TensorInfo& t : in[i].in->checkpoint().tensors)
      if (!in[0].by_name.count(t.name)) not_in_a.insert(t.name);
  report.not_in_a.assign(not_in_a.begin(), not_in_a.end());

  std::vector<std::string> missing_reasons;
  for (size_t ti = 0; ti < cka.tensors.size(); ++ti) {
    const TensorInfo& ta = cka.tensors[ti];
    const std::string& group = groups[ti];
    const double alpha = alpha_of(group);
    GroupTally& gt = tally[group];
    gt.alpha = alpha;
    const DType out_dtype = spec.dtype && is_float(ta.dtype) ? *spec.dtype : ta.dtype;
    auto take = [&](size_t k, const TensorInfo& t, std::string_view why) {
      plan.tensors.push_back({ta.name, out_dtype, ta.shape, in[k].in->producer(t, out_dtype)});
      gt.actions[fmt::format("{} {}", why, letter(k))] += 1;
      report.tensors_copied += 1;
    };
    if (!is_float(ta.dtype)) {
      take(0, ta, "copied from");
      continue;
    }
    // A group taken whole from one input.
    if (auto pf = spec.part_from.find(group); pf != spec.part_from.end()) {
      auto it = in[pf->second].by_name.find(ta.name);
      if (it != in[pf->second].by_name.end() && it->second->shape == ta.shape &&
          is_float(it->second->dtype)) {
        take(pf->second, *it->second, "copied from");
        continue;
      }
    }
    // Every input's tensor, or the reason one is missing.
    std::vector<const TensorInfo*> ts(n, &ta);  // A's, then each input's
    std::string why;
    std::optional<Shape> other_shape;
    for (size_t k = 1; k < n && why.empty(); ++k) {
      auto it = in[k].by_name.find(ta.name);
      if (it == in[k].by_name.end()) {
        why = fmt::format("not in {}", letter(k));
      } else if (!is_float(it->second->dtype)) {
        why = fmt::format("{} is {} in {}", ta.name, dtype_name(it->second->dtype), letter(k));
      } else if (other_shape && it->second->shape != *other_shape) {
        why = fmt::format("{} has shape {}, {} has {}", letter(k), shape_text(it->second->shape),
                          letter(k - 1), shape_text(*other_shape));
      } else {
        other_shape = it->second->shape;
        ts[k] = it->second;
      }
    }
    std::optional<size_t> extra_dim;
    if (why.empty() && other_shape && *other_shape != ta.shape) {
      extra_dim = extra_channel_dim(ta.shape, *other_shape);
      if (!extra_dim)
        why = fmt::format("A has shape {}, the others {}", shape_text(ta.shape),
                          shape_text(*other_shape));
    }
    if (!why.empty()) {
      if (spec.missing == MissingPolicy::kError)
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("tensor {}: {} (--missing take-a writes A's, --missing skip "
                                  "leaves it out)",
                                  ta.name, why),
                      spec.inputs[0]);
      report.missing.push_back(ta.name);
      missing_reasons.push_back(fmt::format("{}: {}", ta.name, why));
      if (spec.missing == MissingPolicy::kSkip) {
        gt.actions["left out (missing)"] += 1;
        continue;
      }
      take(0, ta, "missing: copied from");
      continue;
    }
    const std::vector<double> wts =
        spec.method == MergeMethod::kWeightedSum && n == 2 && spec.weights.empty()
            ? std::vector<double>{1.0 - alpha, alpha}
            : weights;
    // weighted-sum with all the weight on one input: that input's tensor.
    if (spec.method == MergeMethod::kWeightedSum && !extra_dim) {
      std::optional<size_t> only;
      size_t nonzero = 0;
      for (size_t k = 0; k < n; ++k)
        if (wts[k] != 0.0) ++nonzero, only = k;
      if (nonzero == 1 && wts[*only] == 1.0) {
        take(*only, *ts[*only], "copied from");
        continue;
      }
    }
    merge::TensorParams p = params_for(spec, wts, alpha, ta.name);
    std::vector<Source> src(n);
    for (size_t k = 0; k < n; ++k) {
      src[k].f32 = in[k].in->producer(*ts[k], DType::F32);
      auto [file, where] = in[k].in->locate(*ts[k]);
      src[k].esize = dtype_info(ts[k]->dtype).bits / 8;
      if (where.is_plain()) {
        src[k].file = file;
        src[k].begin = where.begin;
      }
    }
    if (extra_dim) {
      const uint64_t na = ta.numel();
      if (na > kMaxPartialElements)
        return Status(ErrorCode::kUnsupported,
                      fmt::format("tensor {} ({} elements) has more channels in A than in the "
                                  "others and is too large to merge in memory",
                                  ta.name, na),
                      spec.inputs[0]);
      plan.tensors.push_back(
          {ta.name, out_dtype, ta.shape,
           std::make_unique<PartialProducer>(std::move(src), std::move(p), out_dtype, ta.shape,
                                             *other_shape, *extra_dim)});
      report.partial.push_back(ta.name);
      gt.actions["merged (A's extra channels kept)"] += 1;
    } else {
      const bool hole = zero_maps_to_zero(p);
      plan.tensors.push_back({ta.name, out_dtype, ta.shape,
                              std::make_unique<MergeProducer>(std::move(src), std::move(p),
                                                              out_dtype, ta.numel(), hole)});
      gt.actions["merged"] += 1;
    }
    report.tensors_merged += 1;
  }
  if (plan.tensors.empty()) return bad("nothing to write: every tensor of A was left out");

  for (auto& [name, gt] : tally) {
    MergeGroupPlan g;
    g.name = name;
    g.alpha = gt.alpha;
    for (const auto& [action, count] : gt.actions) {
      g.action += fmt::format("{}{}{}", g.action.empty() ? "" : "; ", action,
                              gt.actions.size() > 1 ? fmt::format(" ({})", count) : "");
      g.tensors += count;
    }
    report.groups.push_back(std::move(g));
  }
  std::sort(
      report.groups.begin(), report.groups.end(),
      [](const MergeGroupPlan& x, const MergeGroupPlan& y) { return group_less(x.name, y.name); });
  if (!missing_reasons.empty()) {
    const size_t shown = std::min<size_t>(missing_reasons.size(), 10);
    for (size_t i = 0; i < shown; ++i) report.notes.push_back(missing_reasons[i]);
    if (missing_reasons.size() > shown)
      report.notes.push_back(
          fmt::format("… and {} more tensors {}", missing_reasons.size() - shown,
                      spec.missing == MissingPolicy::kSkip ? "left out" : "taken from A"));
  }
  if (!report.not_in_a.empty())
    report.notes.push_back(
        fmt::format("{} tensors of the other inputs are not in A and are not "
                    "written (first: {})",
                    report.not_in_a.size(), report.not_in_a.front()));

  // 4. Inputs and provenance.
  for (size_t i = 0; i < n; ++i) {
    MergeInputInfo info;
    info.path = spec.inputs[i];
    info.name = file_name(spec.inputs[i]);
    info.bytes = in[i].in->checkpoint().file_size;
    info.architecture = in[i].anatomy.architecture;
    report.input_bytes += info.bytes;
    report.inputs.push_back(std::move(info));
  }
  if (spec.hash_inputs) {
    HashOptions ho;
    ho.algos = {HashAlgo::kAutoV2};
    const std::vector<FileHashes> hs = hash_files(spec.inputs, ho);
    for (size_t i = 0; i < n && i < hs.size(); ++i) {
      if (!hs[i].error.is_ok()) return hs[i].error;
      if (!hs[i].values.empty()) report.inputs[i].autov2 = hs[i].values[0].hex;
    }
  }
  std::string j = "{\"ckptkit\":\"0.1.0\",\"method\":";
  append_json_string(j, merge_method_name(spec.method));
  j += ",\"alpha\":" + json_number(spec.alpha);
  j += ",\"blocks\":{";
  {
    std::vector<std::string> names;
    for (const auto& [g, v] : block_alpha) names.push_back(g);
    std::sort(names.begin(), names.end(), group_less);
    for (size_t i = 0; i < names.size(); ++i) {
      if (i) j += ",";
      append_json_string(j, names[i]);
      j += ":" + json_number(block_alpha[names[i]]);
    }
  }
  j += "}";
  if (!weights.empty()) {
    j += ",\"weights\":[";
    for (size_t i = 0; i < weights.size(); ++i) j += (i ? "," : "") + json_number(weights[i]);
    j += "]";
  }
  if (spec.method == MergeMethod::kTies) j += ",\"density\":" + json_number(spec.density);
  if (spec.method == MergeMethod::kDare || spec.method == MergeMethod::kDareTies)
    j += fmt::format(",\"drop\":{},\"seed\":{}", json_number(spec.drop), spec.seed);
  j += ",\"dtype\":";
  if (spec.dtype)
    append_json_string(j, dtype_name(*spec.dtype));
  else
    j += "null";
  j += ",\"missing\":";
  append_json_string(j, missing_policy_name(spec.missing));
  j += ",\"parts\":{";
  {
    bool first = true;
    for (const auto& [part, idx] : spec.part_from) {
      if (!first) j += ",";
      first = false;
      append_json_string(j, part);
      j += ":";
      append_json_string(j, letter(idx));
    }
  }
  j += "},\"inputs\":[";
  for (size_t i = 0; i < n; ++i) {
    const MergeInputInfo& info = report.inputs[i];
    j += i ? ",{\"name\":" : "{\"name\":";
    append_json_string(j, info.name);
    j += fmt::format(",\"bytes\":{}", info.bytes);
    j += ",\"architecture\":";
    append_json_string(j, info.architecture);
    if (!info.autov2.empty()) {
      j += ",\"autov2\":";
      append_json_string(j, info.autov2);
    }
    j += "}";
  }
  j += "]}";
  report.recipe_json = j;

  // Metadata: A's, less what no longer describes the output, plus the provenance.
  for (const auto& [k, v] : cka.metadata) {
    if (k == "modelspec.hash_sha256" || k.starts_with("sshs_") || k.starts_with("ss_") ||
        k == "modelspec.title" || k == "modelspec.merged_from" || k == "ckptkit.recipe")
      continue;
    plan.metadata[k] = v;
  }
  if (cka.format != FileFormat::kSafetensors) plan.metadata.emplace("format", "pt");
  std::vector<std::string> names, stems;
  for (const std::string& p : spec.inputs)
    names.push_back(file_name(p)), stems.push_back(file_stem(p));
  plan.metadata["ckptkit.recipe"] = j;
  plan.metadata["modelspec.merged_from"] = fmt::format("{}", fmt::join(names, ", "));
  plan.metadata["modelspec.sai_model_spec"] = "1.0.0";
  if (!aa.modelspec.empty() && !plan.metadata.count("modelspec.architecture"))
    plan.metadata["modelspec.architecture"] = aa.modelspec;
  plan.metadata["modelspec.title"] =
      spec.title.empty() ? fmt::format("merge of {}", fmt::join(stems, " + ")) : spec.title;

  if (options.dry_run) return report;
  RunOptions run = options.run;
  if (run.label == "writing") run.label = "merging";
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
  return report;
}

std::vector<std::string> merge_groups(const Checkpoint& ck, const Anatomy& a) {
  return groups_of_impl(ck, a);
}

}  // namespace ckptkit
