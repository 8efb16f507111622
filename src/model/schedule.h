// Noise-schedule buffers: values that the architecture fixes rather than training learns, which
// single-file checkpoints carry beside the weights.
//
// * SD1/SD2 single files (the original training code, ldm's DDPM.register_schedule) hold 12
//   buffers of 1,000 values derived from a scaled-linear beta schedule: betas run from
//   sqrt(0.00085) to sqrt(0.012) in 1,000 evenly spaced steps, squared, and every other
//   buffer follows from them (formulas in schedule.cc, in the order of operations the
//   training code uses, in double precision as NumPy computes them, then stored as F32).
// * SD3 files saved by ComfyUI hold `model.model_sampling.sigmas`: the rectified-flow sigmas
//   shift·t / (1 + (shift − 1)·t) for t = 1/1000 … 1, computed in F32, with SD3's shift 3.
//
// `sample` writes these values; `verify` checks a file's own buffers against them.
//
// Thread safety: pure functions.
#pragma once

#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit::detail {

/// The names of the DDPM buffers, in the order register_schedule registers them.
inline constexpr std::string_view kDdpmBuffers[] = {
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
};
inline std::span<const std::string_view> ddpm_buffer_names() { return kDdpmBuffers; }

/// SD1/SD2's betas: linspace(sqrt(start), sqrt(end), n) in double, as torch.linspace computes
/// it (from the start for the first half, from the end for the second), then squared.
std::vector<double> scaled_linear_betas(double start = 0.00085, double end = 0.012,
                                        size_t n = 1000);

/// Every DDPM buffer (ddpm_buffer_names()) derived from `betas`, in double precision.
std::map<std::string, std::vector<double>, std::less<>> ddpm_buffers(
    const std::vector<double>& betas);

/// ComfyUI's ModelSamplingDiscreteFlow sigmas for `n` steps, computed in F32 as torch does.
std::vector<float> flow_sigmas(float shift, size_t n);

}  // namespace ckptkit::detail
