// BLAKE3, default hash mode, written from the specification (BLAKE3-team/BLAKE3-specs): the
// compression function (7 rounds of the ChaCha-like G over a 4x4 state, the message words
// permuted between rounds), 1 KiB chunks of 64-byte blocks chained with CHUNK_START/CHUNK_END,
// parent nodes over pairs of chaining values, ROOT on the final compression.
//
// Multi-chunk SIMD kernel (Highway, compiled once per target by foreach_target and picked at
// run time from the CPU's feature bits, as in src/tensor/cast.cc): vector lane i carries the
// state of input i, so one vector instruction advances N compressions (16 with AVX-512, 8 with
// AVX2, 4 with SSE4/SSSE3/NEON). The message words are transposed on the way in: each 128-bit
// block of a vector is loaded from a different input (4 words of one input), then a 4x4
// transpose inside every 128-bit block leaves word w of input i in lane i. The same kernel
// hashes parent nodes (one block each, the two child CVs being adjacent in memory).
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/hash/blake3.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "hash/blake3.h"
#include "tensor/dispatch.h"

// Constants of the specification and the kernel signature, shared by every target (this file
// is included once per target; this part must be seen once).
#ifndef CKPTKIT_HASH_BLAKE3_SPEC_
#define CKPTKIT_HASH_BLAKE3_SPEC_
namespace ckptkit::blake3_spec {

constexpr size_t kBlockLen = 64;
constexpr size_t kCvLen = Blake3::kCvLen;
constexpr size_t kBlocksPerChunk = Blake3::kChunkLen / kBlockLen;
constexpr size_t kMaxLanes = Blake3::kMaxSimdLanes;  // AVX-512, 32-bit lanes

// Domain separation flags (only those of the default hash mode).
constexpr uint32_t kChunkStart = 1u << 0;
constexpr uint32_t kChunkEnd = 1u << 1;
constexpr uint32_t kParent = 1u << 2;
constexpr uint32_t kRoot = 1u << 3;

// The IV is SHA-256's.
constexpr uint32_t kIV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                             0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

// Word schedule of every round: round r reads message word kSchedule[r][i] where round 0
// reads word i; the specification permutes the message by kPermutation between rounds.
constexpr std::array<std::array<uint8_t, 16>, 7> make_schedule() {
  constexpr uint8_t kPermutation[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
  std::array<std::array<uint8_t, 16>, 7> s{};
  for (uint8_t i = 0; i < 16; ++i) s[0][i] = i;
  for (size_t r = 1; r < 7; ++r)
    for (size_t i = 0; i < 16; ++i) s[r][i] = s[r - 1][kPermutation[i]];
  return s;
}
inline constexpr std::array<std::array<uint8_t, 16>, 7> kSchedule = make_schedule();

// Hashes n inputs of `blocks` 64-byte blocks each (input i at in[i], counter
// counter + i * counter_step, `flags` on every block, `flags_start` added on the first and
// `flags_end` on the last) and writes their n chaining values, 32 little-endian bytes each, to
// out consecutively. n is at most the kernel's lane count. out may be in[0] of parent
// reduction (input i at out + 64 i): every input is read before the CVs are written.
using HashManyFn = void (*)(const uint8_t* const* in, size_t n, size_t blocks, uint64_t counter,
                            uint64_t counter_step, uint32_t flags, uint32_t flags_start,
                            uint32_t flags_end, uint8_t* out);

}  // namespace ckptkit::blake3_spec
#endif  // CKPTKIT_HASH_BLAKE3_SPEC_

HWY_BEFORE_NAMESPACE();
namespace ckptkit {
namespace HWY_NAMESPACE {

// Targets with a 128-bit-block vector layout that the kernel is written for. The others
// (scalar emulation, SVE, RVV, …) get no kernel: the portable scalar code serves them.
#undef CKPTKIT_BLAKE3_SIMD
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX2 || \
    HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3 || HWY_TARGET == HWY_NEON
#define CKPTKIT_BLAKE3_SIMD 1
#else
#define CKPTKIT_BLAKE3_SIMD 0
#endif

#if CKPTKIT_BLAKE3_SIMD
namespace blake3_simd {
namespace hn = hwy::HWY_NAMESPACE;
namespace spec = ckptkit::blake3_spec;

using D32 = hn::ScalableTag<uint32_t>;
using V32 = hn::Vec<D32>;
inline constexpr size_t kLanes = hn::MaxLanes(D32());
static_assert(kLanes % 4 == 0 && kLanes <= spec::kMaxLanes);

// 128-bit block q of the result is the 16 bytes at in[4 q] + offset.
template <class D>
HWY_INLINE hn::Vec<D> LoadQuads(D d, const uint8_t* const* in, size_t offset) {
  if constexpr (hn::MaxLanes(D()) == 4) {
    const hn::Repartition<uint8_t, D> d8;
    return hn::BitCast(d, hn::LoadU(d8, in[0] + offset));
  } else {
    const hn::Half<D> dh;
    constexpr size_t kHalf = hn::MaxLanes(hn::Half<D>());
    return hn::Combine(d, LoadQuads(dh, in + kHalf, offset), LoadQuads(dh, in, offset));
  }
}

// 4x4 transpose of 32-bit words inside every 128-bit block of a, b, c, e.
template <class D>
HWY_INLINE void Transpose4x4(D d, hn::Vec<D>& a, hn::Vec<D>& b, hn::Vec<D>& c, hn::Vec<D>& e) {
  const hn::Repartition<uint64_t, D> d64;
  const auto ab_lo = hn::BitCast(d64, hn::InterleaveLower(d, a, b));
  const auto ab_hi = hn::BitCast(d64, hn::InterleaveUpper(d, a, b));
  const auto ce_lo = hn::BitCast(d64, hn::InterleaveLower(d, c, e));
  const auto ce_hi = hn::BitCast(d64, hn::InterleaveUpper(d, c, e));
  a = hn::BitCast(d, hn::InterleaveLower(d64, ab_lo, ce_lo));
  b = hn::BitCast(d, hn::InterleaveUpper(d64, ab_lo, ce_lo));
  c = hn::BitCast(d, hn::InterleaveLower(d64, ab_hi, ce_hi));
  e = hn::BitCast(d, hn::InterleaveUpper(d64, ab_hi, ce_hi));
}

// Rotations right by 16 and 8 are byte shuffles (one instruction) where the target has no
// vector rotate; AVX-512 has one for every count.
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3
#define CKPTKIT_BLAKE3_BYTE_ROTATE 1
#else
#define CKPTKIT_BLAKE3_BYTE_ROTATE 0
#endif

struct Rotator {
#if CKPTKIT_BLAKE3_BYTE_ROTATE
  using D8 = hn::Repartition<uint8_t, D32>;
  hn::Vec<D8> by16, by8;
  Rotator() {
    alignas(16) static constexpr uint8_t k16[16] = {2,  3,  0, 1, 6,  7,  4,  5,
                                                    10, 11, 8, 9, 14, 15, 12, 13};
    alignas(16) static constexpr uint8_t k8[16] = {1, 2,  3,  0, 5,  6,  7,  4,
                                                   9, 10, 11, 8, 13, 14, 15, 12};
    by16 = hn::LoadDup128(D8(), k16);
    by8 = hn::LoadDup128(D8(), k8);
  }
  HWY_INLINE V32 R16(V32 x) const {
    return hn::BitCast(D32(), hn::TableLookupBytes(hn::BitCast(D8(), x), by16));
  }
  HWY_INLINE V32 R8(V32 x) const {
    return hn::BitCast(D32(), hn::TableLookupBytes(hn::BitCast(D8(), x), by8));
  }
#else
  HWY_INLINE V32 R16(V32 x) const { return hn::RotateRight<16>(x); }
  HWY_INLINE V32 R8(V32 x) const { return hn::RotateRight<8>(x); }
#endif
  HWY_INLINE V32 R12(V32 x) const { return hn::RotateRight<12>(x); }
  HWY_INLINE V32 R7(V32 x) const { return hn::RotateRight<7>(x); }
};

HWY_INLINE void G(const Rotator& rot, V32& a, V32& b, V32& c, V32& d, V32 mx, V32 my) {
  a = hn::Add(hn::Add(a, b), mx);
  d = rot.R16(hn::Xor(d, a));
  c = hn::Add(c, d);
  b = rot.R12(hn::Xor(b, c));
  a = hn::Add(hn::Add(a, b), my);
  d = rot.R8(hn::Xor(d, a));
  c = hn::Add(c, d);
  b = rot.R7(hn::Xor(b, c));
}

template <size_t R>
HWY_INLINE void Round(const Rotator& rot, V32* v, const V32* m) {
  constexpr const std::array<uint8_t, 16>& s = spec::kSchedule[R];
  G(rot, v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
  G(rot, v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
  G(rot, v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
  G(rot, v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
  G(rot, v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
  G(rot, v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
  G(rot, v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
  G(rot, v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
}

// Words 4q..4q+3 of block `offset` of every input, one word per vector.
template <size_t Q>
HWY_INLINE void LoadMessageQuad(D32 d, const uint8_t* const* in, size_t offset, V32* m) {
  m[4 * Q + 0] = LoadQuads(d, in + 0, offset + 16 * Q);
  m[4 * Q + 1] = LoadQuads(d, in + 1, offset + 16 * Q);
  m[4 * Q + 2] = LoadQuads(d, in + 2, offset + 16 * Q);
  m[4 * Q + 3] = LoadQuads(d, in + 3, offset + 16 * Q);
  Transpose4x4(d, m[4 * Q + 0], m[4 * Q + 1], m[4 * Q + 2], m[4 * Q + 3]);
}

void HashMany(const uint8_t* const* in, size_t n, size_t blocks, uint64_t counter,
              uint64_t counter_step, uint32_t flags, uint32_t flags_start, uint32_t flags_end,
              uint8_t* out) {
  const D32 d;
  // Lanes past n repeat the last input; their results are dropped.
  const uint8_t* ptr[kLanes];
  alignas(64) uint32_t counter_lo[kLanes];
  alignas(64) uint32_t counter_hi[kLanes];
  for (size_t i = 0; i < kLanes; ++i) {
    ptr[i] = in[i < n ? i : n - 1];
    const uint64_t c = counter + i * counter_step;
    counter_lo[i] = static_cast<uint32_t>(c);
    counter_hi[i] = static_cast<uint32_t>(c >> 32);
  }
  const V32 t_lo = hn::Load(d, counter_lo);
  const V32 t_hi = hn::Load(d, counter_hi);
  const V32 block_len = hn::Set(d, static_cast<uint32_t>(spec::kBlockLen));
  const Rotator rot;

  V32 iv[8];
  for (size_t j = 0; j < 8; ++j) iv[j] = hn::Set(d, spec::kIV[j]);
  V32 h[8];
  for (size_t j = 0; j < 8; ++j) h[j] = iv[j];
  for (size_t blk = 0; blk < blocks; ++blk) {
    const size_t offset = blk * spec::kBlockLen;
    V32 m[16];
    LoadMessageQuad<0>(d, ptr, offset, m);
    LoadMessageQuad<1>(d, ptr, offset, m);
    LoadMessageQuad<2>(d, ptr, offset, m);
    LoadMessageQuad<3>(d, ptr, offset, m);
    uint32_t f = flags;
    if (blk == 0) f |= flags_start;
    if (blk + 1 == blocks) f |= flags_end;
    V32 v[16];
    for (size_t j = 0; j < 8; ++j) v[j] = h[j];
    for (size_t j = 0; j < 4; ++j) v[8 + j] = iv[j];
    v[12] = t_lo;
    v[13] = t_hi;
    v[14] = block_len;
    v[15] = hn::Set(d, f);
    Round<0>(rot, v, m);
    Round<1>(rot, v, m);
    Round<2>(rot, v, m);
    Round<3>(rot, v, m);
    Round<4>(rot, v, m);
    Round<5>(rot, v, m);
    Round<6>(rot, v, m);
    for (size_t j = 0; j < 8; ++j) h[j] = hn::Xor(v[j], v[j + 8]);
  }

  // Transpose back: word j of CV i is lane i of h[j]. (Little-endian targets only, so the
  // words' memory images are their little-endian encodings.)
  alignas(64) uint32_t words[8][kLanes];
  for (size_t j = 0; j < 8; ++j) hn::Store(h[j], d, words[j]);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < 8; ++j) std::memcpy(out + i * spec::kCvLen + 4 * j, &words[j][i], 4);
  }
}

}  // namespace blake3_simd
#endif  // CKPTKIT_BLAKE3_SIMD

}  // namespace HWY_NAMESPACE
}  // namespace ckptkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ckptkit {
namespace {

using namespace blake3_spec;  // NOLINT(google-build-using-namespace)

// ---------------------------------------------------------------- portable scalar code

inline uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

inline void store_le32(uint8_t* p, uint32_t w) {
  p[0] = static_cast<uint8_t>(w);
  p[1] = static_cast<uint8_t>(w >> 8);
  p[2] = static_cast<uint8_t>(w >> 16);
  p[3] = static_cast<uint8_t>(w >> 24);
}

inline void load_words(const uint8_t* p, uint32_t* w, size_t count) {
  for (size_t i = 0; i < count; ++i) w[i] = load_le32(p + 4 * i);
}

inline void store_words(const uint32_t* w, uint8_t* p, size_t count) {
  for (size_t i = 0; i < count; ++i) store_le32(p + 4 * i, w[i]);
}

inline void g(uint32_t* v, size_t a, size_t b, size_t c, size_t d, uint32_t mx, uint32_t my) {
  v[a] = v[a] + v[b] + mx;
  v[d] = std::rotr(v[d] ^ v[a], 16);
  v[c] = v[c] + v[d];
  v[b] = std::rotr(v[b] ^ v[c], 12);
  v[a] = v[a] + v[b] + my;
  v[d] = std::rotr(v[d] ^ v[a], 8);
  v[c] = v[c] + v[d];
  v[b] = std::rotr(v[b] ^ v[c], 7);
}

template <size_t R>
inline void round(uint32_t* v, const uint32_t* m) {
  constexpr const std::array<uint8_t, 16>& s = kSchedule[R];
  g(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
  g(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
  g(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
  g(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
  g(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
  g(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
  g(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
  g(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
}

// The compression function, truncated to the 8 words a chaining value (or a 32-byte root
// output) needs. `out` may be `cv`.
void compress(const uint32_t* cv, const uint32_t* m, uint64_t counter, uint32_t block_len,
              uint32_t flags, uint32_t* out) {
  // Rows 0-1: the chaining value; row 2: the IV's first half; row 3: the counter (low word,
  // high word), the block length, the flags.
  uint32_t v[16];
  for (size_t i = 0; i < 8; ++i) v[i] = cv[i];
  for (size_t i = 0; i < 4; ++i) v[8 + i] = kIV[i];
  v[12] = static_cast<uint32_t>(counter);
  v[13] = static_cast<uint32_t>(counter >> 32);
  v[14] = block_len;
  v[15] = flags;
  round<0>(v, m);
  round<1>(v, m);
  round<2>(v, m);
  round<3>(v, m);
  round<4>(v, m);
  round<5>(v, m);
  round<6>(v, m);
  for (size_t i = 0; i < 8; ++i) out[i] = v[i] ^ v[i + 8];
}

void hash_many_scalar(const uint8_t* const* in, size_t n, size_t blocks, uint64_t counter,
                      uint64_t counter_step, uint32_t flags, uint32_t flags_start,
                      uint32_t flags_end, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t cv[8];
    std::memcpy(cv, kIV, sizeof cv);
    for (size_t blk = 0; blk < blocks; ++blk) {
      uint32_t m[16];
      load_words(in[i] + blk * kBlockLen, m, 16);
      uint32_t f = flags;
      if (blk == 0) f |= flags_start;
      if (blk + 1 == blocks) f |= flags_end;
      compress(cv, m, counter + i * counter_step, static_cast<uint32_t>(kBlockLen), f, cv);
    }
    store_words(cv, out + i * kCvLen, 8);
  }
}

// The inputs of one compression not yet done: the last block of a chunk, or a parent node,
// whose flags depend on whether it turns out to be the root.
struct Output {
  uint32_t cv[8];
  uint32_t block[16];
  uint64_t counter;
  uint32_t block_len;
  uint32_t flags;

  void chaining_value(uint8_t* out) const {
    uint32_t w[8];
    compress(cv, block, counter, block_len, flags, w);
    store_words(w, out, 8);
  }
  std::array<uint8_t, 32> root_hash() const {
    uint32_t w[8];
    compress(cv, block, 0, block_len, flags | kRoot, w);  // output block 0
    std::array<uint8_t, 32> h;
    store_words(w, h.data(), 8);
    return h;
  }
};

// A chunk of len <= 1024 bytes (an empty one only as the whole input).
Output chunk_output(const uint8_t* data, size_t len, uint64_t counter) {
  Output o;
  std::memcpy(o.cv, kIV, sizeof o.cv);
  const size_t blocks = len == 0 ? 1 : (len + kBlockLen - 1) / kBlockLen;
  for (size_t blk = 0; blk + 1 < blocks; ++blk) {
    uint32_t m[16];
    load_words(data + blk * kBlockLen, m, 16);
    compress(o.cv, m, counter, static_cast<uint32_t>(kBlockLen), blk == 0 ? kChunkStart : 0, o.cv);
  }
  const size_t tail = len - (blocks - 1) * kBlockLen;
  uint8_t last[kBlockLen] = {};
  if (tail > 0) std::memcpy(last, data + (blocks - 1) * kBlockLen, tail);
  load_words(last, o.block, 16);
  o.counter = counter;
  o.block_len = static_cast<uint32_t>(tail);
  o.flags = (blocks == 1 ? kChunkStart : 0) | kChunkEnd;
  return o;
}

// `children` is the left CV followed by the right one (64 bytes).
Output parent_output(const uint8_t* children) {
  Output o;
  std::memcpy(o.cv, kIV, sizeof o.cv);
  load_words(children, o.block, 16);
  o.counter = 0;
  o.block_len = static_cast<uint32_t>(kBlockLen);
  o.flags = kParent;
  return o;
}

// Pushes the CV of a complete subtree onto a CV stack, first merging it with the subtrees it
// completes. `total` counts the subtrees of its size hashed so far, this one included: every
// trailing zero bit of it is a left sibling waiting on the stack.
void push_cv(uint8_t* stack, size_t& len, const uint8_t* cv, uint64_t total) {
  uint8_t node[2 * kCvLen];
  std::memcpy(node + kCvLen, cv, kCvLen);
  while ((total & 1) == 0) {
    std::memcpy(node, stack + (len - 1) * kCvLen, kCvLen);
    parent_output(node).chaining_value(node + kCvLen);
    --len;
    total >>= 1;
  }
  std::memcpy(stack + len * kCvLen, node + kCvLen, kCvLen);
  ++len;
}

// ---------------------------------------------------------------- runtime dispatch

struct Kernels {
  const char* name;
  size_t lanes;     // inputs per call of hash_many
  size_t min_simd;  // fewer inputs than this go to the scalar code instead
  HashManyFn hash_many;
  bool (*supported)();
};

#define CKPTKIT_BLAKE3_KERNELS(NS, NAME, MIN_SIMD, SUPPORTED) \
  Kernels { NAME, NS::blake3_simd::kLanes, MIN_SIMD, &NS::blake3_simd::HashMany, SUPPORTED }

// Best first; the same feature checks as src/tensor/cast.cc (what Highway compiles each
// target for). A SIMD call costs as much for one input as for all lanes, so a few inputs go
// to the scalar code.
const Kernels kKernels[] = {
#if HWY_TARGETS & HWY_AVX3_DL
    CKPTKIT_BLAKE3_KERNELS(
        N_AVX3_DL, "AVX3_DL", 2,
        [] {
          return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("vpclmulqdq") &&
                 __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vbmi2") &&
                 __builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx512vpopcntdq") &&
                 __builtin_cpu_supports("avx512bitalg");
        }),
#endif
#if HWY_TARGETS & HWY_AVX3
    CKPTKIT_BLAKE3_KERNELS(N_AVX3, "AVX3", 2,
                           [] {
                             return __builtin_cpu_supports("avx512f") &&
                                    __builtin_cpu_supports("avx512vl") &&
                                    __builtin_cpu_supports("avx512dq") &&
                                    __builtin_cpu_supports("avx512bw");
                           }),
#endif
#if HWY_TARGETS & HWY_AVX2
    CKPTKIT_BLAKE3_KERNELS(N_AVX2, "AVX2", 3,
                           [] {
                             return __builtin_cpu_supports("avx2") &&
                                    __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
                           }),
#endif
#if HWY_TARGETS & HWY_SSE4
    CKPTKIT_BLAKE3_KERNELS(N_SSE4, "SSE4", 3,
                           [] {
                             return __builtin_cpu_supports("sse4.2") &&
                                    __builtin_cpu_supports("pclmul") &&
                                    __builtin_cpu_supports("aes");
                           }),
#endif
#if HWY_TARGETS & HWY_SSSE3
    CKPTKIT_BLAKE3_KERNELS(N_SSSE3, "SSSE3", 3,
                           [] { return __builtin_cpu_supports("ssse3") != 0; }),
#endif
#if HWY_TARGETS & HWY_NEON
    CKPTKIT_BLAKE3_KERNELS(N_NEON, "NEON", 2,
                           [] { return std::endian::native == std::endian::little; }),
#endif
    Kernels{"scalar", 1, 2, &hash_many_scalar, [] { return true; }},
};
#undef CKPTKIT_BLAKE3_KERNELS

detail::KernelChoice<Kernels> g_choice{kKernels};

const Kernels& kernels() { return g_choice.get(); }

void hash_many(const Kernels& k, const uint8_t* const* in, size_t n, size_t blocks,
               uint64_t counter, uint64_t counter_step, uint32_t flags, uint32_t flags_start,
               uint32_t flags_end, uint8_t* out) {
  const HashManyFn fn = n >= k.min_simd ? k.hash_many : &hash_many_scalar;
  fn(in, n, blocks, counter, counter_step, flags, flags_start, flags_end, out);
}

}  // namespace

// ---------------------------------------------------------------- Blake3

Blake3::Blake3() = default;

void Blake3::update(std::span<const uint8_t> data) {
  const uint8_t* p = data.data();
  size_t n = data.size();
  if (n == 0) return;
  if (buf_len_ < kChunkLen) {
    const size_t take = std::min(kChunkLen - buf_len_, n);
    std::memcpy(buf_.data() + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    n -= take;
    if (n == 0) return;
  }
  // buf_ holds a whole chunk and more input follows, so it is not the last chunk. It is hashed
  // together with the whole chunks of p that still leave at least one byte after them.
  const Kernels& k = kernels();
  const size_t whole = (n - 1) / kChunkLen;
  const size_t count = 1 + whole;
  for (size_t done = 0; done < count;) {
    const size_t group = std::min(k.lanes, count - done);
    const uint8_t* in[kMaxLanes];
    for (size_t i = 0; i < group; ++i) {
      const size_t c = done + i;
      in[i] = c == 0 ? buf_.data() : p + (c - 1) * kChunkLen;
    }
    hash_many(k, in, group, kBlocksPerChunk, chunk_counter_, 1, 0, kChunkStart, kChunkEnd,
              pending_.data() + pending_len_ * kCvLen);
    pending_len_ += group;
    chunk_counter_ += group;
    done += group;
    if (pending_len_ >= kGroupChunks) reduce_group();
  }
  p += whole * kChunkLen;
  n -= whole * kChunkLen;
  std::memcpy(buf_.data(), p, n);
  buf_len_ = n;
}

// pending_ starts with the CVs of a whole group (the chunks from a multiple of kGroupChunks
// on): hash its subtree level by level, in place (the parents of a level overwrite the front
// of its CVs), push the group's CV, and move the CVs past the group to the front.
void Blake3::reduce_group() {
  const Kernels& k = kernels();
  for (size_t nodes = kGroupChunks; nodes > 1; nodes /= 2) {
    const size_t parents = nodes / 2;
    for (size_t j = 0; j < parents;) {
      const size_t group = std::min(k.lanes, parents - j);
      const uint8_t* in[kMaxLanes];
      for (size_t i = 0; i < group; ++i) in[i] = pending_.data() + (j + i) * 2 * kCvLen;
      hash_many(k, in, group, 1, 0, 0, kParent, 0, 0, pending_.data() + j * kCvLen);
      j += group;
    }
  }
  const uint64_t groups = (chunk_counter_ - pending_len_) / kGroupChunks + 1;
  push_cv(stack_.data(), stack_len_, pending_.data(), groups);
  pending_len_ -= kGroupChunks;
  std::memmove(pending_.data(), pending_.data() + kGroupChunks * kCvLen, pending_len_ * kCvLen);
}

std::array<uint8_t, 32> Blake3::finalize() const {
  // The pending chunk CVs join a copy of the stack one at a time (their subtrees are not
  // complete groups), then the last chunk, root or not, is folded up the stack.
  decltype(stack_) stack = stack_;
  size_t len = stack_len_;
  const uint64_t first = chunk_counter_ - pending_len_;
  for (size_t i = 0; i < pending_len_; ++i)
    push_cv(stack.data(), len, pending_.data() + i * kCvLen, first + i + 1);

  Output out = chunk_output(buf_.data(), buf_len_, chunk_counter_);
  while (len > 0) {
    uint8_t node[2 * kCvLen];
    std::memcpy(node, stack.data() + (len - 1) * kCvLen, kCvLen);
    out.chaining_value(node + kCvLen);
    out = parent_output(node);
    --len;
  }
  return out.root_hash();
}

std::array<uint8_t, 32> blake3(std::span<const uint8_t> data) {
  Blake3 h;
  h.update(data);
  return h.finalize();
}

std::string_view blake3_simd_target() { return kernels().name; }

std::vector<std::string> blake3_simd_targets() { return g_choice.names(); }

bool blake3_select_simd_target(std::string_view name) { return g_choice.select(name); }

}  // namespace ckptkit
#endif  // HWY_ONCE
