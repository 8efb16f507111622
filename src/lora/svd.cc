// Truncated and product SVDs on LAPACKE + OpenBLAS (lora/svd.h).
#include "lora/svd.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <cmath>
#include <numbers>
#include <random>

namespace ckptkit::detail {
namespace {

Status lapack_error(const char* routine, lapack_int info) {
  return Status(ErrorCode::kInternal,
                info > 0 ? std::string(routine) + " did not converge"
                         : std::string(routine) + " rejected its argument " +
                               std::to_string(-info));
}

/// Replaces the m × l row-major `y` by an orthonormal basis of its columns (Householder QR).
Status orthonormalize(std::vector<float>& y, uint64_t m, uint64_t l) {
  std::vector<float> tau(l);
  const auto M = static_cast<lapack_int>(m), L = static_cast<lapack_int>(l);
  lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, M, L, y.data(), L, tau.data());
  if (info != 0) return lapack_error("sgeqrf", info);
  info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, M, L, L, y.data(), L, tau.data());
  if (info != 0) return lapack_error("sorgqr", info);
  return Status::ok();
}

/// gesdd of the m × n row-major `a` (destroyed), economy size: min(m, n) triplets.
Result<Svd> gesdd(std::vector<float>& a, uint64_t m, uint64_t n) {
  Svd r;
  r.m = m, r.n = n, r.k = std::min(m, n);
  r.u.resize(m * r.k);
  r.s.resize(r.k);
  r.vt.resize(r.k * n);
  const auto M = static_cast<lapack_int>(m), N = static_cast<lapack_int>(n),
             K = static_cast<lapack_int>(r.k);
  const lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', M, N, a.data(), N, r.s.data(),
                                         r.u.data(), K, r.vt.data(), N);
  if (info != 0) return lapack_error("sgesdd", info);
  return r;
}

/// Keeps the first k of the triplets.
void truncate(Svd& r, uint64_t k) {
  if (k >= r.k) return;
  std::vector<float> u(r.m * k);
  for (uint64_t i = 0; i < r.m; ++i)
    std::copy_n(r.u.data() + i * r.k, k, u.data() + i * k);
  r.u = std::move(u);
  r.s.resize(k);
  r.vt.resize(k * r.n);
  r.k = k;
}

/// Standard normal samples from a fixed generator (mt19937_64 and Box-Muller: the same values on
/// every platform, unlike std::normal_distribution).
void gaussian(std::vector<float>& out, uint64_t seed) {
  std::mt19937_64 g(seed ^ 0x9e3779b97f4a7c15ull);
  constexpr double kScale = 1.0 / 9007199254740992.0;  // 2^-53
  for (size_t i = 0; i < out.size(); i += 2) {
    const double u1 = (static_cast<double>(g() >> 11) + 0.5) * kScale;
    const double u2 = static_cast<double>(g() >> 11) * kScale;
    const double rad = std::sqrt(-2.0 * std::log(u1));
    out[i] = static_cast<float>(rad * std::cos(2.0 * std::numbers::pi * u2));
    if (i + 1 < out.size()) out[i + 1] = static_cast<float>(rad * std::sin(2.0 * std::numbers::pi * u2));
  }
}

/// The QR route of a product: up = Qu Ru (m × r), downᵀ = Qd Rd (n × r), core = Ru Rdᵀ (r × r).
/// Qu and Qd are left as geqrf's reflectors (sorgqr forms them when the vectors are wanted).
struct QrCore {
  std::vector<float> qu, qd, tau_u, tau_d, core;
};
Result<QrCore> qr_core(const float* up, const float* down, uint64_t m, uint64_t r, uint64_t n) {
  const auto M = static_cast<lapack_int>(m), N = static_cast<lapack_int>(n),
             R = static_cast<lapack_int>(r);
  QrCore q;
  q.qu.assign(up, up + m * r);
  q.qd.resize(n * r);
  for (uint64_t i = 0; i < r; ++i)
    for (uint64_t j = 0; j < n; ++j) q.qd[j * r + i] = down[i * n + j];
  q.tau_u.resize(r);
  q.tau_d.resize(r);
  lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, M, R, q.qu.data(), R, q.tau_u.data());
  if (info != 0) return lapack_error("sgeqrf", info);
  info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, N, R, q.qd.data(), R, q.tau_d.data());
  if (info != 0) return lapack_error("sgeqrf", info);
  std::vector<float> ru(r * r, 0.0f), rd(r * r, 0.0f);
  for (uint64_t i = 0; i < r; ++i)
    for (uint64_t j = i; j < r; ++j) {
      ru[i * r + j] = q.qu[i * r + j];
      rd[i * r + j] = q.qd[i * r + j];
    }
  q.core.resize(r * r);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, R, R, 1.0f, ru.data(), R, rd.data(), R,
              0.0f, q.core.data(), R);
  return q;
}

}  // namespace

std::string blas_core_hint() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return "";
  const char* core = openblas_get_corename();
  if (core == nullptr || std::string_view(core) != "Prescott") return "";
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return "";
}

std::string blas_core_name() {
  const char* core = openblas_get_corename();
  return core == nullptr ? std::string() : std::string(core);
}

int blas_threads(int n) {
  const int before = openblas_get_num_threads();
  openblas_set_num_threads(n);
  return before;
}

