// SHA-256 through OpenSSL's libcrypto, which picks its SHA-NI / AVX2 code at run time.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace ckptkit {

/// Lower-case hex of `n` bytes.
inline std::string to_hex(const uint8_t* p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[p[i] >> 4];
    s[2 * i + 1] = kDigits[p[i] & 15];
  }
  return s;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const uint8_t> data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }
  void update(std::string_view s) { EVP_DigestUpdate(ctx_, s.data(), s.size()); }
  /// The digest as hex; call once.
  std::string hex() {
    std::array<uint8_t, EVP_MAX_MD_SIZE> md{};
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx_, md.data(), &len);
    return to_hex(md.data(), len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace ckptkit
