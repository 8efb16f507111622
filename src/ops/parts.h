// Parts of a model as tensors to write: names in some naming, each with where its bytes come
// from. Renames copy bytes; the only computations are the exact, reversible ones that
// OpenCLIP ↔ Hugging Face CLIP needs (a fused q/k/v split into rows or concatenated back, and
// a transposed text projection).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/ops.h"
#include "model/families.h"
#include "ops/input.h"

namespace ckptkit::detail {

/// Where (part of) a tensor's bytes are: a file and a description with an absolute `begin`.
struct Piece {
  const InputFile* file;
  TensorInfo info;
};

struct PartTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<Piece> pieces;  ///< more than one: concatenated along the first dimension
};

/// A tensor's name inside its part: the component's prefix (and an SD3/FLUX text encoder's
/// "transformer.") removed.
std::string component_local_name(const Component& c, std::string_view name);

/// The tensors of component `c` of `in` with the prefix removed, in the component's naming.
std::vector<PartTensor> component_tensors(const OpenedInput& in, const Component& c);

/// One tensor of `in` unchanged (its own name).
PartTensor whole_tensor(const OpenedInput& in, const TensorInfo& t);

/// OpenCLIP text transformer names → Hugging Face CLIPTextModel names. Exact: rows of the
/// fused in_proj become q/k/v, `text_projection` is transposed into `text_projection.weight`.
Result<std::vector<PartTensor>> openclip_to_hf(std::vector<PartTensor> in, const std::string& path);

/// The reverse. Names with no OpenCLIP counterpart (`text_model.embeddings.position_ids`) are
/// left out and listed in `dropped`.
Result<std::vector<PartTensor>> hf_to_openclip(std::vector<PartTensor> in, const std::string& path,
                                               std::vector<std::string>* dropped);

/// A diffusers folder read as the single file it converts to: every tensor under the family's
/// single-file name, its bytes in the folder's files (kept open by `inputs`), and the single
/// file's metadata (from ckptkit_extra.safetensors when the folder has one). `out_path`: where
/// a `.bin` part's storages may be inflated. Fills the report's family, architecture, input
/// bytes, notes and dropped names. Defined in ops/diffusers.cc.
struct FolderAsSingle {
  std::vector<std::unique_ptr<OpenedInput>> inputs;
  std::vector<PartTensor> tensors;
  std::map<std::string, std::string> metadata;
};
Result<FolderAsSingle> read_folder_as_single(const std::string& in_dir,
                                             const std::string& out_path,
                                             const ReshapeOptions& o, ReshapeReport& report);

/// Rows [r0, r0 + count) of `t` (dimension 0), named `name`: byte ranges of its pieces, no
/// bytes move. `t` must have at least one dimension and whole-byte elements.
PartTensor row_slice(const PartTensor& t, uint64_t r0, uint64_t count, std::string name);

/// `parts` one after the other along dimension 0 (same dtype and trailing dimensions, which
/// the caller checked), named `name`.
PartTensor concat_rows(std::vector<PartTensor> parts, std::string name);

/// A diffusion model and part files (assemble's inputs) as the single file assemble writes:
/// every tensor under its single-file name, in assemble's order, and that file's metadata.
/// Defined in ops/reshape.cc.
struct AssembledSingle {
  std::vector<std::unique_ptr<OpenedInput>> inputs;
  std::vector<PartTensor> tensors;
  std::map<std::string, std::string> metadata;
};
Result<AssembledSingle> assemble_as_single(const PartPaths& paths, const std::string& out_path,
                                           const ReshapeOptions& o, bool allow_missing,
                                           ReshapeReport& report);

/// What an op takes apart: a checkpoint table, its analysis and where each tensor's bytes are.
/// Either one opened file (`of_file`) or tensors gathered from several files under the names
/// of one single file (`of_tensors`: a diffusers folder, or a transformer and its parts), whose
/// table is made up for the anatomy (offsets are cumulative sizes). The inputs must outlive it.
struct TensorSource {
  std::string path;
  Checkpoint table;                 ///< of_tensors only; `ck` points here then
  const Checkpoint* ck = nullptr;
  Anatomy a;
  const OpenedInput* in = nullptr;  ///< the single file; null for gathered tensors
  std::vector<PartTensor> whole;    ///< gathered tensors, as ck->tensors
  std::vector<const OpenedInput*> files;

  static std::unique_ptr<TensorSource> of_file(const OpenedInput& in);
  static std::unique_ptr<TensorSource> of_tensors(
      std::string path, std::vector<PartTensor> tensors, std::map<std::string, std::string> metadata,
      const std::vector<std::unique_ptr<OpenedInput>>& inputs, uint64_t input_bytes);

  PartTensor tensor(size_t i) const;                         ///< tensor i, its own name
  std::vector<PartTensor> component(const Component& c) const;  ///< component_tensors
  void add_inputs(Plan& plan) const;
};

/// A producer of `t`, cast to `to`.
std::unique_ptr<TensorProducer> part_producer(const PartTensor& t, DType to);

}  // namespace ckptkit::detail
