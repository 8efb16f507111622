// lora bake: a plan over the one executor whose changed tensors add every landing module's ΔW
// to the base in F32 and round once (ckptkit/lora.h, docs/lora.md). Built with
// -ffp-contract=off: the order of operations is the documented one, so torch doing the same
// operations gives the same bits.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <set>
#include <unordered_map>

#include "ckptkit/anatomy.h"
#include "ckptkit/cast.h"
#include "ckptkit/gguf.h"
#include "ckptkit/lora.h"
#include "ckptkit/merge.h"
#include "io/errors.h"
#include "io/json.h"
#include "ops/input.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

using detail::OpenedInput;

/// One module's contribution to one base tensor: ΔW = up · down (rows of the target when a
/// slice), times `factor`.
struct Patch {
  const OpenedInput* lora = nullptr;
  LoraKind kind = LoraKind::kLora;
  const TensorInfo* up = nullptr;    ///< out × r (× 1 × 1)
  const TensorInfo* down = nullptr;  ///< r × cols (× kh × kw), or the whole ΔW (full diff)
  /// The other factors by suffix ("lora_mid.weight", "hada_w1_a", "lokr_w2", …).
  std::map<std::string, const TensorInfo*, std::less<>> other;
  bool full = false;
  float factor = 1.0f;  ///< strength · alpha / rank; DoRA: alpha / rank
  /// DoRA: the magnitude vector (dora_scale, lora_magnitude_vector) and the strength that
  /// interpolates between the weight and its decomposed update.
  const TensorInfo* dora = nullptr;
  float dora_strength = 1.0f;
  uint64_t row0 = 0, rows = 0;  ///< rows of the base tensor it changes (rows = all: its shape[0])
  std::string module;
};

/// Reads a factor as F32; an error for NaN or infinity (a LoRA never carries them).
Status load_f32(const OpenedInput& in, const TensorInfo& t, const std::string& module,
                std::vector<float>& out) {
  CKPT_RETURN_IF_ERROR(detail::read_f32(in, t, out));
  for (uint64_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i]))
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("module {}: factor {} holds {} at element {}: refusing to bake it",
                                module, t.name, std::isnan(out[i]) ? "NaN" : "an infinity", i),
                    in.file().path(), kNoOffset, t.name);
  return Status::ok();
}

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

/// FP8 rounding to one of the two neighbours of x with probability proportional to nearness
/// (docs/lora.md), the uniform draw u = SplitMix64(key + element index) / 2^64 per element, so
/// the result does not depend on chunking or threads. Values beyond the largest finite FP8
/// value are clamped to it; NaN stays NaN.
Status fp8_stochastic(DType to, const float* x, uint8_t* out, uint64_t count, uint64_t key,
                      uint64_t first) {
  const float max = to == DType::F8_E4M3 ? 448.0f : 57344.0f;
  std::vector<float> v(x, x + count), d(count), alt(count);
  for (float& f : v)
    if (!std::isnan(f)) f = std::clamp(f, -max, max);
  CKPT_RETURN_IF_ERROR(cast_elements(DType::F32, to, v.data(), out, count));
  CKPT_RETURN_IF_ERROR(cast_elements(to, DType::F32, out, d.data(), count));
  std::vector<uint8_t> other(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint8_t n = out[i], sign = n & 0x80, mag = n & 0x7F;
    if (std::isnan(v[i]) || d[i] == v[i]) {
      other[i] = n;
      continue;
    }
    // Sign-magnitude: the magnitudes of one sign are ordered like their bit patterns.
    other[i] = std::abs(d[i]) > std::abs(v[i]) ? static_cast<uint8_t>(sign | (mag - 1))
                                               : static_cast<uint8_t>(sign | (mag + 1));
  }
  CKPT_RETURN_IF_ERROR(cast_elements(to, DType::F32, other.data(), alt.data(), count));
  for (uint64_t i = 0; i < count; ++i) {
    if (other[i] == out[i]) continue;
    // `other` is taken with probability proportional to its nearness to v: a / (a + b).
    const double a = std::abs(static_cast<double>(v[i]) - d[i]);
    const double b = std::abs(static_cast<double>(v[i]) - alt[i]);
    const double p_other = a / (a + b);
    const double u = static_cast<double>(splitmix64(key + first + i) >> 11) * 0x1.0p-53;
    if (u < p_other) out[i] = other[i];
  }
  return Status::ok();
}

