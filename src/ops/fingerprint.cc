// Per-component fingerprints: the SHA-256 of a component's tensors in a naming that does not
// depend on where the component sits (see ckptkit/ops.h for the definition).
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "ckptkit/ops.h"
#include "hash/sha256.h"
#include "io/file.h"
#include "ops/input.h"
#include "ops/parts.h"

namespace ckptkit {

Result<std::vector<std::string>> component_fingerprints(const std::string& path,
                                                        const Anatomy& anatomy,
                                                        const ReadLimits& limits,
                                                        const Checkpoint* checkpoint) {
  detail::OpenOptions open;
  open.limits = limits;
  open.allow_dangerous = true;  // only tensor bytes are read; nothing is ever run
  open.verb = "fingerprint";
  if (checkpoint) {
    open.checkpoint = checkpoint;
    open.verdict = Verdict::kSafe;  // not judged here: only tensor bytes are read
  }
  // Deflated storages (rare) are inflated into an unlinked temporary in the temp directory.
  const std::string spill_beside = (std::filesystem::temp_directory_path() / "x").string();
  CKPT_ASSIGN_OR_RETURN(auto in, detail::OpenedInput::open(path, spill_beside, open));
  constexpr uint64_t kChunkBytes = 8ull << 20;
  AlignedBuffer out(kChunkBytes), scratch(2 * kChunkBytes);
  std::vector<std::string> result;
  for (const Component& c : anatomy.components) {
    std::vector<detail::PartTensor> ts = detail::component_tensors(*in, c);
    if (c.naming == Naming::kOpenClip) {
      CKPT_ASSIGN_OR_RETURN(ts, detail::openclip_to_hf(std::move(ts), path));
    }
    std::sort(ts.begin(), ts.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    Sha256 sha;
    for (const detail::PartTensor& t : ts) {
      std::string dims;
      for (size_t i = 0; i < t.shape.size(); ++i)
        dims += fmt::format("{}{}", i ? "," : "", t.shape[i]);
      sha.update(fmt::format("{}{}{}{}{}{}", t.name, '\0', dtype_name(t.dtype), '\0', dims, '\0'));
      const uint64_t numel = shape_numel(t.shape).value_or(0);
      const unsigned bits = dtype_info(t.dtype).bits;
      if (numel == 0 || bits % 8 != 0) {
        if (numel != 0)  // sub-byte types: whole bytes of the plain range
          for (const detail::Piece& p : t.pieces) {
            std::vector<uint8_t> bytes(p.info.nbytes());
            CKPT_RETURN_IF_ERROR(p.file->pread_exact(bytes, p.info.begin, "tensor data"));
            sha.update(bytes);
          }
        continue;
      }
      auto producer = detail::part_producer(t, t.dtype);
      const uint64_t per_elem =
          std::max<uint64_t>({bits / 8u, producer->scratch_bytes_per_element(), 1});
      const uint64_t per_chunk = std::max<uint64_t>(1, kChunkBytes / per_elem);
      for (uint64_t first = 0; first < numel; first += per_chunk) {
        const uint64_t n = std::min(per_chunk, numel - first);
        auto dst = out.span().first(n * bits / 8);
        Status st = producer->produce(first, n, dst, scratch.span());
        if (!st.is_ok()) return Status(st.code(), st.message(), st.path(), st.offset(), t.name);
        sha.update(dst);
      }
    }
    result.push_back(sha.hex());
  }
  return result;
}

}  // namespace ckptkit
