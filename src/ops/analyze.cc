// analyze(): the name/shape detection of src/model/anatomy.cc plus the one value check that
// inspect makes itself, CLIP's position_ids (77 small integers that merge tools break).
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/cast.h"
#include "model/families.h"
#include "model/gguf_policy.h"
#include "ops/input.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

constexpr uint64_t kMaxPositions = 4096;

void check_position_ids(const Checkpoint& ck, const InputFile* file, Anatomy& a) {
  for (const Component& c : a.components) {
    if (c.role != Role::kTextEncoder || c.naming != Naming::kHf) continue;
    for (size_t i : c.tensors) {
      const TensorInfo& t = ck.tensors[i];
      if (!t.name.ends_with("text_model.embeddings.position_ids")) continue;
      if (is_float(t.dtype))
        a.defects.push_back(
            {"position-ids-float",
             "warning",
             fmt::format("{} is {}, not an integer type: a merge or conversion cast it; "
                         "loaders may index with rounded-down values",
                         t.name, dtype_name(t.dtype)),
             {t.name}});
      if (!file) continue;
      auto values = detail::read_small_values(ck, *file, t, kMaxPositions);
      if (!values) continue;
      for (size_t k = 0; k < values->size(); ++k) {
        if ((*values)[k] == static_cast<double>(k)) continue;
        a.defects.push_back(
            {"position-ids-broken",
             "warning",
             fmt::format("{} should count 0..{} but entry {} is {}: tokens after it are read "
                         "with the wrong position (a known result of some merges; the "
                         "values should be rewritten as integers)",
                         t.name, values->size() - 1, k, (*values)[k]),
             {t.name}});
        break;
      }
    }
  }
}

}  // namespace

namespace detail {

std::optional<std::vector<double>> read_small_values(const Checkpoint& ck, const InputFile& file,
                                                     const TensorInfo& t, uint64_t max_elements) {
  const uint64_t n = t.numel();
  if (n == 0 || n > max_elements) return std::nullopt;
  if (t.storage >= 0 && ck.torch.storages[static_cast<size_t>(t.storage)].deflated)
    return std::nullopt;
  std::vector<double> out(n);
  TensorInfo where = t;
  where.begin = ck.data_offset + t.begin;
  where.end = where.begin + t.nbytes();
  if (t.dtype == DType::I64 || t.dtype == DType::I32) {
    auto p = make_tensor_producer(&file, where, 0, t.dtype);
    const unsigned size = dtype_info(t.dtype).bits / 8;
    std::vector<uint8_t> bytes(n * size), scratch(n * size);
    if (!p->produce(0, n, bytes, scratch).is_ok()) return std::nullopt;
    for (uint64_t i = 0; i < n; ++i) {
      if (size == 8) {
        int64_t v;
        std::memcpy(&v, &bytes[i * 8], 8);
        out[i] = static_cast<double>(v);
      } else {
        int32_t v;
        std::memcpy(&v, &bytes[i * 4], 4);
        out[i] = v;
      }
    }
    return out;
  }
  if (!is_float(t.dtype) || !can_cast(t.dtype, DType::F32)) return std::nullopt;
  auto p = make_tensor_producer(&file, where, 0, DType::F32);
  std::vector<uint8_t> bytes(n * 4), scratch(n * 8);
  if (!p->produce(0, n, bytes, scratch).is_ok()) return std::nullopt;
  for (uint64_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, &bytes[i * 4], 4);
    out[i] = v;
  }
  return out;
}

}  // namespace detail

Anatomy analyze(const Checkpoint& ck, const InputFile* file) {
  // A T5 GGUF names its tensors as llama.cpp does: analyzed under the Hugging Face names.
  if (detail::uses_llama_t5_names(ck)) {
    Checkpoint hf = ck;
    for (TensorInfo& t : hf.tensors)
      if (auto n = detail::t5_hf_name(t.name)) t.name = *n;
    Anatomy a = detail::analyze_layout(hf);
    check_position_ids(hf, file, a);
    return a;
  }
  Anatomy a = detail::analyze_layout(ck);
  check_position_ids(ck, file, a);
  return a;
}

}  // namespace ckptkit
