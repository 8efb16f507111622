// Quantization kernels against ggml's own, one thread each, on the same rows: ckptkit's
// quantize_rows and ggml_quantize_chunk from real ggml (libggml-base.so of the npm package
// @node-llama-cpp/linux-x64, loaded with dlopen; scripts/deps.sh installs it). Prints, per type
// and path, million elements per second for both, their ratio, and whether the bytes agree.
//
//   build/release/bench/ckptkit_quant_bench [LIBGGML] [ROWS] [TYPE...]
//
// TYPE (Q6_K, q3_k, …) limits the run to those types, for profiling one kernel.
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/dtype.h"
#include "tensor/quant.h"

namespace {

using QuantizeChunk = size_t (*)(int type, const float* src, void* dst, int64_t start,
                                 int64_t nrows, int64_t n_per_row, const float* imatrix);

double seconds_of(auto&& fn) {
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string lib =
      argc > 1 ? argv[1]
               : "build/oracles/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/"
                 "libggml-base.so";
  const int64_t rows = argc > 2 ? std::atoll(argv[2]) : 2048;
  const int64_t n_per_row = 3072;  // FLUX's hidden width
  void* handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    std::fprintf(stderr, "cannot load ggml (%s): %s\n", lib.c_str(), dlerror());
    return 2;
  }
  auto ggml_quantize_chunk = reinterpret_cast<QuantizeChunk>(dlsym(handle, "ggml_quantize_chunk"));
  if (ggml_quantize_chunk == nullptr) {
    std::fprintf(stderr, "%s has no ggml_quantize_chunk\n", lib.c_str());
    return 2;
  }
  const uint64_t n = static_cast<uint64_t>(rows * n_per_row);
  std::vector<float> x(n);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (float& v : x) v = normal(rng);
  const std::vector<float> ones(static_cast<size_t>(n_per_row), 1.0f);

  std::printf("rows %lld x %lld (%.1f M elements), one thread each; best of 3\n",
              static_cast<long long>(rows), static_cast<long long>(n_per_row),
              static_cast<double>(n) / 1e6);
  std::printf("%-7s %-10s %12s %12s %8s %s\n", "type", "path", "ggml M/s", "ckptkit M/s", "ratio",
              "bytes");
  using ckptkit::DType;
  auto wanted = [&](std::string_view name) {
    if (argc <= 3) return true;
    for (int a = 3; a < argc; ++a) {
      const std::string_view arg = argv[a];
      if (arg.size() == name.size() &&
          std::equal(arg.begin(), arg.end(), name.begin(),
                     [](char p, char q) { return std::toupper(p) == std::toupper(q); }))
        return true;
    }
    return false;
  };
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K,
                  DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const ckptkit::DTypeInfo& d = ckptkit::dtype_info(t);
    if (!wanted(d.name)) continue;
    const size_t bytes = static_cast<size_t>(n / d.block * d.block_bytes);
    std::vector<uint8_t> ours(bytes), theirs(bytes);
    for (ckptkit::QuantPath path :
         {ckptkit::QuantPath::kReference, ckptkit::QuantPath::kUnitImportance}) {
      const bool ref = path == ckptkit::QuantPath::kReference;
      const double tg = seconds_of([&] {
        ggml_quantize_chunk(d.ggml_type, x.data(), theirs.data(), 0, rows, n_per_row,
                            ref ? nullptr : ones.data());
      });
      const double tc = seconds_of([&] {
        (void)ckptkit::quantize_rows(t, path, x.data(), static_cast<uint64_t>(rows),
                                     static_cast<uint64_t>(n_per_row), ours.data());
      });
      std::printf("%-7s %-10s %12.1f %12.1f %7.2fx %s\n", std::string(d.name).c_str(),
                  ref ? "reference" : "ones", static_cast<double>(n) / tg / 1e6,
                  static_cast<double>(n) / tc / 1e6, tg / tc, ours == theirs ? "same" : "DIFFER");
    }
  }
  return 0;
}