class BakeProducer final : public TensorProducer {
 public:
  /// `stochastic_key`: set, an FP8 output is rounded stochastically with this key.
  BakeProducer(std::unique_ptr<TensorProducer> base, std::vector<Patch> patches, DType out,
               const Shape& shape, std::optional<uint64_t> stochastic_key = std::nullopt)
      : base_(std::move(base)), patches_(std::move(patches)), out_(out), key_(stochastic_key) {
    numel_ = 1;
    for (uint64_t d : shape) numel_ *= d;
    cols_ = shape.empty() || shape[0] == 0 ? 1 : numel_ / shape[0];
    factors_.resize(patches_.size());
  }

  uint64_t scratch_bytes_per_element() const override {
    return sizeof(float) + base_->scratch_bytes_per_element();
  }
  uint64_t input_bytes_per_element() const override { return base_->input_bytes_per_element(); }

  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t> scratch) const override {
    {
      std::call_once(load_once_, [&] { load_status_ = load(); });
      CKPT_RETURN_IF_ERROR(load_status_);
    }
    float* x = out_ == DType::F32 ? reinterpret_cast<float*>(out.data())
                                  : reinterpret_cast<float*>(scratch.data());
    if (!whole_.empty()) {
      // A DoRA module needs whole rows or columns: the tensor was computed once in load().
      std::copy_n(whole_.data() + first, count, x);
    } else {
      std::span<uint8_t> sub = scratch.subspan(out_ == DType::F32 ? 0 : count * sizeof(float));
      CKPT_RETURN_IF_ERROR(base_->produce(
          first, count, std::span<uint8_t>(reinterpret_cast<uint8_t*>(x), count * sizeof(float)),
          sub));
      for (size_t pi = 0; pi < patches_.size(); ++pi) apply(pi, x, first, count);
    }
    if (done_.fetch_add(count) + count == numel_) release();
    if (out_ == DType::F32) return Status::ok();
    if (key_ && (out_ == DType::F8_E4M3 || out_ == DType::F8_E5M2))
      return fp8_stochastic(out_, x, out.data(), count, *key_, first);
    return cast_elements(DType::F32, out_, x, out.data(), count);
  }

 private:
  struct Factors {
    std::vector<float> up, down;
    std::vector<float> delta;  ///< the whole ΔW (full diff, LoHa, LoKr, Tucker)
    uint64_t rank = 0;
  };

  /// Adds patch `pi`'s ΔW times its factor to elements [first, first + count) of the tensor,
  /// held at `x`, in the documented order.
  void apply(size_t pi, float* x, uint64_t first, uint64_t count) const {
    const Patch& p = patches_[pi];
    const Factors& f = factors_[pi];
    std::vector<float> acc;
    // Row by row over the chunk: elements [c0, c1) of row o.
    for (uint64_t e = first; e < first + count;) {
      const uint64_t o = e / cols_, c0 = e % cols_;
      const uint64_t c1 = std::min(cols_, c0 + (first + count - e));
      float* xo = x + (e - first);
      if (o >= p.row0 && o < p.row0 + p.rows) {
        const uint64_t ro = o - p.row0;
        const uint64_t n = c1 - c0;
        acc.assign(n, 0.0f);
        if (!f.delta.empty()) {
          const float* d = f.delta.data() + ro * cols_ + c0;
          for (uint64_t c = 0; c < n; ++c) acc[c] = d[c];
        } else {
          // ΔW[o, c] = Σ_k up[o, k] · down[k, c], k in index order.
          for (uint64_t k = 0; k < f.rank; ++k) {
            const float u = f.up[ro * f.rank + k];
            const float* d = f.down.data() + k * cols_ + c0;
            float* a = acc.data();
            for (uint64_t c = 0; c < n; ++c) a[c] = a[c] + u * d[c];
          }
        }
        const float s = p.factor;
        for (uint64_t c = 0; c < n; ++c) xo[c] = xo[c] + acc[c] * s;
      }
      e += c1 - c0;
    }
  }

  /// The whole tensor with every patch applied, for a tensor with a DoRA module (docs/lora.md):
  /// Wc = W + ΔW · alpha/rank on its rows; the norm of each row of Wc (each column when the
  /// magnitude vector has one value per input); W_dora = Wc · (m / norm); W = W + strength ·
  /// (W_dora − W).
  Status materialize() const {
    whole_.resize(numel_);
    std::vector<uint8_t> scratch(numel_ * std::max<uint64_t>(1, base_->scratch_bytes_per_element()));
    CKPT_RETURN_IF_ERROR(base_->produce(
        0, numel_,
        std::span<uint8_t>(reinterpret_cast<uint8_t*>(whole_.data()), numel_ * sizeof(float)),
        scratch));
    std::vector<uint8_t>().swap(scratch);
    for (size_t pi = 0; pi < patches_.size(); ++pi) {
      const Patch& p = patches_[pi];
      if (!p.dora) {
        apply(pi, whole_.data(), 0, numel_);
        continue;
      }
      std::vector<float> m;
      CKPT_RETURN_IF_ERROR(load_f32(*p.lora, *p.dora, p.module, m));
      float* w = whole_.data() + p.row0 * cols_;
      std::vector<float> wc(w, w + p.rows * cols_);
      apply(pi, wc.data(), p.row0 * cols_, p.rows * cols_);
      // One value per output row ((out), (out, 1, …): LyCORIS's wd_on_output, PEFT), else one
      // per input column ((1, in, …)).
      const bool per_row = m.size() == p.rows && (p.dora->shape.empty() || p.dora->shape[0] == p.rows);
      if (!per_row && m.size() != cols_)
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("module {}: its magnitude vector has {} values; the weight has "
                                  "{} rows and {} columns",
                                  p.module, m.size(), p.rows, cols_),
                      p.lora->file().path());
      std::vector<double> norm2(per_row ? p.rows : cols_, 0.0);
      for (uint64_t o = 0; o < p.rows; ++o)
        for (uint64_t c = 0; c < cols_; ++c) {
          const double v = wc[o * cols_ + c];
          norm2[per_row ? o : c] += v * v;
        }
      std::vector<float> g(norm2.size());
      for (size_t i = 0; i < g.size(); ++i) {
        if (norm2[i] == 0)
          return Status(ErrorCode::kInvalidArgument,
                        fmt::format("module {}: a {} of W + ΔW is all zero: DoRA's norm is "
                                    "undefined there",
                                    p.module, per_row ? "row" : "column"),
                        p.lora->file().path());
        g[i] = static_cast<float>(static_cast<double>(m[i]) / std::sqrt(norm2[i]));
      }
      const float st = p.dora_strength;
      for (uint64_t o = 0; o < p.rows; ++o)
        for (uint64_t c = 0; c < cols_; ++c) {
          const float wd = wc[o * cols_ + c] * g[per_row ? o : c];
          float& x = w[o * cols_ + c];
          x = x + st * (wd - x);
        }
    }
    return Status::ok();
  }

  /// A × B for A (n × r) and B (r × m), each element summed over r in index order.
  static std::vector<float> product(const std::vector<float>& a, const std::vector<float>& b,
                                    uint64_t n, uint64_t r, uint64_t m) {
    std::vector<float> out(n * m, 0.0f);
    for (uint64_t i = 0; i < n; ++i)
      for (uint64_t k = 0; k < r; ++k) {
        const float u = a[i * r + k];
        const float* bk = b.data() + k * m;
        float* o = out.data() + i * m;
        for (uint64_t j = 0; j < m; ++j) o[j] = o[j] + u * bk[j];
      }
    return out;
  }

  /// A Tucker-decomposed factor (LyCORIS's LoHa/LoKr on convolutions): t (r1, r2, kh, kw),
  /// a (r1, P), b (r2, Q) -> M (P, Q, kh, kw) with T[i, q, :] = Σ_j t[i, j, :] · b[j, q] and
  /// M[p, q, :] = Σ_i a[i, p] · T[i, q, :], each sum in index order.
  static std::vector<float> tucker(const std::vector<float>& t, const Shape& ts,
                                   const std::vector<float>& a, const Shape& as,
                                   const std::vector<float>& b, const Shape& bs) {
    const uint64_t r1 = ts[0], r2 = ts[1], hw = ts[2] * ts[3], P = as[1], Q = bs[1];
    std::vector<float> tt(r1 * Q * hw, 0.0f), m(P * Q * hw, 0.0f);
    for (uint64_t i = 0; i < r1; ++i)
      for (uint64_t j = 0; j < r2; ++j)
        for (uint64_t q = 0; q < Q; ++q) {
          const float bj = b[j * Q + q];
          const float* ti = t.data() + (i * r2 + j) * hw;
          float* o = tt.data() + (i * Q + q) * hw;
          for (uint64_t h = 0; h < hw; ++h) o[h] = o[h] + ti[h] * bj;
        }
    for (uint64_t i = 0; i < r1; ++i)
      for (uint64_t p = 0; p < P; ++p) {
        const float ai = a[i * P + p];
        for (uint64_t q = 0; q < Q; ++q) {
          const float* ti = tt.data() + (i * Q + q) * hw;
          float* o = m.data() + (p * Q + q) * hw;
          for (uint64_t h = 0; h < hw; ++h) o[h] = o[h] + ai * ti[h];
        }
      }
    return m;
  }

  Status load_factor(const Patch& p, std::string_view suffix, std::vector<float>& out,
                     Shape* shape = nullptr) const {
    auto it = p.other.find(suffix);
    if (it == p.other.end())
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("module {}: no {} factor", p.module, suffix),
                    p.lora->file().path());
    if (shape) *shape = it->second->shape;
    return load_f32(*p.lora, *it->second, p.module, out);
  }

  /// The whole ΔW (rows × cols_) of a LoHa, LoKr or Tucker module, in the documented order.
  Status load_delta(const Patch& p, Factors& f) const {
    std::vector<float> a, b, c, d;
    Shape sa, sb, sc, sd;
    switch (p.kind) {
      case LoraKind::kTucker: {
        // M[o, b, hw] = Σ_a up[o, a] · mid[a, b, hw]; ΔW[o, i, hw] = Σ_b M[o, b, hw] · down[b, i].
        CKPT_RETURN_IF_ERROR(load_f32(*p.lora, *p.up, p.module, a));
        CKPT_RETURN_IF_ERROR(load_factor(p, "lora_mid.weight", b, &sb));
        CKPT_RETURN_IF_ERROR(load_f32(*p.lora, *p.down, p.module, c));
        const uint64_t out = p.up->shape[0], r1 = sb[0], r2 = sb[1], hw = sb[2] * sb[3];
        const uint64_t in = p.down->shape[1];
        std::vector<float> m = product(a, b, out, r1, r2 * hw);  // [out, r2·hw]
        f.delta.assign(out * in * hw, 0.0f);
        for (uint64_t o = 0; o < out; ++o)
          for (uint64_t k = 0; k < r2; ++k)
            for (uint64_t i = 0; i < in; ++i) {
              const float dk = c[k * in + i];
              const float* mk = m.data() + (o * r2 + k) * hw;
              float* w = f.delta.data() + (o * in + i) * hw;
              for (uint64_t h = 0; h < hw; ++h) w[h] = w[h] + mk[h] * dk;
            }
        return Status::ok();
      }
      case LoraKind::kLoha: {
        // ΔW = (w1_a · w1_b) ⊙ (w2_a · w2_b), each product summed over the rank in order.
        CKPT_RETURN_IF_ERROR(load_factor(p, "hada_w1_a", a, &sa));
        CKPT_RETURN_IF_ERROR(load_factor(p, "hada_w1_b", b, &sb));
        CKPT_RETURN_IF_ERROR(load_factor(p, "hada_w2_a", c, &sc));
        CKPT_RETURN_IF_ERROR(load_factor(p, "hada_w2_b", d, &sd));
        if (p.other.count("hada_t1")) {
          // With Tucker cores: ΔW = tucker(t1, w1_a, w1_b) ⊙ tucker(t2, w2_a, w2_b).
          std::vector<float> t1, t2;
          Shape st1, st2;
          CKPT_RETURN_IF_ERROR(load_factor(p, "hada_t1", t1, &st1));
          CKPT_RETURN_IF_ERROR(load_factor(p, "hada_t2", t2, &st2));
          std::vector<float> m1 = tucker(t1, st1, a, sa, b, sb);
          std::vector<float> m2 = tucker(t2, st2, c, sc, d, sd);
          f.delta.resize(m1.size());
          for (size_t i = 0; i < m1.size(); ++i) f.delta[i] = m1[i] * m2[i];
          return Status::ok();
        }
        const uint64_t m = b.size() / sb[0];
        std::vector<float> p1 = product(a, b, sa[0], sa[1], m);
        std::vector<float> p2 = product(c, d, sc[0], sc[1], d.size() / sd[0]);
        f.delta.resize(p1.size());
        for (size_t i = 0; i < p1.size(); ++i) f.delta[i] = p1[i] * p2[i];
        return Status::ok();
      }
      case LoraKind::kLokr: {
        // W1, W2 whole or as products; ΔW[i·c + j, k·dd + l] = W1[i, k] · W2[j, l].
        auto side = [&](std::string_view whole, std::string_view fa, std::string_view fb,
                        std::vector<float>& w, uint64_t& rows, uint64_t& cols) -> Status {
          if (p.other.count(whole)) {
            Shape s;
            CKPT_RETURN_IF_ERROR(load_factor(p, whole, w, &s));
            rows = s[0];
            cols = w.size() / rows;
            return Status::ok();
          }
          std::vector<float> x, y;
          Shape sx, sy;
          CKPT_RETURN_IF_ERROR(load_factor(p, fa, x, &sx));
          CKPT_RETURN_IF_ERROR(load_factor(p, fb, y, &sy));
          rows = sx[0];
          cols = y.size() / sy[0];
          w = product(x, y, sx[0], sx[1], cols);
          return Status::ok();
        };
        uint64_t r1 = 0, c1 = 0, r2 = 0, c2 = 0;
        CKPT_RETURN_IF_ERROR(side("lokr_w1", "lokr_w1_a", "lokr_w1_b", a, r1, c1));
        if (p.other.count("lokr_t2")) {
          // w2 = tucker(t2, w2_a, w2_b): (out, in, kh, kw), its columns flattened.
          std::vector<float> t2, wa, wb;
          Shape st2, sa2, sb2;
          CKPT_RETURN_IF_ERROR(load_factor(p, "lokr_t2", t2, &st2));
          CKPT_RETURN_IF_ERROR(load_factor(p, "lokr_w2_a", wa, &sa2));
          CKPT_RETURN_IF_ERROR(load_factor(p, "lokr_w2_b", wb, &sb2));
          b = tucker(t2, st2, wa, sa2, wb, sb2);
          r2 = sa2[1];
          c2 = b.size() / r2;
        } else {
          CKPT_RETURN_IF_ERROR(side("lokr_w2", "lokr_w2_a", "lokr_w2_b", b, r2, c2));
        }
        f.delta.resize(r1 * r2 * c1 * c2);
        const uint64_t cols = c1 * c2;
        for (uint64_t i = 0; i < r1; ++i)
          for (uint64_t j = 0; j < r2; ++j)
            for (uint64_t k = 0; k < c1; ++k) {
              const float w1 = a[i * c1 + k];
              const float* w2 = b.data() + j * c2;
              float* o = f.delta.data() + (i * r2 + j) * cols + k * c2;
              for (uint64_t l = 0; l < c2; ++l) o[l] = w1 * w2[l];
            }
        return Status::ok();
      }
      default:
        break;
    }
    return Status(ErrorCode::kInternal, "no delta for this module kind");
  }

  Status load() const {
    for (size_t i = 0; i < patches_.size(); ++i) {
      const Patch& p = patches_[i];
      Factors& f = factors_[i];
      if (p.full) {
        CKPT_RETURN_IF_ERROR(load_f32(*p.lora, *p.down, p.module, f.delta));
      } else if (p.kind != LoraKind::kLora) {
        CKPT_RETURN_IF_ERROR(load_delta(p, f));
      } else {
        CKPT_RETURN_IF_ERROR(load_f32(*p.lora, *p.down, p.module, f.down));
        CKPT_RETURN_IF_ERROR(load_f32(*p.lora, *p.up, p.module, f.up));
        f.rank = p.down->shape[0];
      }
      if (!f.delta.empty() && f.delta.size() != p.rows * cols_)
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("module {}: its ΔW has {} elements, the base tensor {}",
                                  p.module, f.delta.size(), p.rows * cols_),
                      p.lora->file().path());
    }
    for (const Patch& p : patches_)
      if (p.dora) return materialize();
    return Status::ok();
  }

  /// The factors are dropped once every element was produced: memory holds the factors of
  /// the tensors in flight, not of the whole LoRA.
  void release() const {
    std::vector<float>().swap(whole_);
    for (Factors& f : factors_) {
      std::vector<float>().swap(f.up);
      std::vector<float>().swap(f.down);
      std::vector<float>().swap(f.delta);
    }
  }

  std::unique_ptr<TensorProducer> base_;
  std::vector<Patch> patches_;
  DType out_;
  std::optional<uint64_t> key_;
  uint64_t numel_ = 0, cols_ = 1;
  mutable std::vector<Factors> factors_;
  mutable std::vector<float> whole_;  ///< the finished tensor, when a DoRA module needs it
  mutable std::once_flag load_once_;
  mutable Status load_status_;
  mutable std::atomic<uint64_t> done_{0};
};

