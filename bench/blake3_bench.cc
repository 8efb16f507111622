// ckptkit_blake3_bench — single-threaded throughput of BLAKE3 (src/hash/blake3.h), per kernel
// this CPU can run: the SIMD targets and the portable scalar code ("blake3/scalar/…").
//
// Rows: one update() of the whole warm buffer ("oneshot"), the same buffer fed in 64 KiB
// updates ("64KiB_updates", a streaming reader's pattern), and a 256 KiB buffer that stays in
// the L2 cache. bytes_per_second counts input bytes.
//
//   build/release/bench/ckptkit_blake3_bench
//   build/release/bench/ckptkit_blake3_bench --benchmark_filter=AVX3
//   CKPTKIT_BENCH_MIB=64 build/release/bench/ckptkit_blake3_bench
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "hash/blake3.h"

namespace {

size_t input_bytes() {
  size_t mib = 16;
  if (const char* e = std::getenv("CKPTKIT_BENCH_MIB")) {
    const long v = std::strtol(e, nullptr, 10);
    if (v > 0) mib = static_cast<size_t>(v);
  }
  return mib << 20;
}

void register_hash(const std::string& target, const std::string& what, size_t bytes, size_t piece) {
  const std::string name = "blake3/" + target + "/" + what;
  benchmark::RegisterBenchmark(name.c_str(),
                               [=](benchmark::State& state) {
                                 if (!ckptkit::blake3_select_simd_target(target)) {
                                   state.SkipWithError("target not available");
                                   return;
                                 }
                                 std::vector<uint8_t> in(bytes);
                                 for (size_t i = 0; i < bytes; ++i)
                                   in[i] = static_cast<uint8_t>(i * 2654435761u >> 24);
                                 const std::span<const uint8_t> all(in);
                                 auto run = [&] {
                                   ckptkit::Blake3 h;
                                   for (size_t pos = 0; pos < bytes; pos += piece)
                                     h.update(all.subspan(pos, std::min(piece, bytes - pos)));
                                   return h.finalize();
                                 };
                                 benchmark::DoNotOptimize(run());  // warm
                                 for (auto _ : state) benchmark::DoNotOptimize(run());
                                 state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                                                         static_cast<int64_t>(bytes));
                                 state.SetLabel(std::string(ckptkit::blake3_simd_target()));
                               })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  const size_t bytes = input_bytes();
  const std::string best(ckptkit::blake3_simd_target());
  benchmark::AddCustomContext("ckptkit_blake3_best", best);
  const std::string mib = std::to_string(bytes >> 20) + "MiB";
  for (const std::string& t : ckptkit::blake3_simd_targets()) {
    register_hash(t, "oneshot/" + mib, bytes, bytes);
    register_hash(t, "64KiB_updates/" + mib, bytes, 64 << 10);
    register_hash(t, "oneshot/256KiB", 256 << 10, 256 << 10);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  ckptkit::blake3_select_simd_target(best);
  return 0;
}
