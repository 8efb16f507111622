// ckptkit/ops.h — the operations the command line offers, as library calls.
//
// Every op that writes a file streams through the same executor: memory is bounded by
// RunOptions::max_memory whatever the model's size, the output appears atomically (temporary
// file beside the destination, fsync, rename) and is removed on error or SIGINT/SIGTERM, and an
// input is never overwritten.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/dtype.h"
#include "ckptkit/reader.h"
#include "ckptkit/safetensors.h"
#include "ckptkit/scan.h"
#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit {

enum class ProgressMode : uint8_t { kAuto, kAlways, kNever };

/// A caller's window on a running op, beside (not instead of) the progress bar: the executor
/// adds the output bytes of each plan it starts to `total` and every chunk it writes to `done`,
/// and stops between chunks with Status kCancelled once `cancel` is set (the output is then
/// discarded like after any error). One monitor may follow several plans (split, diffusers
/// folders). Set and read from any thread; the Python module polls it from the caller's thread.
struct RunMonitor {
  std::atomic<uint64_t> done{0};
  std::atomic<uint64_t> total{0};
  std::atomic<bool> cancel{false};
};

struct RunOptions {
  unsigned threads = 0;               ///< 0: one per core
  uint64_t max_memory = 64ull << 20;  ///< budget for all I/O buffers together
  ProgressMode progress = ProgressMode::kAuto;
  bool force = false;             ///< replace an existing output file
  bool sync = true;               ///< fsync before the rename (durable output)
  std::string label = "writing";  ///< shown on the progress bar
  RunMonitor* monitor = nullptr;  ///< not owned; must outlive the run
};

struct RunStats {
  uint64_t tensors = 0;
  uint64_t bytes_written = 0;  ///< size of the output file
  uint64_t bytes_read = 0;     ///< tensor bytes read from inputs
  uint64_t buffer_bytes = 0;   ///< memory the executor allocated for buffers
  unsigned threads = 0;
  double seconds = 0;
};

// --- convert -------------------------------------------------------------------------------

/// `convert … -o OUT.gguf --quant TYPE [--target comfyui|sdcpp]` (docs/gguf.md).
struct GgufConvertOptions {
  std::string quant;               ///< f32, f16, bf16, q8_0, q6_k, q5_k_m, … q2_k
  std::string target = "comfyui";  ///< comfyui or sdcpp
};

struct ConvertOptions {
  /// Target type for floating-point tensors; nullopt keeps every dtype. Integer and bool
  /// tensors (e.g. CLIP's position_ids) are never cast.
  std::optional<DType> dtype;
  SafetensorsLimits limits;
  RunOptions run;
  /// PyTorch inputs are scanned first (ckptkit/scan.h); a `dangerous` one is refused
  /// (InvalidArgument) unless this is set. Nothing in the file is ever executed either way.
  bool allow_dangerous = false;
  /// The scan verdict of the input when the caller has it already (it is not scanned again).
  std::optional<Verdict> verdict;
  /// Set: write a GGUF file (`dtype` is then not used).
  std::optional<GgufConvertOptions> gguf;
};

struct ConvertReport {
  RunStats stats;
  uint64_t tensors_cast = 0;
  uint64_t tensors_copied = 0;
  std::map<std::string, uint64_t> kept_not_float;  ///< dtype name -> count left as they were
  FileFormat format = FileFormat::kSafetensors;    ///< of the input
  // PyTorch inputs:
  uint64_t tensors_materialized = 0;  ///< views gathered into C order or byte-swapped
  uint64_t dropped_values = 0;        ///< non-tensor values inside the state dict
  uint64_t other_entries = 0;         ///< top-level entries besides the state dict (dropped)
  std::string state_dict_key;         ///< where the tensors were found
  std::optional<Verdict> verdict;     ///< the scan verdict
  // GGUF outputs:
  std::string gguf_architecture;                       ///< general.architecture written ("" none)
  std::map<std::string, uint64_t> gguf_types;          ///< stored type name -> tensor count
  uint64_t gguf_reshaped = 0;                          ///< tensors stored as rows of 256
  std::map<std::string, uint64_t> gguf_not_quantized;  ///< reason -> tensor count
  std::vector<std::string> notes;                      ///< what the user should know
};

Result<ConvertReport> convert_file(const std::string& in_path, const std::string& out_path,
                                   const ConvertOptions& options);

// --- sample --------------------------------------------------------------------------------

struct LayoutSummary {
  std::string name;
  uint64_t tensors = 0;
  uint64_t parameters = 0;
  uint64_t bytes = 0;  ///< data bytes in the layout's own dtypes
  std::string dtypes;  ///< e.g. "F16 (2512), I64 (1)"
};

