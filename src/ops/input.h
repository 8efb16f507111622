// An input file opened for an op that rewrites it: read, judged (PyTorch files are scanned and
// a dangerous one refused), and ready to hand out producers for its tensors. Deflated storages
// of a zip (torch never writes them; re-zipping tools do) are inflated once into an unlinked
// temporary beside the output and read from there like stored ones.
//
// Thread safety: immutable after open(); producers may run concurrently.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/ops.h"
#include "ckptkit/reader.h"
#include "ckptkit/scan.h"
#include "ckptkit/tensor.h"
#include "io/file.h"
#include "pipeline/plan.h"

namespace ckptkit::detail {

struct OpenOptions {
  ReadLimits limits;
  bool allow_dangerous = false;
  std::optional<Verdict> verdict;  ///< the caller scanned the file already
  std::string verb = "read";       ///< for the refusal message: "convert", "split", …
  /// The file's tensor table when the caller read it already (with `verdict`): not read again.
  const Checkpoint* checkpoint = nullptr;
};

class OpenedInput {
 public:
  /// `out_path`: the output beside which inflated storages are spilled (its directory).
  static Result<std::unique_ptr<OpenedInput>> open(const std::string& path,
                                                   const std::string& out_path,
                                                   const OpenOptions& options);
  ~OpenedInput();
  OpenedInput(const OpenedInput&) = delete;
  OpenedInput& operator=(const OpenedInput&) = delete;

  const InputFile& file() const { return *file_; }
  const Checkpoint& checkpoint() const { return ck_; }
  std::optional<Verdict> verdict() const { return verdict_; }
  const std::string& scan_summary() const { return scan_summary_; }

  /// The file to read tensor `t` from and its description there with an absolute `begin`
  /// (Checkpoint::data_offset folded in, spilled storages redirected).
  std::pair<const InputFile*, TensorInfo> locate(const TensorInfo& t) const;

  /// Producer of `t`'s elements cast to `to`.
  std::unique_ptr<TensorProducer> producer(const TensorInfo& t, DType to) const;

  /// Adds the files this input reads from to `plan.inputs` (never overwritten).
  void add_inputs(Plan& plan) const;

 private:
  OpenedInput() = default;
  Status spill(const std::string& out_path);
  Status inflate(const StorageInfo& s);

  std::optional<InputFile> file_;
  Checkpoint ck_;
  std::optional<Verdict> verdict_;
  std::string scan_summary_;
  int spill_fd_ = -1;
  uint64_t spill_at_ = 0;
  std::map<int32_t, uint64_t> spill_base_;
  std::optional<InputFile> spill_file_;
};

/// Every element of `t` as F32, read through its producer (for ops that need a whole tensor in
/// memory: the factors of a LoRA module, the ΔW of an extraction).
Status read_f32(const OpenedInput& in, const TensorInfo& t, std::vector<float>& out);

/// The values of a small tensor (at most `max_elements`, integer or floating point) as doubles,
/// read in place; nullopt when it cannot be (a deflated storage, a type that does not cast).
/// For the few value checks made beside the tensor table: position_ids, noise schedules.
std::optional<std::vector<double>> read_small_values(const Checkpoint& ck, const InputFile& file,
                                                     const TensorInfo& t, uint64_t max_elements);

/// What a GGUF file is made of: a diffusion model or a T5-XXL encoder of the input (names
/// without their single-file prefix; T5 under llama.cpp's names), or (component null) every
/// tensor under its own name.
struct GgufSource {
  const Component* component = nullptr;
  bool t5 = false;
};

/// Replaces the values of some tensors of a GGUF plan: returns the producer of tensor `t` as
/// `to` (F32 for a quantized tensor), or null to read `t` from the input as it is. A replaced
/// tensor is rounded through the loader's first step even when the input is in that type
/// already (its values are new). `lora bake --quant` passes its baked tensors this way.
using ProducerOverride =
    std::function<std::unique_ptr<TensorProducer>(const TensorInfo& t, DType to)>;

/// The plan of a GGUF file (docs/gguf.md): each tensor copied, cast or quantized as the target
/// loader's tool chain does. `report` gets the counts, types and notes.
Result<Plan> gguf_plan(const OpenedInput& in, const Anatomy& a, const GgufSource& source,
                       const GgufConvertOptions& go, const std::string& in_path,
                       ConvertReport& report, const ProducerOverride* override = nullptr);

/// What `convert --quant` writes of a model for the target loader: ComfyUI's UNet loader takes
/// the diffusion model alone; stable-diffusion.cpp the whole file; a file with no diffusion
/// model but a T5-XXL is that encoder. Notes what is left out in `report`.
GgufSource gguf_source(const Anatomy& a, const Checkpoint& ck, const GgufConvertOptions& go,
                       ConvertReport& report);

/// convert_file's GGUF branch (ops/convert_gguf.cc): `report` has the input's facts filled in.
Result<ConvertReport> convert_to_gguf(OpenedInput& in, const std::string& in_path,
                                      const std::string& out_path, const ConvertOptions& options,
                                      ConvertReport report);

/// The file name without its model extension (.safetensors, .ckpt, .pt, .pth, .bin, .sft):
/// the default title and base name of outputs.
std::string file_stem(const std::string& path);

}  // namespace ckptkit::detail