/// A JSON string literal of `s`.
std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

}  // namespace

Result<BakeReport> bake_loras(const std::string& base_path, const std::vector<LoraInput>& loras,
                              const std::string& out_path, const BakeOptions& options) {
  if (loras.empty()) return Status(ErrorCode::kInvalidArgument, "no LoRA to bake");
  if (options.gguf) {
    if (options.dtype)
      return Status(ErrorCode::kInvalidArgument,
                    "--dtype does not apply with --quant: the GGUF types follow the target "
                    "loader's policy (docs/gguf.md)");
    if (!out_path.ends_with(".gguf"))
      return Status(ErrorCode::kInvalidArgument,
                    "--quant writes a GGUF file: give the output a .gguf name", out_path);
  } else {
    CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  }
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, options.run.force));
  detail::OpenOptions bo;
  bo.limits.safetensors = options.limits;
  bo.allow_dangerous = options.allow_dangerous;
  bo.verdict = options.verdict;
  bo.verb = "bake into";
  CKPT_ASSIGN_OR_RETURN(auto base, OpenedInput::open(base_path, out_path, bo));
  const Checkpoint& bck = base->checkpoint();
  const Anatomy ba = analyze(bck, &base->file());
  if (ba.layout == "lora")
    return Status(ErrorCode::kInvalidArgument, "the base is itself a LoRA", base_path);
  if (ba.family.empty())
    return Status(ErrorCode::kUnsupported,
                  fmt::format("the base model is not recognized ({}): there is nothing to match "
                              "LoRA modules against",
                              ba.architecture),
                  base_path);
  BakeReport report;
  report.architecture = ba.architecture;
  // Per-block strength: the merge group of every base tensor, and the weights asked for.
  const std::vector<std::string> groups = merge_groups(bck, ba);
  std::map<std::string, double> block = {};
  if (!options.block_weights.empty()) {
    CKPT_ASSIGN_OR_RETURN(block, parse_block_weights(options.block_weights, ba.family));
  }
  for (const auto& [k, v] : options.block_strength) block[k] = v;
  if (!block.empty()) {
    std::set<std::string> have(groups.begin(), groups.end());
    have.insert("text_encoder");
    for (const auto& [k, v] : block) {
      if (!std::isfinite(v))
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("block strength {}={} is not a finite number", k, v));
      if (!have.count(k) && k != "vae" && k != "other") {
        std::string names;
        for (const std::string& h : have)
          if (h != "vae" && h != "other") names += (names.empty() ? "" : " ") + h;
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("the base ({}) has no block {}; its blocks: {}",
                                  ba.architecture, k, names),
                      base_path);
      }
    }
  }

  std::vector<std::unique_ptr<OpenedInput>> opened;
  std::map<size_t, std::vector<Patch>> patches;  // base tensor index -> patches, LoRA order
  std::unordered_map<std::string_view, size_t> index_of;
  for (size_t i = 0; i < bck.tensors.size(); ++i) index_of[bck.tensors[i].name] = i;
  for (const LoraInput& li : loras) {
    detail::OpenOptions lo;
    lo.limits.safetensors = options.limits;
    lo.allow_dangerous = options.allow_dangerous;
    lo.verb = "bake";
    CKPT_ASSIGN_OR_RETURN(auto in, OpenedInput::open(li.path, out_path, lo));
    const Checkpoint& lck = in->checkpoint();
    const Anatomy la = analyze(lck, &in->file());
    if (la.layout != "lora")
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("not a LoRA: it is {}", la.architecture), li.path);
    const bool same_family = la.lora_base.empty() || la.lora_base == ba.family ||
                             (la.lora_base == "sdxl" && ba.family == "sdxl-refiner") ||
                             (la.lora_base == "sd1" && ba.family == "sd2") ||
                             (la.lora_base == "sd2" && ba.family == "sd1");
    if (!same_family)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("a LoRA for {} cannot be baked into a {} model", la.lora_base,
                                ba.family),
                    li.path);
    LoraFile lf = read_lora(lck, &in->file());
    if (!lf.errors.empty())
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("{} module(s) are inconsistent (first: {}: {}); `ckptkit inspect` "
                                "lists them",
                                lf.errors.size(), lf.errors[0].key, lf.errors[0].message),
                    li.path);
    BakeReport::PerLora pl;
    pl.path = li.path;
    pl.format = lf.format;
    pl.modules = lf.modules.size();
    const std::vector<LoraModuleMatch> matches = match_lora(lf, bck, ba);
    for (size_t mi = 0; mi < lf.modules.size(); ++mi) {
      const LoraModule& m = lf.modules[mi];
      const LoraModuleMatch& mm = matches[mi];
      if (mm.base_tensor.empty()) {
        pl.unmatched.push_back(fmt::format("{}: {}", m.name, mm.why_not));
        continue;
      }
      Patch p;
      p.lora = in.get();
      p.module = m.name;
      p.kind = m.kind;
      for (size_t ti : m.tensors) {
        const TensorInfo& t = lck.tensors[ti];
        const std::string_view suffix = std::string_view(t.name).substr(m.name.size());
        p.other.emplace(std::string(suffix.substr(1)), &t);
        if (suffix == ".diff") p.down = &t, p.full = true;
        if (suffix.find("down") != std::string_view::npos || suffix == ".lora_A.weight")
          p.down = &t;
        if ((suffix.find("up") != std::string_view::npos && suffix != ".lora_B.bias") ||
            suffix == ".lora_B.weight")
          p.up = &t;
      }
      const bool two_factor = m.kind == LoraKind::kLora || m.kind == LoraKind::kTucker;
      if (two_factor && (p.down == nullptr || p.up == nullptr))
        return Status(ErrorCode::kUnsupported,
                      fmt::format("module {}: its factors are not applied by bake", m.name),
                      li.path);
      const bool te = m.target != LoraTarget::kDiffusionModel;
      const double strength = te && li.strength_te ? *li.strength_te : li.strength;
      // alpha / rank; 1 with no alpha, for a full diff and for a LoKr with no low-rank side.
      const double scale = p.full || !m.alpha || m.rank == 0
                               ? 1.0
                               : *m.alpha / static_cast<double>(m.rank);
      const size_t bi = index_of.at(mm.base_tensor);
      const auto bw = block.find(groups[bi]);
      const double block_strength = bw == block.end() ? 1.0 : bw->second;
      if (auto d = p.other.find("dora_scale"); d != p.other.end()) p.dora = d->second;
      if (auto d = p.other.find("lora_magnitude_vector.weight"); d != p.other.end()) p.dora = d->second;
      if (auto d = p.other.find("lora_magnitude_vector"); d != p.other.end()) p.dora = d->second;
      if (p.dora) {
        // DoRA: ΔW at alpha/rank inside the decomposition; the strength interpolates.
        p.factor = static_cast<float>(scale);
        p.dora_strength = static_cast<float>(strength * block_strength);
      } else {
        p.factor = static_cast<float>(strength * block_strength * scale);
      }
      const TensorInfo& bt = bck.tensors[bi];
      p.row0 = mm.rows ? mm.rows->first : 0;
      p.rows = mm.rows ? mm.rows->second - mm.rows->first : (bt.shape.empty() ? 1 : bt.shape[0]);
      if (!is_float(bt.dtype))
        return Status(ErrorCode::kUnsupported,
                      fmt::format("module {} lands on {}, a {} tensor", m.name, bt.name,
                                  dtype_name(bt.dtype)),
                      base_path);
      patches[bi].push_back(std::move(p));
      ++pl.applied;
    }
    if (options.strict && !pl.unmatched.empty())
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("--strict: {} of {} modules land nowhere in the base (first: {})",
                                pl.unmatched.size(), pl.modules, pl.unmatched.front()),
                    li.path);
    if (lf.missing_alpha > 0)
      report.notes.push_back(fmt::format("{}: {} modules have no alpha and are applied at scale 1",
                                         std::filesystem::path(li.path).filename().string(),
                                         lf.missing_alpha));
    report.loras.push_back(std::move(pl));
    opened.push_back(std::move(in));
  }

  std::string prov = "[";
  for (size_t i = 0; i < loras.size(); ++i)
    prov += fmt::format("{}{{\"file\":{},\"strength\":{},\"strength_te\":{},\"applied\":{}}}",
                        i ? "," : "",
                        json_string(std::filesystem::path(loras[i].path).filename().string()),
                        loras[i].strength, loras[i].strength_te.value_or(loras[i].strength),
                        report.loras[i].applied);
  prov += "]";
  auto key_of = [&](const TensorInfo& t) -> std::optional<uint64_t> {
    if (!options.fp8_stochastic) return std::nullopt;
    return splitmix64(options.seed ^ fnv1a(t.name));
  };
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "baking";
  if (options.gguf) {
    // Bake, then quantize as `convert --quant` would the baked file: the changed tensors'
    // producers replace the base's in the GGUF plan.
    const size_t changed = patches.size();
    detail::ProducerOverride baked = [&](const TensorInfo& t, DType to)
        -> std::unique_ptr<TensorProducer> {
      auto it = patches.find(static_cast<size_t>(&t - bck.tensors.data()));
      if (it == patches.end()) return nullptr;
      ++report.tensors_changed;
      auto p = std::make_unique<BakeProducer>(base->producer(t, DType::F32),
                                              std::move(it->second), to, t.shape, key_of(t));
      patches.erase(it);
      return p;
    };
    ConvertReport cr;
    const detail::GgufSource source = detail::gguf_source(ba, bck, *options.gguf, cr);
    CKPT_ASSIGN_OR_RETURN(Plan plan, detail::gguf_plan(*base, ba, source, *options.gguf,
                                                       base_path, cr, &baked));
    for (const auto& in : opened) in->add_inputs(plan);
    plan.gguf_kv.push_back(gguf_kv("ckptkit.lora_bake", prov));
    for (std::string& n : cr.notes) report.notes.push_back(std::move(n));
    if (report.tensors_changed < changed)
      report.notes.push_back(fmt::format(
          "{} changed tensors are not in the GGUF (text encoders: ComfyUI loads them from "
          "their own files; bake into a safetensors file for those, or use --target sdcpp)",
          changed - report.tensors_changed));
    CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
    return report;
  }

  Plan plan;
  base->add_inputs(plan);
  for (const auto& in : opened) in->add_inputs(plan);
  for (size_t i = 0; i < bck.tensors.size(); ++i) {
    const TensorInfo& t = bck.tensors[i];
    const DType to = options.dtype && is_float(t.dtype) ? *options.dtype : t.dtype;
    auto it = patches.find(i);
    if (it == patches.end()) {
      plan.tensors.push_back({t.name, to, t.shape, base->producer(t, to)});
      continue;
    }
    ++report.tensors_changed;
    plan.tensors.push_back({t.name, to, t.shape,
                            std::make_unique<BakeProducer>(base->producer(t, DType::F32),
                                                           std::move(it->second), to, t.shape,
                                                           key_of(t))});
  }
  plan.metadata = bck.metadata;
  if (bck.format != FileFormat::kSafetensors) plan.metadata.emplace("format", "pt");
  plan.metadata.erase("modelspec.hash_sha256");
  plan.metadata["ckptkit.lora_bake"] = prov;
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
  return report;
}

}  // namespace ckptkit
