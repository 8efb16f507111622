// Plans and the streaming executor.
//
// An op does not move bytes itself: it returns a Plan, the list of output tensors (name,
// dtype, shape) each with a TensorProducer that can fill any chunk of its elements. Because
// every size is known up front, the executor writes the header first, then fills the data
// section chunk by chunk from a pool of threads, each with its own pair of reused buffers
// (`pread` into one, produce into the other, `pwrite` at the precomputed offset). Peak memory
// is threads × 2 × chunk buffer, whatever the model's size.
//
// Thread safety: produce() is called concurrently for different chunks (of the same or
// different tensors); producers must not keep mutable state between calls.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ckptkit/gguf.h"
#include "ckptkit/ops.h"
#include "ckptkit/status.h"
#include "ckptkit/tensor.h"
#include "io/file.h"
#include "io/output.h"
#include "tensor/quant.h"

namespace ckptkit {

/// A byte-for-byte copy of an input range: the executor copies it in the kernel.
struct CopySource {
  const InputFile* file;
  uint64_t offset;  ///< absolute offset of the tensor's first byte in `file`
};

/// One input range of a tensor made of several (see TensorProducer::copy_segments).
struct CopySegment {
  const InputFile* file;
  uint64_t offset;  ///< absolute offset in `file`
  uint64_t bytes;
};

class TensorProducer {
 public:
  virtual ~TensorProducer() = default;
  /// Bytes of scratch (input) the producer needs per output element; 0 if it reads nothing.
  virtual uint64_t scratch_bytes_per_element() const = 0;
  /// Bytes read from the inputs per output element (for the statistics); by default the
  /// scratch, which holds exactly what was read.
  virtual uint64_t input_bytes_per_element() const { return scratch_bytes_per_element(); }
  /// Set when the output bytes are exactly an input range.
  virtual std::optional<CopySource> copy_source() const { return std::nullopt; }
  /// Set (non-empty) when the output bytes are several input ranges one after another (a
  /// concatenation of copies: FLUX's fused q/k/v on the way back from diffusers): the executor
  /// copies each in the kernel. `bytes` of the segments add up to the tensor's bytes.
  virtual std::vector<CopySegment> copy_segments() const { return {}; }
  /// Fills `out` with elements [first, first + count) of the tensor. `scratch` holds at least
  /// count × scratch_bytes_per_element() bytes.
  virtual Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                         std::span<uint8_t> scratch) const = 0;
  /// True when elements [first, first + count) are all +0 because every input range they come
  /// from is a hole: the executor then leaves the output range a hole (it reads as zeros).
  virtual bool is_hole(uint64_t /*first*/, uint64_t /*count*/) const { return false; }
  /// Chunks start and end at multiples of this many elements (the block of a quantized input
  /// a dequantizing producer reads; the output type's own granule is added by the executor).
  virtual uint64_t granule() const { return 1; }
};

struct PlannedTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::unique_ptr<TensorProducer> producer;
  bool leave_hole = false;  ///< do not write the data (a sparse synthetic file)
  /// GGUF only: the stored dims in ggml order when they are not `shape` reversed (ComfyUI's
  /// rows of 256; the torch shape goes into comfy.gguf.orig_shape.<name>).
  std::vector<uint64_t> gguf_ne = {};
};

enum class OutputFormat : uint8_t { kSafetensors, kGguf };

struct Plan {
  std::vector<PlannedTensor> tensors;
  std::map<std::string, std::string> metadata;
  std::vector<const InputFile*> inputs;  ///< never overwritten by the output
  bool fill_data = true;                 ///< false: leave the data section as holes (sparse)
  /// Write the tensors in the order given instead of the reference writer's order (meta keeps
  /// a file's data section byte for byte).
  bool keep_order = false;
  /// GGUF: the tensors in the order given, `metadata` ignored, these key-value pairs instead.
  OutputFormat format = OutputFormat::kSafetensors;
  std::vector<GgufKV> gguf_kv;
  GgufWriteOptions gguf_options;
};

/// Runs a plan into `out_path` atomically. See ckptkit/ops.h for the options and statistics.
Result<RunStats> execute_plan(Plan& plan, const std::string& out_path, const RunOptions& options);

/// Runs a plan into an output that the caller commits (the files of an OutputFolder).
Result<RunStats> write_plan(Plan& plan, OutputFile& out, const RunOptions& options);

/// Producer that copies an input range unchanged.
std::unique_ptr<TensorProducer> make_copy_producer(const InputFile* file, uint64_t offset,
                                                   DType dtype);

/// The producer for tensor `t` of a checkpoint read from `file`, cast to `to`: a kernel copy or
/// a cast of its byte range when it is plain, otherwise a gather that materializes a PyTorch
/// view in C order and byte-swaps big-endian data. `data_offset` is Checkpoint::data_offset.
std::unique_ptr<TensorProducer> make_tensor_producer(const InputFile* file, const TensorInfo& t,
                                                     uint64_t data_offset, DType to);

/// Producer that quantizes what `source` produces as F32 to the block type `type`, after
/// rounding the values through `stage` (F16/BF16: a tool chain that writes that first; F32:
/// none), bit-identical to ggml on the chosen path. `row`: elements per stored row (ne[0]),
/// which the importance path's statistics span.
std::unique_ptr<TensorProducer> make_quantize_producer(std::unique_ptr<TensorProducer> source,
                                                       DType stage, DType type, QuantPath path,
                                                       uint64_t row);

/// Producer that dequantizes the blocks of a `from` tensor at absolute `offset` of `file` and
/// casts the F32 values to `to`.
std::unique_ptr<TensorProducer> make_dequantize_producer(const InputFile* file, uint64_t offset,
                                                         DType from, DType to);

/// Producer that reads an input range of `from` elements and casts them to `to`.
std::unique_ptr<TensorProducer> make_cast_producer(const InputFile* file, uint64_t offset,
                                                   DType from, DType to);

}  // namespace ckptkit

namespace ckptkit {

/// Producer of a tensor whose elements are those of `parts` one after another (a concatenation
/// along the first dimension), each part `counts[i]` elements of the output dtype. Byte-sized
/// dtypes only.
std::unique_ptr<TensorProducer> make_concat_producer(
    std::vector<std::unique_ptr<TensorProducer>> parts, std::vector<uint64_t> counts, DType to);

}  // namespace ckptkit
