// hash/blake3.h — BLAKE3 (default hash mode, 32-byte digest), streaming, written from the
// specification (https://github.com/BLAKE3-team/BLAKE3-specs).
//
// The input is split into 1 KiB chunks; every chunk is hashed to a chaining value (CV) and the
// CVs are combined by a binary tree of parent nodes. Whole chunks are compressed several at a
// time with SIMD (one chunk per vector lane; Highway, runtime dispatch), and so are the parent
// nodes of each group of 64 chunks. Everything else (partial chunks, the last chunk, the few
// nodes above the groups) is scalar. The state is ~6 KiB; nothing is allocated.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit {

/// BLAKE3 (default hash mode, 32-byte output), streaming. update() may be called with any
/// sizes; large updates (whole multiples of 1 KiB chunks) are compressed several chunks at a
/// time with SIMD (Highway, runtime dispatch: AVX-512/AVX2/SSE4/NEON/scalar).
class Blake3 {
 public:
  Blake3();
  void update(std::span<const uint8_t> data);
  std::array<uint8_t, 32> finalize() const;  // does not change the state

  static constexpr size_t kChunkLen = 1024;
  static constexpr size_t kCvLen = 32;
  static constexpr size_t kMaxSimdLanes = 16;  // chunks per call of the widest kernel

 private:
  // CVs of up to this many consecutive chunks (the first at a multiple of it) wait here, so
  // that their parents can be hashed with SIMD too; a power of two.
  static constexpr size_t kGroupChunks = 64;
  // pending_ has room for the SIMD lanes that run past a group's end.
  static constexpr size_t kPendingCap = kGroupChunks + kMaxSimdLanes;
  // Subtrees of kGroupChunks chunks or more: one per set bit of the number of groups.
  static constexpr size_t kMaxStack = 64;

  void reduce_group();

  uint64_t chunk_counter_ = 0;  // index of the chunk held in buf_ (= chunks hashed so far)
  size_t buf_len_ = 0;
  size_t pending_len_ = 0;  // CVs in pending_, of the chunks just before chunk_counter_
  size_t stack_len_ = 0;
  // The current chunk, never compressed before more input proves it is not the last one.
  alignas(64) std::array<uint8_t, kChunkLen> buf_{};
  // CVs are kept as their 32-byte little-endian encoding, so a parent's block is two of them.
  alignas(64) std::array<uint8_t, kPendingCap * kCvLen> pending_{};
  alignas(64) std::array<uint8_t, kMaxStack * kCvLen> stack_{};
};

/// Convenience: BLAKE3 of one buffer.
std::array<uint8_t, 32> blake3(std::span<const uint8_t> data);

/// Name of the SIMD target the multi-chunk kernel runs with ("AVX3", "AVX2", …).
std::string_view blake3_simd_target();

/// The kernels this CPU can run, best first; "scalar" (portable code, no SIMD) is always last.
/// For tests and benchmarks.
std::vector<std::string> blake3_simd_targets();

/// Uses the named kernel from now on, for every thread; false if it cannot run here.
bool blake3_select_simd_target(std::string_view name);

}  // namespace ckptkit
