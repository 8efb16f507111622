// ggml block quantization (F32 -> Q4_0 … Q6_K) and dequantization (… -> F32), bit-identical to
// ggml's reference C code (ggml-quants.c), for writing and reading GGUF tensors.
//
// Contract:
// - quantize_rows() produces exactly the bytes of ggml_quantize_chunk(type, src, dst, 0, rows,
//   row_elems, imatrix) with imatrix = NULL (QuantPath::kReference) or an all-ones array of
//   row_elems floats (QuantPath::kUnitImportance). The two paths are different algorithms in
//   ggml (quantize_row_<type>_ref vs quantize_row_<type>_impl), so a file matches the tool that
//   wrote it only when the same path is chosen: llama-quantize without --imatrix (and so
//   ComfyUI-GGUF's tools) use the reference path, stable-diffusion.cpp's `convert` passes a dummy
//   importance matrix of ones.
// - dequantize_blocks() produces exactly the floats of ggml's dequantize_row_<type>.
// - Checked against ggml 0.25.1 (commit 0ad4a86, the libggml-base.so of node-llama-cpp 3.22.1;
//   tests/python/test_quant_ggml.py). ggml changes its degenerate-group guards now and then
//   (e.g. ggml b466b4d0): rerun that test when moving to another ggml.
// - Every input is accepted, NaN and Inf included: the output then is what ggml's x86-64 build
//   writes (ggml's own debug-build asserts in nearest_int() are not reproduced; its release
//   build, which is what produced real files, has none). See quant.cc for the details.
// - The arithmetic is the scalar order of operations of ggml, in float, without fused
//   multiply-add (this file's .cc is compiled with -ffp-contract=off; the ggml builds people run
//   on x86-64 have no FMA in ggml-base either, verified on the node-llama-cpp build we test
//   against).
// - The group steps of the reference K-quant quantizers (nearly all of their time) and the
//   K-quants' requantization run on SIMD lanes across independent groups (quant_simd.cc),
//   chosen at run time from the CPU's features; every target gives the scalar code's bytes
//   (tests compare each target the CPU has). The 32-element types other than Q8_0 and the
//   importance-path group steps are scalar.
// - Pure functions of their inputs; thread-safe; no allocation except quantize_rows() with
//   kUnitImportance (one row of ones). Single-threaded: callers parallelize across tensors or
//   row ranges (the output of a row range does not depend on the other rows).
//
// Byte layouts (little-endian; "h" = IEEE binary16):
//   Q4_0  32 el, 18 B: d h, qs[16] (byte j: low nibble element j, high nibble element j+16)
//   Q4_1  32 el, 20 B: d h, m h, qs[16]
//   Q5_0  32 el, 22 B: d h, qh u32 (bit j: 5th bit of element j), qs[16]
//   Q5_1  32 el, 24 B: d h, m h, qh u32, qs[16]
//   Q8_0  32 el, 34 B: d h, qs i8[32]
//   Q2_K 256 el, 84 B: scales[16] (low nibble scale, high nibble min), qs[64], d h, dmin h
//   Q3_K 256 el, 110 B: hmask[32], qs[64], scales[12] (16 x 6 bits, offset 32), d h
//   Q4_K 256 el, 144 B: d h, dmin h, scales[12] (8 x 6-bit scale, 8 x 6-bit min), qs[128]
//   Q5_K 256 el, 176 B: d h, dmin h, scales[12], qh[32], qs[128]
//   Q6_K 256 el, 210 B: ql[128], qh[64], scales i8[16], d h
//   IQ4_NL 32 el, 18 B: d h, qs[16] (nibbles index a fixed 16-value table)
//   IQ4_XS 256 el, 136 B: d h, scales_h u16, scales_l[4], qs[128]
#pragma once

#include <cstdint>

#include "ckptkit/dtype.h"
#include "ckptkit/status.h"

namespace ckptkit {

enum class QuantPath : uint8_t {
  /// ggml_quantize_chunk(..., imatrix = NULL): quantize_row_<type>_ref (llama-quantize without
  /// an importance matrix, ComfyUI-GGUF's tools).
  kReference,
  /// ggml_quantize_chunk(..., imatrix = all ones of row_elems): the quantize_row_<type>_impl
  /// path (stable-diffusion.cpp's convert). For Q8_0 this is the same as kReference.
  kUnitImportance,
};

/// Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K.
bool can_quantize(DType t);
/// Those and IQ4_NL, IQ4_XS.
bool can_dequantize(DType t);

/// `rows` x `row_elems` F32 values -> rows * row_elems / block * block_bytes bytes at `dst`.
/// InvalidArgument when row_elems is not a multiple of the type's block, when the element count
/// overflows, or when the type cannot be quantized.
Status quantize_rows(DType type, QuantPath path, const float* src, uint64_t rows,
                     uint64_t row_elems, uint8_t* dst);

/// `count` elements (a multiple of the block) stored at `src` -> `count` F32 values at `dst`.
/// InvalidArgument when count is not a multiple of the block or the type is not supported.
Status dequantize_blocks(DType type, const uint8_t* src, uint64_t count, float* dst);

namespace detail {
/// ggml's GGML_FP32_TO_FP16 (round to nearest even, overflow to Inf, NaN -> 0x7E00 | sign).
uint16_t ggml_fp32_to_fp16(float f);
/// ggml's GGML_FP16_TO_FP32 (exact; NaN payloads kept, made quiet).
float ggml_fp16_to_fp32(uint16_t h);
/// The reference Q3_K and Q6_K group steps on `blocks` contiguous super-blocks, as
/// quantize_rows runs them on the selected SIMD target (tensor/quant_simd.h): 16 scales and
/// 256 levels (with their offset) per block. For tests, which compare the targets exactly
/// here, where the later steps would hide a difference in a scale or in a level that is
/// requantized anyway.
void q3k_reference_groups(const float* x, uint64_t blocks, float* scales, uint8_t* L);
void q6k_reference_groups(const float* x, uint64_t blocks, float* scales, uint8_t* L);
}  // namespace detail

}  // namespace ckptkit
