// ckptkit_cast_bench — throughput of the dtype conversion kernels (ckptkit/cast.h), next to a
// memcpy of the same input bytes, which is the most any streaming kernel can hope for on this
// machine.
//
// Every kernel runs once per SIMD target this CPU supports (names "f32_to_f16/AVX3/16MiB",
// …), so the dispatch choice can be checked as well as the kernels. Buffers are allocated,
// filled and written once before timing (warm, pre-touched: no page faults are timed).
// bytes_per_second counts INPUT bytes, so every row — memcpy included — is read as "how fast
// does a checkpoint of this dtype go through"; the rw_bytes counter adds the output bytes
// (the memory traffic actually generated: in + out).
//
//   build/release/bench/ckptkit_cast_bench                          all kernels, all targets
//   build/release/bench/ckptkit_cast_bench --benchmark_filter=AVX3  one target (+ memcpy)
//   CKPTKIT_BENCH_MIB=64 build/release/bench/ckptkit_cast_bench     other input size
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ckptkit/cast.h"

namespace {

// 64-byte aligned, zero-filled up front, so the pages exist before anything is timed.
struct Buffer {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<unsigned char, Free> mem;
  size_t size = 0;

  explicit Buffer(size_t bytes)
      : mem(static_cast<unsigned char*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64))),
        size(bytes) {
    if (!mem) std::abort();
    std::memset(mem.get(), 0, (bytes + 63) / 64 * 64);
  }
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(mem.get());
  }
};

// Values like a checkpoint's weights: mostly N(0, 0.02), a few larger ones, a few
// exact zeros. This matters little for the branch-free kernels but keeps the data honest.
std::vector<float> weights(size_t n) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    float x = normal(rng);
    if (i % 97 == 0) x *= 100.0f;
    if (i % 1009 == 0) x = 0.0f;
    v[i] = x;
  }
  return v;
}

size_t input_bytes() {
  size_t mib = 16;
  if (const char* e = std::getenv("CKPTKIT_BENCH_MIB")) {
    const long v = std::strtol(e, nullptr, 10);
    if (v > 0) mib = static_cast<size_t>(v);
  }
  return mib << 20;
}

void set_counters(benchmark::State& state, size_t in_bytes, size_t out_bytes) {
  const auto iters = static_cast<int64_t>(state.iterations());
  state.SetBytesProcessed(iters * static_cast<int64_t>(in_bytes));
  state.counters["rw_bytes"] = benchmark::Counter(
      static_cast<double>(in_bytes + out_bytes), benchmark::Counter::kIsIterationInvariantRate,
      benchmark::Counter::kIs1024);
}

// One kernel: In -> Out over `bytes` of input. `fill` writes the input elements.
template <typename In, typename Out>
void register_kernel(const std::string& name, void (*kernel)(const In*, Out*, size_t),
                     void (*fill)(In*, size_t), const std::string& target, size_t bytes) {
  const size_t n = bytes / sizeof(In);
  const std::string full = name + "/" + target + "/" + std::to_string(bytes >> 20) + "MiB";
  benchmark::RegisterBenchmark(full.c_str(), [=](benchmark::State& state) {
    if (!ckptkit::select_simd_target(target)) {
      state.SkipWithError("SIMD target not available");
      return;
    }
    Buffer in_buf(n * sizeof(In));
    Buffer out_buf(n * sizeof(Out));
    const In* in = in_buf.as<In>();
    Out* out = out_buf.as<Out>();
    fill(in_buf.as<In>(), n);
    kernel(in, out, n);  // warm: caches, TLB, the dispatch table
    for (auto _ : state) {
      kernel(in, out, n);
      benchmark::DoNotOptimize(out);
      benchmark::ClobberMemory();
    }
    set_counters(state, n * sizeof(In), n * sizeof(Out));
    state.SetLabel(ckptkit::simd_target_name());
  })->Unit(benchmark::kMillisecond)->UseRealTime();
}

void fill_f32(float* p, size_t n) {
  const std::vector<float> w = weights(n);
  std::memcpy(p, w.data(), n * sizeof(float));
}
void fill_f64(double* p, size_t n) {
  const std::vector<float> w = weights(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<double>(w[i]) * (1.0 + 1e-9);
}
void fill_f16(uint16_t* p, size_t n) {
  const std::vector<float> w = weights(n);
  ckptkit::f32_to_f16(w.data(), p, n);
}
void fill_bf16(uint16_t* p, size_t n) {
  const std::vector<float> w = weights(n);
  ckptkit::f32_to_bf16(w.data(), p, n);
}

void register_memcpy(size_t bytes) {
  const std::string full = "memcpy/" + std::to_string(bytes >> 20) + "MiB";
  benchmark::RegisterBenchmark(full.c_str(), [=](benchmark::State& state) {
    Buffer in_buf(bytes);
    Buffer out_buf(bytes);
    unsigned char* in = in_buf.as<unsigned char>();
    unsigned char* out = out_buf.as<unsigned char>();
    std::memset(in, 0x5A, bytes);
    std::memcpy(out, in, bytes);
    for (auto _ : state) {
      std::memcpy(out, in, bytes);
      benchmark::DoNotOptimize(out);
      benchmark::ClobberMemory();
    }
    set_counters(state, bytes, bytes);
    state.SetLabel("libc");
  })->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  const size_t bytes = input_bytes();
  const std::string best = ckptkit::simd_target_name();
  benchmark::AddCustomContext("ckptkit_simd_best", best);
  benchmark::AddCustomContext("ckptkit_input_mib", std::to_string(bytes >> 20));

  register_memcpy(bytes);
  for (const std::string& t : ckptkit::simd_targets()) {
    register_kernel<float, uint16_t>("f32_to_f16", ckptkit::f32_to_f16, fill_f32, t, bytes);
    register_kernel<uint16_t, float>("f16_to_f32", ckptkit::f16_to_f32, fill_f16, t, bytes);
    register_kernel<float, uint16_t>("f32_to_bf16", ckptkit::f32_to_bf16, fill_f32, t, bytes);
    register_kernel<uint16_t, float>("bf16_to_f32", ckptkit::bf16_to_f32, fill_bf16, t, bytes);
    register_kernel<float, uint8_t>("f32_to_f8_e4m3", ckptkit::f32_to_f8_e4m3, fill_f32, t,
                                    bytes);
    register_kernel<double, float>("f64_to_f32", ckptkit::f64_to_f32, fill_f64, t, bytes);
  }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  ckptkit::select_simd_target(best);
  return 0;
}