/// Layouts compiled into the program (from the published tensor tables).
std::vector<LayoutSummary> list_layouts();

struct SampleOptions {
  std::optional<DType> dtype;  ///< cast float tensors to this; nullopt: the layout's own
  uint64_t seed = 0;
  /// Header and tensors of at most 1 KiB (position ids, scalars) only; the rest of the data
  /// section is left as holes.
  bool sparse = false;
  RunOptions run;
};

Result<RunStats> write_sample(const std::string& layout, const std::string& out_path,
                              const SampleOptions& options);

}  // namespace ckptkit

// --- split, assemble, swap, prune ------------------------------------------------------------
//
// These reshape a model between its monolithic form (one file: denoiser + text encoders + VAE)
// and its modular form (one file per part, as ComfyUI's diffusion_models/, text_encoders/ and
// vae/ folders hold them). Part files use the names ComfyUI's UNETLoader/CLIPLoader/VAELoader
// and stable-diffusion.cpp accept; monolithic files use the family's standard layout (see
// ckptkit/anatomy.h). Renamed tensors are copied byte for byte; OpenCLIP text encoders
// (SD2's H, SDXL's G) are converted to Hugging Face names exactly and reversibly.
// Every output carries ModelSpec metadata (modelspec.sai_model_spec, .architecture,
// .implementation, .title) plus the input's metadata where it still applies.

namespace ckptkit {

struct ReshapeOptions {
  SafetensorsLimits limits;
  RunOptions run;
  bool allow_dangerous = false;    ///< see ConvertOptions
  std::optional<Verdict> verdict;  ///< of the (first) input, when the caller scanned it
  std::string title;               ///< modelspec.title of the output; "" derives it from the input
};

/// One file an op wrote.
struct WrittenFile {
  std::string path;
  std::string part;  ///< diffusion_model, clip_l, clip_g, clip_h, t5xxl, vae, model
  uint64_t tensors = 0;
  uint64_t bytes = 0;
  std::string source;  ///< the input it came from
};

/// Tensors an op left out, by what they were.
struct DroppedGroup {
  std::string what;  ///< "ema", "training_extra", "unknown", "position_ids", …
  uint64_t tensors = 0;
  uint64_t bytes = 0;
  std::vector<std::string> names;  ///< the first few, for the report
};

struct ReshapeReport {
  std::string architecture;
  std::string family;
  std::vector<WrittenFile> outputs;
  std::vector<DroppedGroup> dropped;
  std::vector<std::string> notes;  ///< conversions made, what was kept and why
  RunStats stats;                  ///< summed over the outputs
  uint64_t input_bytes = 0;        ///< size of the input file(s)
  uint64_t dequantized = 0;        ///< GGUF-quantized tensors written dequantized
};

struct SplitOptions {
  ReshapeOptions common;
  std::string name;  ///< base of the part file names; "" takes the input's file name
  /// Set: the diffusion model and a T5-XXL are written as GGUF (NAME-TYPE.gguf), quantized as
  /// `convert --quant` would; CLIP and the VAE stay safetensors.
  std::optional<GgufConvertOptions> gguf;
};

/// Writes each part of `in_path` to `out_dir`/{diffusion_models,text_encoders,vae}/. EMA
/// copies, training buffers and unknown tensors are not part of any part; they are dropped and
/// reported. Refuses (before writing anything) a file whose architecture is unknown or that
/// holds two of a part.
Result<ReshapeReport> split_file(const std::string& in_path, const std::string& out_dir,
                                 const SplitOptions& options);

/// The files of a modular model. A file may hold more than the part asked of it (a monolithic
/// file given as --vae gives its VAE).
struct PartPaths {
  std::string diffusion_model, clip_l, clip_g, clip_h, t5xxl, vae;
};

struct AssembleOptions {
  ReshapeOptions common;
  bool allow_missing = false;  ///< write even when a part the family needs is not given
};

/// One monolithic file from parts. The architecture comes from the diffusion model; a part the
/// family does not use, or whose shapes do not fit, is refused with the reason.
Result<ReshapeReport> assemble_files(const PartPaths& parts, const std::string& out_path,
                                     const AssembleOptions& options);

/// `in_path` with some parts replaced (parts.diffusion_model must be empty). Everything else,
/// EMA and extras included, is copied as it is.
Result<ReshapeReport> swap_parts(const std::string& in_path, const PartPaths& parts,
                                 const std::string& out_path, const AssembleOptions& options);

/// `convert MODEL -o DIR --to diffusers`: a single file of a family that has a diffusers
/// layout (SD1, SD2, SDXL base, SDXL refiner, FLUX.1 dev and schnell: an all-in-one file or a
/// bare transformer) as a diffusers folder: model_index.json, one folder
/// per part with its weights (metadata format: pt) and a config.json derived from them, the
/// family's scheduler config. Tokenizers are not written (weights cannot give them). Tensors the
/// folder has no place for (EMA, schedule buffers, logit_scale, …) and the file's metadata go into
/// `DIR/ckptkit_extra.safetensors`, which diffusers ignores and diffusers_to_single reads, so the
/// round trip gives back every tensor byte for byte. DIR must not exist unless run.force.
/// The folder appears whole or not at all.
struct DiffusersOptions {
  ReshapeOptions common;
  /// The scheduler's prediction_type: "epsilon" or "v_prediction"; "" takes it from the file
  /// (metadata, a v_pred marker) or the family's usual one (SD2: v_prediction, reported).
  std::string prediction_type;
  /// A diffusers folder to take the tokenizer folders from (tokenizer/, tokenizer_2/: each
  /// file copied as it is); "" writes none ([null, null] in model_index.json).
  std::string tokenizers_from;
  /// A part's weights larger than this are written as NAME-0000k-of-0000n.safetensors shards
  /// with NAME.safetensors.index.json; 0: the libraries' own defaults (diffusers'
  /// save_pretrained 10 GB for unet/, transformer/, vae/; transformers' 5 GB for text
  /// encoders; decimal units, as they count).
  uint64_t max_shard_size = 0;
  /// Part files to take the text encoders and VAE from (as `assemble` does), for a diffusion
  /// model given alone (a FLUX or SD3 transformer file); `diffusion_model` is not used.
  PartPaths parts;
};

Result<ReshapeReport> single_to_diffusers(const std::string& in_path, const std::string& out_dir,
                                          const DiffusersOptions& options);

/// `convert DIR -o MODEL.safetensors`: a diffusers folder (model_index.json naming an SD1,
/// SD2, SDXL, SDXL refiner or FLUX pipeline; safetensors parts, sharded or not, their fp16
/// variants, or PyTorch .bin parts, scanned like any PyTorch input) as the
/// family's single file, with what ckptkit_extra.safetensors holds put back.
Result<ReshapeReport> diffusers_to_single(const std::string& in_dir, const std::string& out_path,
                                          const ReshapeOptions& options);

enum class EmaMode : uint8_t {
  kDrop,  ///< leave the EMA copy out
  kKeep,  ///< keep it as it is
  kUse,   ///< put the EMA weights in place of the diffusion model's, then drop the copy
};

struct PruneOptions {
  ReshapeOptions common;
  EmaMode ema = EmaMode::kDrop;
  bool keep_training_extras = false;  ///< DDPM schedule buffers, logvar, EMA counters
  std::optional<DType> dtype;         ///< cast floating-point tensors
};

Result<ReshapeReport> prune_file(const std::string& in_path, const std::string& out_path,
                                 const PruneOptions& options);

}  // namespace ckptkit

