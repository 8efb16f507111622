// BLAKE3 (src/hash/blake3.h) against the official test vectors and the Rust reference tool,
// with every kernel this CPU can run (the SIMD targets and the portable scalar code), the input
// fed in one piece and in many piece sizes that cross block, chunk and SIMD-group boundaries.
#include "hash/blake3.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace ckptkit {
namespace {

struct Vector {
  size_t len;
  const char* hash;  // hex, 32 bytes
};

// From BLAKE3-team/BLAKE3 test_vectors/test_vectors.json: the first 32 bytes of "hash" (the
// default mode's extended output) of every case. Input: byte i is i % 251.
constexpr Vector kOfficial[] = {
    {0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
    {1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
    {1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
    {1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
    {1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
    {2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
    {2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
    {3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
    {3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
    {4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
    {4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"},
    {5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
    {5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"},
    {6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"},
    {6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"},
    {7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
    {7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"},
    {8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
    {8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
    {16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
    {31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
    {102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
};

// More lengths of the same input (block, chunk, SIMD group and 64-chunk group boundaries),
// digests computed with `b3sum --no-names` (b3sum 1.2.0, Debian 12's package of the Rust
// reference tool).
constexpr Vector kFromB3sum[] = {
    {2, "7b7015bb92cf0b318037702a6cdd81dee41224f734684c2c122cd6359cb1ee63"},
    {3, "e1be4d7a8ab5560aa4199eea339849ba8e293d55ca0a81006726d184519e647f"},
    {8, "2351207d04fc16ade43ccab08600939c7c1fa70a5c0aaca76063d04c3228eaeb"},
    {63, "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b"},
    {64, "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98"},
    {65, "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee"},
    {127, "d81293fda863f008c09e92fc382a81f5a0b4a1251cba1634016a0f86a6bd640d"},
    {128, "f17e570564b26578c33bb7f44643f539624b05df1a76c81f30acd548c44b45ef"},
    {129, "683aaae9f3c5ba37eaaf072aed0f9e30bac0865137bae68b1fde4ca2aebdcb12"},
    {1000, "b43670a52d1af24abdac5d2c3ed19ff4e62b60a618e823ad555888b1b0b91cff"},
    {15360, "dc62f909be1b86aeffb12594b22fd9756540022f0ac9a050730d6989a036f6b0"},
    {16385, "1dabe216be2578830263b049de1639f39f05a4da616b9b78c7a5e4e41662fd1f"},
    {17408, "993924ff3dcbd868be9cf3fed98d4538fe579ffccf390a5aa1ddba0f6a20bfed"},
    {32768, "162183d1f9184474f5a5c9e6224e66720cdb6523f822e52d9b1efa30893f48f9"},
    {33797, "e8c1435bdc4ff332c9a5ebc072ab1f09f38c80da06022124bcc1d725d6a64b83"},
    {65536, "68d647e619a930e7b1082f74f334b0c65a315725569bdc123f0ee11881717bfe"},
    {66560, "ac803d7940a0bb6c8c8c2bd5235da72b3aa79af0738707c1fa7230714bdc9579"},
    {66561, "c0dafa3c0ad175a596c908dd503c069c2230b1b1f8bcfa7c80762d1f6b735be0"},
    {131072, "306baba93b1a393cbd35172837c98b0f59a41f64e1b2682ae102d8b2534b9e1c"},
    {132097, "d3bffd4815c1159749bd0b24688731909d251e76b4baede86dd151475e481d53"},
    {200000, "55409142cced2ec79897459f170b6d22565daf883710b4ad7aeeddaef54244b4"},
};

// Large inputs, same pattern; digests from b3sum 1.2.0 as above.
constexpr Vector kLarge[] = {
    {(size_t{1} << 20) + 1, "2f053cd7472cf0cd2f9adaf45c1180255b91b9a865404a63671a0ee5f792ed33"},
    {size_t{16} << 20, "869b1292c8bed5bdb2e0075e0c50ccf8b24b33a0f81071c86206bd8fdb269579"},
};

std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i % 251);
  return v;
}

std::string hex(const std::array<uint8_t, 32>& h) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (uint8_t b : h) {
    s += kDigits[b >> 4];
    s += kDigits[b & 15];
  }
  return s;
}

std::string hash_one_shot(std::span<const uint8_t> data) {
  Blake3 h;
  h.update(data);
  return hex(h.finalize());
}

// Feeds the input in pieces of sizes[0], sizes[1], …, cycling.
std::string hash_in_pieces(std::span<const uint8_t> data, const std::vector<size_t>& sizes) {
  Blake3 h;
  size_t pos = 0;
  for (size_t k = 0; pos < data.size(); ++k) {
    const size_t n = std::min(sizes[k % sizes.size()], data.size() - pos);
    h.update(data.subspan(pos, n));
    pos += n;
  }
  return hex(h.finalize());
}

// Piece patterns: single sizes around the block (64), chunk (1024) and SIMD group (up to 16
// chunks) sizes, and mixtures that leave the chunk buffer at every kind of offset.
const std::vector<std::vector<size_t>> kPieces = {
    {1},
    {7},
    {63},
    {64},
    {65},
    {1023},
    {1024},
    {1025},
    {4097},
    {16385},
    {1, 1023, 7, 1025, 4097, 64, 16384 + 3},
    {3000, 1, 2048, 17 * 1024 + 5},
};

// Runs `body` once with each kernel this CPU can run, then restores the default.
template <typename Body>
void for_each_target(Body body) {
  const std::vector<std::string> targets = blake3_simd_targets();
  for (const std::string& t : targets) {
    ASSERT_TRUE(blake3_select_simd_target(t)) << t;
    SCOPED_TRACE("target " + t);
    body();
  }
  ASSERT_TRUE(blake3_select_simd_target(targets.front()));
}

TEST(Blake3, OfficialVectorsOneShot) {
  for_each_target([] {
    for (const Vector& v : kOfficial) {
      const std::vector<uint8_t> in = pattern(v.len);
      EXPECT_EQ(hash_one_shot(in), v.hash) << "len " << v.len;
    }
  });
}

TEST(Blake3, OfficialVectorsInPieces) {
  for_each_target([] {
    for (const Vector& v : kOfficial) {
      const std::vector<uint8_t> in = pattern(v.len);
      for (const std::vector<size_t>& sizes : kPieces)
        EXPECT_EQ(hash_in_pieces(in, sizes), v.hash)
            << "len " << v.len << " pieces of " << sizes[0] << ", …";
    }
  });
}

TEST(Blake3, B3sumVectors) {
  for_each_target([] {
    for (const Vector& v : kFromB3sum) {
      const std::vector<uint8_t> in = pattern(v.len);
      EXPECT_EQ(hash_one_shot(in), v.hash) << "len " << v.len;
      for (const std::vector<size_t>& sizes : kPieces)
        EXPECT_EQ(hash_in_pieces(in, sizes), v.hash)
            << "len " << v.len << " pieces of " << sizes[0] << ", …";
    }
  });
}

TEST(Blake3, LargeInputs) {
  for (const Vector& v : kLarge) {
    const std::vector<uint8_t> in = pattern(v.len);
    const std::span<const uint8_t> all(in);
    for_each_target([&] {
      EXPECT_EQ(hash_one_shot(all), v.hash) << "len " << v.len;
      // One byte first: every later chunk is then at a different offset of the update.
      EXPECT_EQ(hash_in_pieces(all, {1, v.len}), v.hash) << "len " << v.len;
      // A streaming reader's buffers, not a multiple of the chunk size.
      EXPECT_EQ(hash_in_pieces(all, {65536 + 100}), v.hash) << "len " << v.len;
      // Random piece sizes (fixed seed).
      std::mt19937 rng(7);
      std::uniform_int_distribution<size_t> size(1, 40000);
      std::vector<size_t> sizes(64);
      for (size_t& s : sizes) s = size(rng);
      EXPECT_EQ(hash_in_pieces(all, sizes), v.hash) << "len " << v.len;
    });
  }
}

TEST(Blake3, EmptyUpdatesAndFreshState) {
  Blake3 h;
  h.update({});
  EXPECT_EQ(hex(h.finalize()), kOfficial[0].hash);
  const std::vector<uint8_t> in = pattern(2049);
  h.update(std::span(in).first(1000));
  h.update({});
  h.update(std::span(in).subspan(1000));
  h.update({});
  EXPECT_EQ(hex(h.finalize()), "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030");
  EXPECT_EQ(hex(blake3(in)), "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030");
}

TEST(Blake3, FinalizeDoesNotChangeTheState) {
  // Finalize at every official length while streaming the largest input: each intermediate
  // digest is that length's vector, and the stream goes on as if nothing happened.
  const std::vector<uint8_t> in = pattern(kOfficial[std::size(kOfficial) - 1].len);
  for_each_target([&] {
    Blake3 h;
    size_t pos = 0;
    for (const Vector& v : kOfficial) {
      h.update(std::span(in).subspan(pos, v.len - pos));
      pos = v.len;
      EXPECT_EQ(hex(h.finalize()), v.hash) << "len " << v.len;
      EXPECT_EQ(hex(h.finalize()), v.hash) << "len " << v.len;
    }
  });
}

TEST(Blake3, Targets) {
  const std::vector<std::string> targets = blake3_simd_targets();
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(targets.back(), "scalar");
  EXPECT_EQ(blake3_simd_target(), targets.front());
  EXPECT_FALSE(blake3_select_simd_target("no such target"));
  EXPECT_EQ(blake3_simd_target(), targets.front());
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")) {
    EXPECT_EQ(targets.front(), "AVX3");
  }
#endif
}

}  // namespace
}  // namespace ckptkit
