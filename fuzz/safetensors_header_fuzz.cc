// libFuzzer target: the safetensors header parser on arbitrary bytes (treated as a whole
// file). Properties checked beyond "no crash, no UB, no leak":
//   * an accepted file re-serializes (build_safetensors_header) and the result parses to the
//     same tensors and metadata — the reader and writer agree;
//   * every accepted tensor lies inside the file.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "ckptkit/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ckptkit::SafetensorsLimits limits;
  limits.max_header_bytes = 1 << 20;  // keep the fuzzer on small inputs
  auto parsed = ckptkit::parse_safetensors(std::span<const uint8_t>(data, size), limits);
  if (!parsed.is_ok()) return 0;
  const ckptkit::Checkpoint& ck = *parsed;
  if (ck.data_offset > size) std::abort();
  for (const ckptkit::TensorInfo& t : ck.tensors)
    if (t.begin > t.end || ck.data_offset + t.end > size) std::abort();

  std::vector<ckptkit::TensorLayout> layouts;
  for (const ckptkit::TensorInfo& t : ck.tensors) layouts.push_back({t.name, t.dtype, t.shape});
  auto header = ckptkit::build_safetensors_header(layouts, ck.metadata);
  if (!header.is_ok()) std::abort();  // everything the reader accepts must be writable
  std::vector<uint8_t> rebuilt = header->bytes;
  if (header->data_size > (64u << 20)) return 0;  // do not allocate huge zero data sections
  rebuilt.resize(header->file_size(), 0);
  auto again = ckptkit::parse_safetensors(rebuilt, limits);
  if (!again.is_ok()) {
    // The rebuilt header may exceed the small limit above only if the input header did too.
    if (again.status().code() == ckptkit::ErrorCode::kLimitExceeded) return 0;
    std::abort();
  }
  if (again->metadata != ck.metadata || again->tensors.size() != ck.tensors.size()) std::abort();
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const auto& a = ck.tensors[i];
    const auto& b = again->tensors[i];
    if (a.name != b.name || a.dtype != b.dtype || a.shape != b.shape || a.nbytes() != b.nbytes())
      std::abort();
  }
  return 0;
}
