// Noise-schedule buffers (see schedule.h). Each expression keeps the training code's order of
// operations, so that the doubles match NumPy's and the F32 values match the published files.
#include "model/schedule.h"

#include <algorithm>
#include <cmath>

namespace ckptkit::detail {

std::vector<double> scaled_linear_betas(double start, double end, size_t n) {
  std::vector<double> b(n);
  if (n == 0) return b;
  const double lo = std::sqrt(start), hi = std::sqrt(end);
  if (n == 1) {
    b[0] = lo * lo;
    return b;
  }
  const double step = (hi - lo) / static_cast<double>(n - 1);
  const size_t half = n / 2;
  for (size_t i = 0; i < n; ++i) {
    const double v =
        i < half ? lo + step * static_cast<double>(i) : hi - step * static_cast<double>(n - 1 - i);
    b[i] = v * v;
  }
  return b;
}

std::map<std::string, std::vector<double>, std::less<>> ddpm_buffers(
    const std::vector<double>& betas) {
  const size_t n = betas.size();
  std::vector<double> alphas(n), ac(n), acp(n);
  double prod = 1.0;
  for (size_t i = 0; i < n; ++i) {
    alphas[i] = 1.0 - betas[i];
    prod *= alphas[i];  // np.cumprod: a running product, left to right
    ac[i] = prod;
    acp[i] = i == 0 ? 1.0 : ac[i - 1];
  }
  std::map<std::string, std::vector<double>, std::less<>> out;
  auto make = [&](std::string_view name, auto&& f) {
    std::vector<double> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = f(i);
    out.emplace(std::string(name), std::move(v));
  };
  make("betas", [&](size_t i) { return betas[i]; });
  make("alphas_cumprod", [&](size_t i) { return ac[i]; });
  make("alphas_cumprod_prev", [&](size_t i) { return acp[i]; });
  make("sqrt_alphas_cumprod", [&](size_t i) { return std::sqrt(ac[i]); });
  make("sqrt_one_minus_alphas_cumprod", [&](size_t i) { return std::sqrt(1.0 - ac[i]); });
  make("log_one_minus_alphas_cumprod", [&](size_t i) { return std::log(1.0 - ac[i]); });
  make("sqrt_recip_alphas_cumprod", [&](size_t i) { return std::sqrt(1.0 / ac[i]); });
  make("sqrt_recipm1_alphas_cumprod", [&](size_t i) { return std::sqrt(1.0 / ac[i] - 1.0); });
  // v_posterior = 0: (1 - 0) * betas * (1 - acp) / (1 - ac) + 0 * betas.
  std::vector<double> pv(n);
  for (size_t i = 0; i < n; ++i) pv[i] = 1.0 * betas[i] * (1.0 - acp[i]) / (1.0 - ac[i]) + 0.0;
  make("posterior_variance", [&](size_t i) { return pv[i]; });
  make("posterior_log_variance_clipped",
       [&](size_t i) { return std::log(std::max(pv[i], 1e-20)); });
  make("posterior_mean_coef1",
       [&](size_t i) { return betas[i] * std::sqrt(acp[i]) / (1.0 - ac[i]); });
  make("posterior_mean_coef2",
       [&](size_t i) { return (1.0 - acp[i]) * std::sqrt(alphas[i]) / (1.0 - ac[i]); });
  return out;
}

std::vector<float> flow_sigmas(float shift, size_t n) {
  std::vector<float> s(n);
  const float steps = static_cast<float>(n), multiplier = 1000.0f;
  for (size_t i = 0; i < n; ++i) {
    // (arange(1, n + 1) / n) * multiplier, then sigma(t) = shift·(t/m) / (1 + (shift − 1)·(t/m))
    const float timestep = static_cast<float>(i + 1) / steps * multiplier;
    const float t = timestep / multiplier;
    s[i] = shift == 1.0f ? t : shift * t / (1.0f + (shift - 1.0f) * t);
  }
  return s;
}

}  // namespace ckptkit::detail
