// The public face of ggml's dequantizers (src/tensor/quant.cc) for callers outside the
// pipeline (the Python module's GGUF loading).
#include <fmt/format.h>

#include "ckptkit/dtype.h"
#include "ckptkit/gguf.h"
#include "tensor/quant.h"

namespace ckptkit {

bool can_dequantize_gguf(DType type) { return is_quantized(type) && can_dequantize(type); }

Status dequantize_gguf(DType type, std::span<const uint8_t> blocks, std::span<float> out) {
  if (!can_dequantize_gguf(type))
    return Status(ErrorCode::kUnsupported,
                  fmt::format("{} blocks cannot be dequantized", dtype_info(type).name));
  const std::optional<uint64_t> need = dtype_bytes(type, out.size());
  if (!need || *need != blocks.size())
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{} {} values are not whole blocks of {} bytes", out.size(),
                              dtype_info(type).name, blocks.size()));
  return dequantize_blocks(type, blocks.data(), out.size(), out.data());
}

}  // namespace ckptkit
