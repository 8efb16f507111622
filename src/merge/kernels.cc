// Merge arithmetic; see kernels.h and docs/merge.md. Built with -ffp-contract=off.
#include "merge/kernels.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>

namespace ckptkit::merge {
namespace {

constexpr uint64_t kSumBlock = 1ull << 16;  // slerp sums: elements per block of partial sums
constexpr size_t kBins = 1u << 16;          // ties: radix-select histogram (16 bits per pass)

uint32_t abs_bits(float v) { return std::bit_cast<uint32_t>(v) & 0x7fffffffu; }

float sign_of(float v) {
  if (v > 0) return 1.0f;
  if (v < 0) return -1.0f;
  return v == v ? 0.0f : v;  // ±0 → 0, NaN stays NaN (as torch.sign)
}

uint64_t dare_z(uint64_t key, size_t i, uint64_t j) {
  uint64_t z =
      (key ^ (static_cast<uint64_t>(i) * 0xd1b54a32d192ed03ull)) + (j + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr size_t kBlock = 256;  // elements per block of the TIES kernels (stack arrays)

/// TIES steps 2–4 for `n` ≤ kBlock elements, given the (trimmed or dropped) task-vector values
/// t[i][0..n) of inputs i = 1 … p.inputs−1. Written without branches so it vectorizes: adding
/// +0 where an input disagrees gives the same bits as skipping it (num and den start at +0 and
/// are never −0).
void elect_and_mean(const TensorParams& p, const float* a, const float (*t)[kBlock], size_t n,
                    float* out) {
  float s[kBlock], num[kBlock], den[kBlock];
  const float w1 = p.weights[0];
  for (size_t j = 0; j < n; ++j) s[j] = t[1][j] * w1;
  for (size_t i = 2; i < p.inputs; ++i) {
    const float wi = p.weights[i - 1];
    for (size_t j = 0; j < n; ++j) s[j] = s[j] + t[i][j] * wi;
  }
  for (size_t j = 0; j < n; ++j) num[j] = 0.0f, den[j] = 0.0f;
  for (size_t i = 1; i < p.inputs; ++i) {
    const float wi = p.weights[i - 1];
    for (size_t j = 0; j < n; ++j) {
      // γ = +1 when S ≥ 0, else −1 (NaN included); sign(t) = γ only for t ≠ 0 of that sign.
      const bool agree = s[j] >= 0 ? t[i][j] > 0 : t[i][j] < 0;
      num[j] = num[j] + (agree ? t[i][j] * wi : 0.0f);
      den[j] = den[j] + (agree ? wi : 0.0f);
    }
  }
  const float al = p.alpha;
  for (size_t j = 0; j < n; ++j) {
    const float delta = den[j] > 0 ? num[j] / den[j] : 0.0f;
    out[j] = a[j] + delta * al;
  }
}

}  // namespace

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

bool dare_keep(const TensorParams& p, size_t i, uint64_t j) {
  return (dare_z(p.dare_key, i, j) >> 40) >= p.dare_threshold;
}

bool needs_stats(MergeMethod m) { return stats_passes(m) > 0; }

int stats_passes(MergeMethod m) {
  switch (m) {
    case MergeMethod::kSlerp:
      return 1;
    case MergeMethod::kTies:
      return 2;
    default:
      return 0;
  }
}

// --- statistics --------------------------------------------------------------------------------

struct StatsPass::Impl {
  const TensorParams& p;
  int pass;
  uint64_t numel;
  const TensorStats& so_far;
  // slerp: totals and the current block's 8 partial sums of a·b, a², b².
  double dot = 0, aa = 0, bb = 0;
  std::array<double, 8> pd{}, pa{}, pb{};
  // ties: one histogram per input after A; pass 2 counts only the chosen top-16-bit bin.
  std::vector<std::vector<uint64_t>> hist;
  std::vector<uint64_t> k;  // elements to keep per input

  Impl(const TensorParams& params, int pass_, uint64_t n, const TensorStats& s)
      : p(params), pass(pass_), numel(n), so_far(s) {}

  void flush_block() {
    dot += ((pd[0] + pd[1]) + (pd[2] + pd[3])) + ((pd[4] + pd[5]) + (pd[6] + pd[7]));
    aa += ((pa[0] + pa[1]) + (pa[2] + pa[3])) + ((pa[4] + pa[5]) + (pa[6] + pa[7]));
    bb += ((pb[0] + pb[1]) + (pb[2] + pb[3])) + ((pb[4] + pb[5]) + (pb[6] + pb[7]));
    pd.fill(0), pa.fill(0), pb.fill(0);
  }
};

StatsPass::StatsPass(const TensorParams& p, int pass, uint64_t numel, const TensorStats& so_far)
    : impl_(std::make_unique<Impl>(p, pass, numel, so_far)) {
  if (p.method == MergeMethod::kTies) {
    const size_t models = p.inputs - 1;
    impl_->hist.assign(models, std::vector<uint64_t>(kBins, 0));
    impl_->k.resize(models);
    const auto keep = static_cast<uint64_t>(std::floor(p.density * static_cast<double>(numel)));
    for (size_t i = 0; i < models; ++i) impl_->k[i] = std::min(keep, numel);
  }
}

StatsPass::~StatsPass() = default;

void StatsPass::add(const float* const* x, uint64_t first, size_t count) {
  Impl& s = *impl_;
  if (s.p.method == MergeMethod::kSlerp) {
    const float* a = x[0];
    const float* b = x[1];
    for (size_t j = 0; j < count; ++j) {
      const uint64_t idx = first + j;
      const size_t lane = idx & 7;
      const double av = a[j], bv = b[j];
      s.pd[lane] += av * bv;
      s.pa[lane] += av * av;
      s.pb[lane] += bv * bv;
      if ((idx + 1) % kSumBlock == 0) s.flush_block();
    }
    return;
  }
  // ties
  const float* a = x[0];
  for (size_t i = 1; i < s.p.inputs; ++i) {
    std::vector<uint64_t>& h = s.hist[i - 1];
    const float* xi = x[i];
    if (s.pass == 0) {
      for (size_t j = 0; j < count; ++j) ++h[abs_bits(xi[j] - a[j]) >> 16];
    } else {
      if (s.so_far.threshold[i - 1] == 0xffffffffu) continue;  // keeps nothing
      const uint32_t want_bin = s.so_far.ties_bin[i - 1];
      for (size_t j = 0; j < count; ++j) {
        const uint32_t bits = abs_bits(xi[j] - a[j]);
        if ((bits >> 16) == want_bin) ++h[bits & 0xffffu];
      }
    }
  }
}

void StatsPass::finish(TensorStats& out) {
  Impl& s = *impl_;
  if (s.p.method == MergeMethod::kSlerp) {
    if (s.numel % kSumBlock != 0) s.flush_block();
    const double na = std::sqrt(s.aa), nb = std::sqrt(s.bb);
    const double t = s.p.slerp_t;
    double c = 0;
    bool lerp = na == 0 || nb == 0;
    if (!lerp) {
      c = std::clamp(s.dot / (na * nb), -1.0, 1.0);
      lerp = !(std::fabs(c) <= 0.9995);  // NaN sums fall back to the linear form too
    }
    out.lerp = lerp;
    if (lerp) {
      out.s0 = static_cast<float>(1.0 - t);
      out.s1 = static_cast<float>(t);
    } else {
      const double theta = std::acos(c);
      const double st = std::sin(theta);
      out.s0 = static_cast<float>(std::sin((1.0 - t) * theta) / st);
      out.s1 = static_cast<float>(std::sin(t * theta) / st);
    }
    return;
  }
  // ties: walk the histogram from the largest magnitude down until k elements are covered.
  // Pass 0 finds the bin of the top 16 bits holding the k-th largest |τ| and the rank left
  // inside it; pass 1 finds the low 16 bits within that bin.
  const size_t models = s.p.inputs - 1;
  if (s.pass == 0) {
    out.threshold.assign(models, 0xffffffffu);
    out.ties_bin.assign(models, 0);
    out.ties_rank.assign(models, 0);
  }
  for (size_t i = 0; i < models; ++i) {
    const std::vector<uint64_t>& h = s.hist[i];
    if (s.pass == 0) {
      if (s.k[i] == 0) continue;  // keep nothing
      uint64_t need = s.k[i];
      for (size_t b = kBins; b-- > 0;) {
        if (h[b] >= need) {
          out.threshold[i] = 0;  // found in pass 1
          out.ties_bin[i] = static_cast<uint32_t>(b);
          out.ties_rank[i] = need;
          break;
        }
        need -= h[b];
      }
    } else {
      if (out.threshold[i] == 0xffffffffu) continue;
      uint64_t need = out.ties_rank[i];
      for (size_t lo = kBins; lo-- > 0;) {
        if (h[lo] >= need) {
          out.threshold[i] = (out.ties_bin[i] << 16) | static_cast<uint32_t>(lo);
          break;
        }
        need -= h[lo];
      }
    }
  }
}

// --- the methods -------------------------------------------------------------------------------

void merge_chunk(const TensorParams& p, const TensorStats& st, const float* const* x,
                 uint64_t first, size_t count, float* out) {
  const float* a = x[0];
  switch (p.method) {
    case MergeMethod::kWeightedSum: {
      const float w0 = p.weights[0];
      for (size_t j = 0; j < count; ++j) out[j] = a[j] * w0;
      for (size_t i = 1; i < p.inputs; ++i) {
        const float* xi = x[i];
        const float wi = p.weights[i];
        for (size_t j = 0; j < count; ++j) out[j] = out[j] + xi[j] * wi;
      }
      return;
    }
    case MergeMethod::kAddDifference: {
      const float* b = x[1];
      const float* c = x[2];
      const float al = p.alpha;
      for (size_t j = 0; j < count; ++j) {
        float d = b[j] - c[j];
        d = d * al;
        out[j] = a[j] + d;
      }
      return;
    }
    case MergeMethod::kTrainDifference: {
      const float* b = x[1];
      const float* c = x[2];
      const float k = p.train_scale;
      for (size_t j = 0; j < count; ++j) {
        const float d = b[j] - c[j];
        const float dba = std::fabs(b[j] - a[j]);
        const float s = std::fabs(d) + dba;
        float q = s != 0 ? dba / s : 0.0f;
        q = sign_of(d) * q;
        const float n = q * std::fabs(d);
        out[j] = a[j] + n * k;
      }
      return;
    }
    case MergeMethod::kSlerp: {
      const float* b = x[1];
      const float s0 = st.s0, s1 = st.s1;
      for (size_t j = 0; j < count; ++j) out[j] = a[j] * s0 + b[j] * s1;
      return;
    }
    case MergeMethod::kTies: {
      float t[kMaxMergeInputs][kBlock];
      for (size_t j0 = 0; j0 < count; j0 += kBlock) {
        const size_t n = std::min(kBlock, count - j0);
        for (size_t i = 1; i < p.inputs; ++i) {
          const uint32_t thr = st.threshold[i - 1];  // 0xffffffff keeps nothing
          const float* xi = x[i] + j0;
          const float* aj = a + j0;
          for (size_t j = 0; j < n; ++j) {
            const float tau = xi[j] - aj[j];
            t[i][j] = abs_bits(tau) >= thr ? tau : 0.0f;
          }
        }
        elect_and_mean(p, a + j0, t, n, out + j0);
      }
      return;
    }
    case MergeMethod::kDare: {
      const float r = p.dare_rescale;
      const float al = p.alpha;
      for (size_t j = 0; j < count; ++j) {
        float delta = 0;
        for (size_t i = 1; i < p.inputs; ++i) {
          const float tau = x[i][j] - a[j];
          const float d = dare_keep(p, i, first + j) ? tau * r : 0.0f;
          delta = i == 1 ? d * p.weights[0] : delta + d * p.weights[i - 1];
        }
        out[j] = a[j] + delta * al;
      }
      return;
    }
    case MergeMethod::kDareTies: {
      const float r = p.dare_rescale;
      float t[kMaxMergeInputs][kBlock];
      for (size_t j0 = 0; j0 < count; j0 += kBlock) {
        const size_t n = std::min(kBlock, count - j0);
        for (size_t i = 1; i < p.inputs; ++i) {
          const float* xi = x[i] + j0;
          const float* aj = a + j0;
          for (size_t j = 0; j < n; ++j) {
            const float tau = xi[j] - aj[j];
            t[i][j] = dare_keep(p, i, first + j0 + j) ? tau * r : 0.0f;
          }
        }
        elect_and_mean(p, a + j0, t, n, out + j0);
      }
      return;
    }
  }
}

}  // namespace ckptkit::merge
