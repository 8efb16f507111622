// ckptkit/merge.h — merging models tensor by tensor, streamed, in bounded memory.
//
// A merge reads every input once (twice or three times for the tensors of `slerp` and `ties`,
// which need whole-tensor statistics first) and writes one safetensors file through the
// streaming executor: peak memory is the executor's buffers whatever the models' size.
//
// Every method is computed in F32 in the order of operations docs/merge.md gives, with no
// fused multiply-add (the kernels are built with -ffp-contract=off), so a merge gives the same
// bits on every CPU. Scalars (α, weights, 1/(1−p)) are computed in double and rounded to F32
// once. Inputs are read in their own dtype and widened to F32 exactly; the result is rounded
// once to the output dtype (round to nearest even).
//
// Naming: the inputs are A, B, C, … in the order given. A is the base: its tensor names,
// shapes, non-float tensors (position_ids) and extra channels are the output's.
//
// Thread safety: all functions are reentrant.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/dtype.h"
#include "ckptkit/ops.h"
#include "ckptkit/safetensors.h"
#include "ckptkit/status.h"

namespace ckptkit {

struct Anatomy;

enum class MergeMethod : uint8_t {
  kWeightedSum,      ///< A·(1−α) + B·α; with N inputs Σ wᵢ·Xᵢ
  kAddDifference,    ///< A + (B − C)·α
  kTrainDifference,  ///< supermerger's "train difference" of A, B, C
  kSlerp,            ///< spherical interpolation of A and B per tensor, t = α
  kTies,      ///< A + α·TIES(B−A, C−A, …): trim to density, elect sign, disjoint mean
  kDare,      ///< A + α·Σ wᵢ·DARE(Xᵢ−A): drop with probability p, rescale by 1/(1−p)
  kDareTies,  ///< DARE's drop and rescale, then TIES's sign election and disjoint mean
};

/// "weighted-sum", "add-difference", …
std::string_view merge_method_name(MergeMethod m);
/// Accepts the names above (and `_` for `-`); nullopt when unknown.
std::optional<MergeMethod> parse_merge_method(std::string_view name);
/// Every method, in documentation order.
std::vector<MergeMethod> all_merge_methods();
/// How many inputs a method takes: {minimum, maximum} (maximum 0: no limit).
std::pair<size_t, size_t> merge_method_arity(MergeMethod m);

/// What to do with a tensor of A that some other input lacks (or has with another shape that
/// no rule reconciles).
enum class MissingPolicy : uint8_t {
  kTakeA,  ///< write A's tensor unchanged and list it in the report (default)
  kSkip,   ///< leave it out of the output and list it
  kError,  ///< refuse the merge, naming the tensors
};
std::string_view missing_policy_name(MissingPolicy p);
std::optional<MissingPolicy> parse_missing_policy(std::string_view name);

/// Everything that defines a merge; what a recipe file holds.
struct MergeSpec {
  std::vector<std::string> inputs;  ///< A, B, C, … (paths)
  MergeMethod method = MergeMethod::kWeightedSum;
  /// α for every tensor whose group has no value of its own. Range [0, 1] unless
  /// allow_extrapolation. Its meaning per method is in docs/merge.md.
  double alpha = 0.5;
  /// α per group: block names of the family (IN00…, M00, OUT…, joint_blocks.N,
  /// double_blocks.N, single_blocks.N), `text_encoder`, `vae` and `other`.
  std::map<std::string, double> block_alpha;
  /// A supermerger block-weight string (parse_block_weights), applied once the family is
  /// known; entries of block_alpha override its values.
  std::string block_string;
  /// Per-input weights. weighted-sum with N inputs: one per input (A included), summing to 1
  /// (or normalized when `normalize`); empty with two inputs means (1−α, α) and with more
  /// inputs equal weights. ties/dare/dare-ties: one per input after A (default: 1 for ties
  /// and dare-ties, 1/(N−1) for dare).
  std::vector<double> weights;
  bool normalize = false;
  bool allow_extrapolation = false;
  double density = 0.2;        ///< ties: fraction of each task vector's entries kept (0, 1]
  double drop = 0.9;           ///< dare, dare-ties: drop probability p in [0, 1)
  uint64_t seed = 0;           ///< dare, dare-ties: the random stream (see docs/merge.md)
  std::optional<DType> dtype;  ///< output float dtype; nullopt: A's dtype of each tensor
  MissingPolicy missing = MissingPolicy::kTakeA;
  /// Whole components copied unchanged from one input instead of merged: "vae" or
  /// "text_encoder" → input index (0 = A).
  std::map<std::string, size_t> part_from;
  std::string title;         ///< modelspec.title; "" derives one from the inputs
  bool hash_inputs = false;  ///< record each input's AutoV2 in the provenance (reads them)
};

struct MergeOptions {
  MergeSpec spec;
  SafetensorsLimits limits;
  RunOptions run;
  bool allow_dangerous = false;  ///< see ConvertOptions
  bool dry_run = false;          ///< plan and report, write nothing
};

/// The α groups of one model and what they hold.
struct MergeGroup {
  std::string name;  ///< IN00, M00, OUT11, joint_blocks.3, text_encoder, vae, other
  uint64_t tensors = 0;
  uint64_t parameters = 0;
};

struct MergeInputInfo {
  std::string path;
  std::string name;  ///< file name
  uint64_t bytes = 0;
  std::string architecture;
  std::string autov2;  ///< with hash_inputs
};

/// One group's part of the merge, for the report.
struct MergeGroupPlan {
  std::string name;
  double alpha = 0;
  std::string action;  ///< "merged", "copied from A", "copied from B", …
  uint64_t tensors = 0;
};

struct MergeReport {
  std::string architecture;
  std::string family;
  std::string output;
  std::vector<MergeInputInfo> inputs;
  std::vector<MergeGroupPlan> groups;
  uint64_t tensors_merged = 0;
  uint64_t tensors_copied = 0;  ///< taken unchanged (or only cast) from one input
  /// Tensors of A some input lacks or has with another shape, per MissingPolicy.
  std::vector<std::string> missing;
  std::vector<std::string> not_in_a;  ///< tensors of B, C, … that A lacks (never written)
  /// Tensors where A has more channels than the others along one dimension (inpainting
  /// conv_in, FLUX Fill img_in): the overlap is merged, the rest is A's.
  std::vector<std::string> partial;
  std::vector<std::string> notes;
  std::string recipe_json;  ///< what `ckptkit.recipe` holds
  RunStats stats;
  uint64_t input_bytes = 0;
};

/// Merges spec.inputs into `out_path`. Refuses, before writing anything: a missing or unreadable
/// input, a dangerous PyTorch input (unless allow_dangerous), inputs of different families
/// (SD1 with SDXL, …) or an unknown architecture, a block name the family does not have, α or
/// weights out of range, weighted-sum weights that do not sum to 1 (unless normalize).
Result<MergeReport> merge_models(const std::string& out_path, const MergeOptions& options);

/// The α groups of the model in `path`, in order (blocks first, then text_encoder, vae, other),
/// with the family's name ("sd1", "sdxl", "sd3", "flux").
struct MergeBlocks {
  std::string architecture;
  std::string family;
  std::vector<MergeGroup> groups;
};
Result<MergeBlocks> list_merge_blocks(const std::string& path,
                                      const SafetensorsLimits& limits = {});

/// The block names a family has, in order ("sd1" and "sd2": IN00–IN11, M00, OUT00–OUT11;
/// "sdxl": IN00–IN08, M00, OUT00–OUT08; "sd3": joint_blocks.0–N−1 with N from the model, so
/// `depth` is needed; "flux": double_blocks.0–18 and single_blocks.0–37 for depth 0, else
/// as given). Then text_encoder, vae, other.
std::vector<std::string> merge_block_names(std::string_view family, unsigned depth = 0,
                                           unsigned depth2 = 0);

/// The group of a tensor key of a model of `family` ("" when the key is outside every named
/// block: the caller then uses its component: text_encoder, vae or other). `key` is the name
/// within its component (prefix removed). UNet: input_blocks.N → INnn, middle_block → M00,
/// output_blocks.N → OUTnn, time_embed and label_emb → IN00, out → the last OUT (the
/// convention of kohya's block-weighted merge and supermerger).
std::string merge_block_of(std::string_view family, std::string_view key);

/// The α group of every tensor of `ck` analyzed as `a` (by index): its block name, or
/// text_encoder, vae, other.
std::vector<std::string> merge_groups(const Checkpoint& ck, const Anatomy& a);

/// A supermerger block-weight string: 25 values (IN00…OUT11) or 26 (BASE first); for SDXL
/// also 19/20 values, and of 25/26 only the positions SDXL has are used (IN09–IN11 and
/// OUT09–OUT11 are ignored, as supermerger does). BASE sets `text_encoder`. Values are
/// separated by commas (spaces allowed).
Result<std::map<std::string, double>> parse_block_weights(std::string_view text,
                                                          std::string_view family);

/// A TOML recipe (docs/merge.md). Relative input paths resolve against `base_dir` (the
/// recipe's folder). `output` receives the recipe's `output` key, "" if none.
struct Recipe {
  MergeSpec spec;
  std::string output;
};
Result<Recipe> parse_recipe(std::string_view toml_text, const std::string& source_name,
                            const std::string& base_dir);

}  // namespace ckptkit
