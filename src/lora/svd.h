// Internal: the linear algebra of `lora extract` and `lora resize`, on LAPACKE + OpenBLAS.
//
// Matrices are row-major F32. A truncated SVD keeps the k largest singular triplets:
// A ≈ U · diag(S) · Vt with U m×k, Vt k×n, S descending.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckptkit/status.h"

namespace ckptkit::detail {

struct Svd {
  uint64_t m = 0, n = 0, k = 0;
  std::vector<float> u;   ///< m × k
  std::vector<float> s;   ///< k, descending
  std::vector<float> vt;  ///< k × n
};

struct SvdOptions {
  bool exact = false;        ///< LAPACK's gesdd on the whole matrix (as torch.linalg.svd)
  uint64_t oversample = 16;  ///< extra columns of the randomized range finder
  int power_iterations = 2;  ///< subspace iterations of the range finder
  uint64_t seed = 0;         ///< of the Gaussian test matrix (results are reproducible)
};

/// The k leading singular triplets of A (m × n). Randomized (Halko, Martinsson and Tropp's range
/// finder with power iterations, then an exact SVD of the small projected matrix) unless
/// `exact` or the sketch would not be smaller than the matrix.
Result<Svd> truncated_svd(const float* a, uint64_t m, uint64_t n, uint64_t k,
                          const SvdOptions& options);

/// The exact SVD of up · down (up m × r, down r × n) without forming the product when r is
/// small: QR of up and of downᵀ, then the SVD of the r × r core. Returns min(r, m, n) triplets.
Result<Svd> product_svd(const float* up, const float* down, uint64_t m, uint64_t r, uint64_t n);

/// The q-quantile of `v` with linear interpolation between order statistics, as torch.quantile
/// computes it, by selection (no size limit). `v` is reordered.
float quantile(std::vector<float>& v, double q);

/// The OpenBLAS kernel family to ask for when OpenBLAS picked a generic one on a CPU it did
/// not recognize (a VM hiding the CPU model: it falls back to SSE3 "Prescott" kernels, several
/// times slower than the AVX2/AVX-512 ones the CPU has). Empty when nothing is to be done:
/// OPENBLAS_CORETYPE already set, or OpenBLAS's own choice stands.
std::string blas_core_hint();

/// The kernel family OpenBLAS chose when it loaded ("Haswell", "Prescott", ...).
std::string blas_core_name();

/// Sets the number of threads the BLAS may use (1 inside parallel code); returns the previous.
int blas_threads(int n);

/// The singular values only of up · down (descending, min(r, m, n) of them), through the R
/// factors of the two QRs: the cheap pass that decides a resize's ranks.
Result<std::vector<float>> product_singular_values(const float* up, const float* down, uint64_t m,
                                                   uint64_t r, uint64_t n);

}  // namespace ckptkit::detail