Result<Svd> truncated_svd(const float* a, uint64_t m, uint64_t n, uint64_t k,
                          const SvdOptions& options) {
  const uint64_t kmax = std::min(m, n);
  k = std::min(k, kmax);
  const uint64_t l = std::min(kmax, k + options.oversample);
  // The sketch pays when it is well below the matrix; otherwise the exact SVD is as fast.
  if (options.exact || 2 * l > kmax) {
    std::vector<float> copy(a, a + m * n);
    CKPT_ASSIGN_OR_RETURN(Svd r, gesdd(copy, m, n));
    truncate(r, k);
    return r;
  }
  const auto M = static_cast<blasint>(m), N = static_cast<blasint>(n),
             L = static_cast<blasint>(l);
  std::vector<float> omega(n * l), y(m * l), z(n * l);
  gaussian(omega, options.seed);
  // Y = A Ω, orthonormalized; then (AᵀY, AZ) power iterations, each step orthonormalized.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, L, N, 1.0f, a, N, omega.data(), L,
              0.0f, y.data(), L);
  CKPT_RETURN_IF_ERROR(orthonormalize(y, m, l));
  for (int it = 0; it < options.power_iterations; ++it) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, L, M, 1.0f, a, N, y.data(), L, 0.0f,
                z.data(), L);
    CKPT_RETURN_IF_ERROR(orthonormalize(z, n, l));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, L, N, 1.0f, a, N, z.data(), L,
                0.0f, y.data(), L);
    CKPT_RETURN_IF_ERROR(orthonormalize(y, m, l));
  }
  // B = Qᵀ A (l × n); A ≈ Q B = (Q Ub) S Vt.
  std::vector<float> b(l * n);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, N, M, 1.0f, y.data(), L, a, N, 0.0f,
              b.data(), N);
  CKPT_ASSIGN_OR_RETURN(Svd small, gesdd(b, l, n));
  Svd r;
  r.m = m, r.n = n, r.k = small.k;
  r.u.resize(m * small.k);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, static_cast<blasint>(small.k), L,
              1.0f, y.data(), L, small.u.data(), static_cast<blasint>(small.k), 0.0f, r.u.data(),
              static_cast<blasint>(small.k));
  r.s = std::move(small.s);
  r.vt = std::move(small.vt);
  truncate(r, k);
  return r;
}

Result<Svd> product_svd(const float* up, const float* down, uint64_t m, uint64_t r, uint64_t n) {
  const auto M = static_cast<blasint>(m), N = static_cast<blasint>(n),
             R = static_cast<blasint>(r);
  if (2 * r > std::min(m, n)) {
    // Not low-rank enough for the QR route to pay: the product, then its SVD.
    std::vector<float> w(m * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, R, 1.0f, up, R, down, N, 0.0f,
                w.data(), N);
    return gesdd(w, m, n);
  }
  // up = Qu Ru, downᵀ = Qd Rd: up·down = Qu (Ru Rdᵀ) Qdᵀ; the SVD of the r × r core rotates
  // the two bases.
  CKPT_ASSIGN_OR_RETURN(QrCore q, qr_core(up, down, m, r, n));
  lapack_int info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, M, R, R, q.qu.data(), R, q.tau_u.data());
  if (info != 0) return lapack_error("sorgqr", info);
  info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, N, R, R, q.qd.data(), R, q.tau_d.data());
  if (info != 0) return lapack_error("sorgqr", info);
  std::vector<float>& qu = q.qu;
  std::vector<float>& qd = q.qd;
  std::vector<float>& core = q.core;
  CKPT_ASSIGN_OR_RETURN(Svd c, gesdd(core, r, r));
  Svd out;
  out.m = m, out.n = n, out.k = r;
  out.s = std::move(c.s);
  out.u.resize(m * r);
  out.vt.resize(r * n);
  // U = Qu Uc; Vt = Vct Qdᵀ.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, R, R, 1.0f, qu.data(), R, c.u.data(),
              R, 0.0f, out.u.data(), R);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, N, R, 1.0f, c.vt.data(), R, qd.data(),
              R, 0.0f, out.vt.data(), N);
  return out;
}

Result<std::vector<float>> product_singular_values(const float* up, const float* down, uint64_t m,
                                                   uint64_t r, uint64_t n) {
  const auto M = static_cast<lapack_int>(m), N = static_cast<lapack_int>(n),
             R = static_cast<lapack_int>(r);
  std::vector<float> core;
  uint64_t cm = 0, cn = 0;
  if (2 * r > std::min(m, n)) {
    core.resize(m * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, R, 1.0f, up, R, down, N, 0.0f,
                core.data(), N);
    cm = m, cn = n;
  } else {
    CKPT_ASSIGN_OR_RETURN(QrCore q, qr_core(up, down, m, r, n));
    core = std::move(q.core);
    cm = r, cn = r;
  }
  std::vector<float> s(std::min(cm, cn));
  const lapack_int info =
      LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'N', static_cast<lapack_int>(cm),
                     static_cast<lapack_int>(cn), core.data(), static_cast<lapack_int>(cn),
                     s.data(), nullptr, static_cast<lapack_int>(cm), nullptr,
                     static_cast<lapack_int>(cn));
  if (info != 0) return lapack_error("sgesdd", info);
  return s;
}

float quantile(std::vector<float>& v, double q) {
  if (v.empty()) return 0.0f;
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo), v.end());
  const double a = v[lo];
  if (lo + 1 >= v.size()) return static_cast<float>(a);
  const double b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(lo) + 1, v.end());
  return static_cast<float>(a + (b - a) * (pos - static_cast<double>(lo)));
}

}  // namespace ckptkit::detail
