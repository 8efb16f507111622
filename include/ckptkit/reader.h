// ckptkit/reader.h — open any supported checkpoint file by its content, never its name.
//
//   safetensors      strict header reader (ckptkit/safetensors.h)
//   torch-zip        torch.save since PyTorch 1.6 (.ckpt/.pt/.pth/.bin): a zip archive with
//                    `<root>/data.pkl` (the object pickle) and `<root>/data/<key>` (storages)
//   torch-legacy     torch.save before 1.6: magic, protocol and system-info pickles, the object
//                    pickle, the storage-key list, then each storage as u64 count + raw bytes
//   gguf             GGUF v2/v3 (ckptkit/gguf.h)
//
// PyTorch files are read without running anything: the pickle is interpreted into a passive
// graph (see src/formats/torch/pickle.h) and only tensor descriptions are taken from it. The
// state dict is found where training code puts it: the top level, or under `state_dict`,
// `model`, `module`, `params_ema`, … (reported in Checkpoint::torch).
//
// Thread safety: reentrant.
#pragma once

#include <string>

#include "ckptkit/gguf.h"
#include "ckptkit/safetensors.h"
#include "ckptkit/status.h"
#include "ckptkit/tensor.h"

namespace ckptkit {

struct ReadLimits {
  SafetensorsLimits safetensors;
  GgufLimits gguf;
  uint64_t max_pickle_bytes = 1ull << 30;  ///< the object pickle is read into memory
  uint64_t max_pickle_nodes = 1ull << 26;  ///< objects the pickle may build
};

/// Opens `path`, recognizes its format from its first bytes and reads its tensor table. Files
/// that are not checkpoints (an HTML page, a Git LFS pointer, …) are named as such.
Result<Checkpoint> read_checkpoint(const std::string& path, const ReadLimits& limits = {});

}  // namespace ckptkit