// --- meta ------------------------------------------------------------------------------------

namespace ckptkit {

struct MetaEdit {
  std::map<std::string, std::string> set;  ///< keys to add or replace
  std::vector<std::string> remove;         ///< keys to delete (applied before `set`)
  bool clear = false;                      ///< start from no metadata
};

struct MetaReport {
  RunStats stats;
  std::map<std::string, std::string> before, after;
  std::vector<std::string> missing;  ///< keys asked to delete that were not there
};

/// Rewrites the header of a safetensors file with edited metadata and copies the data section
/// byte for byte (same tensor order and offsets, kernel copies), so AutoV3 and every
/// data-section hash stay the same.
Result<MetaReport> edit_metadata(const std::string& in_path, const std::string& out_path,
                                 const MetaEdit& edit, const RunOptions& run,
                                 const SafetensorsLimits& limits = {});

}  // namespace ckptkit

// --- component fingerprints ------------------------------------------------------------------

namespace ckptkit {

/// SHA-256 of each component of `anatomy` (same order; "" where none applies), defined so
/// that the same part fingerprints the same wherever it sits: a part (diffusion model, text
/// encoder, VAE) is taken in the naming `split` writes it in (prefix removed, OpenCLIP
/// converted to HF), other components with their prefix removed; its tensors are sorted by
/// that name and each contributes `name \0 dtype \0 d0,d1,… \0` followed by its bytes in C
/// order. Reads every tensor once. `checkpoint`: the tensor table `anatomy` was made from,
/// when the caller has it (the file's structure is then not read again).
Result<std::vector<std::string>> component_fingerprints(const std::string& path,
                                                        const Anatomy& anatomy,
                                                        const ReadLimits& limits = {},
                                                        const Checkpoint* checkpoint = nullptr);

}  // namespace ckptkit
