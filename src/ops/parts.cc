#include "ops/parts.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <map>
#include <optional>

#include "io/errors.h"
#include "model/gguf_policy.h"

namespace ckptkit::detail {
namespace {

uint64_t elsize(DType d) { return dtype_info(d).bits / 8; }

/// C-order strides of a shape, in elements.
std::vector<uint64_t> c_strides(const Shape& shape) {
  std::vector<uint64_t> s(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) s[d - 1] = s[d] * shape[d];
  return s;
}

/// Rows [r0, r1) of a tensor (a slice along dimension 0): only `begin` and the shape change.
Piece rows(const Piece& p, uint64_t r0, uint64_t r1) {
  Piece out = p;
  const std::vector<uint64_t> strides =
      p.info.strides.empty() ? c_strides(p.info.shape) : p.info.strides;
  out.info.begin = p.info.begin + r0 * strides[0] * elsize(p.info.dtype);
  out.info.shape[0] = r1 - r0;
  out.info.end = out.info.begin + out.info.numel() * elsize(p.info.dtype);
  return out;
}

/// The transpose of a 2-D tensor, as a strided view (the gather producer materializes it).
Piece transposed(const Piece& p) {
  Piece out = p;
  std::vector<uint64_t> strides = p.info.strides.empty() ? c_strides(p.info.shape) : p.info.strides;
  std::swap(strides[0], strides[1]);
  std::swap(out.info.shape[0], out.info.shape[1]);
  out.info.strides = strides;
  return out;
}

/// "transformer.resblocks.12.attn.in_proj_weight" → (12, "attn.in_proj_weight").
std::optional<std::pair<unsigned, std::string_view>> block_of(std::string_view name,
                                                              std::string_view head) {
  if (!name.starts_with(head)) return std::nullopt;
  name.remove_prefix(head.size());
  unsigned n = 0;
  auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), n);
  if (ec != std::errc() || p == name.data() || p == name.data() + name.size() || *p != '.')
    return std::nullopt;
  return std::make_pair(n, name.substr(static_cast<size_t>(p - name.data()) + 1));
}

struct Rename {
  std::string_view openclip;
  std::string_view hf;
};
// Inside a block.
constexpr Rename kBlockRenames[] = {
    {"ln_1.weight", "layer_norm1.weight"},
    {"ln_1.bias", "layer_norm1.bias"},
    {"ln_2.weight", "layer_norm2.weight"},
    {"ln_2.bias", "layer_norm2.bias"},
    {"attn.out_proj.weight", "self_attn.out_proj.weight"},
    {"attn.out_proj.bias", "self_attn.out_proj.bias"},
    {"mlp.c_fc.weight", "mlp.fc1.weight"},
    {"mlp.c_fc.bias", "mlp.fc1.bias"},
    {"mlp.c_proj.weight", "mlp.fc2.weight"},
    {"mlp.c_proj.bias", "mlp.fc2.bias"},
};
constexpr Rename kTopRenames[] = {
    {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
    {"ln_final.weight", "text_model.final_layer_norm.weight"},
    {"ln_final.bias", "text_model.final_layer_norm.bias"},
    {"logit_scale", "logit_scale"},
};
constexpr std::string_view kQkv[] = {"q_proj", "k_proj", "v_proj"};

Status not_convertible(const std::string& path, std::string_view name, std::string_view why) {
  return Status(ErrorCode::kUnsupported,
                fmt::format("cannot convert the CLIP text encoder between OpenCLIP and Hugging "
                            "Face names: {}",
                            why),
                path, kNoOffset, std::string(name));
}

/// The conversions cut rows and transpose in place: whole bytes per element, no GGUF blocks.
Status check_convertible(const std::string& path, const PartTensor& t) {
  if (is_quantized(t.dtype))
    return not_convertible(path, t.name,
                           fmt::format("it is stored as {} blocks, which cannot be cut into rows "
                                       "or transposed in place; dequantize the file first "
                                       "(ckptkit convert IN.gguf -o OUT.safetensors)",
                                       dtype_name(t.dtype)));
  if (dtype_info(t.dtype).bits % 8 != 0)
    return not_convertible(path, t.name, "its dtype is smaller than a byte");
  return Status::ok();
}

}  // namespace

std::unique_ptr<TensorSource> TensorSource::of_file(const OpenedInput& in) {
  auto s = std::make_unique<TensorSource>();
  s->path = in.file().path();
  s->ck = &in.checkpoint();
  s->a = analyze(in.checkpoint(), &in.file());
  s->in = &in;
  s->files = {&in};
  return s;
}

std::unique_ptr<TensorSource> TensorSource::of_tensors(
    std::string path, std::vector<PartTensor> tensors, std::map<std::string, std::string> metadata,
    const std::vector<std::unique_ptr<OpenedInput>>& inputs, uint64_t input_bytes) {
  auto s = std::make_unique<TensorSource>();
  s->path = std::move(path);
  s->table.path = s->path;
  s->table.file_size = input_bytes;
  s->table.metadata = std::move(metadata);
  uint64_t offset = 0;
  for (const PartTensor& t : tensors) {
    TensorInfo info;
    info.name = t.name;
    info.dtype = t.dtype;
    info.shape = t.shape;
    info.begin = offset;
    for (const Piece& piece : t.pieces) offset += piece.info.nbytes();
    info.end = offset;
    s->table.tensors.push_back(std::move(info));
  }
  s->ck = &s->table;
  s->a = analyze(s->table);
  s->whole = std::move(tensors);
  for (const auto& in : inputs) s->files.push_back(in.get());
  return s;
}

PartTensor TensorSource::tensor(size_t i) const {
  return in ? whole_tensor(*in, ck->tensors[i]) : whole[i];
}

std::vector<PartTensor> TensorSource::component(const Component& c) const {
  if (in) return component_tensors(*in, c);
  std::vector<PartTensor> out;
  for (size_t i : c.tensors) {
    PartTensor p = whole[i];
    p.name = component_local_name(c, p.name);
    out.push_back(std::move(p));
  }
  return out;
}

void TensorSource::add_inputs(Plan& plan) const {
  for (const OpenedInput* f : files) f->add_inputs(plan);
}

PartTensor whole_tensor(const OpenedInput& in, const TensorInfo& t) {
  auto [file, info] = in.locate(t);
  return {t.name, t.dtype, t.shape, {{file, info}}};
}

std::string component_local_name(const Component& c, std::string_view name) {
  // SD3/FLUX text encoders sit under "<prefix>transformer." except their logit_scale.
  const std::string_view inner =
      c.prefix.starts_with("text_encoders.") ? std::string_view("transformer.") : "";
  return strip_component_prefix(name, c.prefix, inner);
}

std::vector<PartTensor> component_tensors(const OpenedInput& in, const Component& c) {
  std::vector<PartTensor> out;
  out.reserve(c.tensors.size());
  // A T5 GGUF's llama.cpp names are read as the Hugging Face names the anatomy saw.
  const bool llama_t5 = uses_llama_t5_names(in.checkpoint());
  for (size_t i : c.tensors) {
    const TensorInfo& t = in.checkpoint().tensors[i];
    PartTensor p = whole_tensor(in, t);
    std::optional<std::string> hf = llama_t5 ? t5_hf_name(t.name) : std::nullopt;
    p.name = component_local_name(c, hf ? *hf : t.name);
    out.push_back(std::move(p));
  }
  return out;
}

Result<std::vector<PartTensor>> openclip_to_hf(std::vector<PartTensor> in,
                                               const std::string& path) {
  std::vector<PartTensor> out;
  out.reserve(in.size() + in.size() / 6);
  for (PartTensor& t : in) {
    CKPT_RETURN_IF_ERROR(check_convertible(path, t));
    bool done = false;
    for (const Rename& r : kTopRenames)
      if (t.name == r.openclip) {
        t.name = std::string(r.hf);
        out.push_back(std::move(t));
        done = true;
        break;
      }
    if (done) continue;
    if (t.name == "text_projection") {
      if (t.shape.size() != 2) return not_convertible(path, t.name, "it is not a matrix");
      if (t.pieces.size() != 1) return not_convertible(path, t.name, "it is not one tensor");
      PartTensor p{
          "text_projection.weight", t.dtype, {t.shape[1], t.shape[0]}, {transposed(t.pieces[0])}};
      out.push_back(std::move(p));
      continue;
    }
    auto blk = block_of(t.name, "transformer.resblocks.");
    if (!blk) return not_convertible(path, t.name, "the name has no Hugging Face counterpart");
    const auto [n, rest] = *blk;
    const std::string layer = fmt::format("text_model.encoder.layers.{}.", n);
    if (rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias") {
      const bool weight = rest == "attn.in_proj_weight";
      if (t.shape.empty() || t.shape[0] % 3 != 0 || (weight && t.shape.size() != 2) ||
          (!weight && t.shape.size() != 1))
        return not_convertible(path, t.name, "the fused projection is not 3 equal parts");
      const uint64_t w = t.shape[0] / 3;
      for (unsigned k = 0; k < 3; ++k) {
        out.push_back(row_slice(
            t, k * w, w,
            fmt::format("{}self_attn.{}.{}", layer, kQkv[k], weight ? "weight" : "bias")));
      }
      continue;
    }
    for (const Rename& r : kBlockRenames)
      if (rest == r.openclip) {
        t.name = layer + std::string(r.hf);
        out.push_back(std::move(t));
        done = true;
        break;
      }
    if (!done) return not_convertible(path, t.name, "the name has no Hugging Face counterpart");
  }
  return out;
}

Result<std::vector<PartTensor>> hf_to_openclip(std::vector<PartTensor> in, const std::string& path,
                                               std::vector<std::string>* dropped) {
  std::vector<PartTensor> out;
  out.reserve(in.size());
  // q/k/v of each layer, gathered before they are fused.
  std::map<std::pair<unsigned, bool>, std::array<std::optional<PartTensor>, 3>> qkv;
  for (PartTensor& t : in) {
    CKPT_RETURN_IF_ERROR(check_convertible(path, t));
    bool done = false;
    for (const Rename& r : kTopRenames)
      if (t.name == r.hf) {
        t.name = std::string(r.openclip);
        out.push_back(std::move(t));
        done = true;
        break;
      }
    if (done) continue;
    if (t.name == "text_projection.weight") {
      if (t.shape.size() != 2) return not_convertible(path, t.name, "it is not a matrix");
      if (t.pieces.size() != 1) return not_convertible(path, t.name, "it is not one tensor");
      out.push_back(
          {"text_projection", t.dtype, {t.shape[1], t.shape[0]}, {transposed(t.pieces[0])}});
      continue;
    }
    if (t.name == "text_model.embeddings.position_ids") {
      if (dropped) dropped->push_back(t.name);
      continue;
    }
    auto blk = block_of(t.name, "text_model.encoder.layers.");
    if (!blk) return not_convertible(path, t.name, "the name has no OpenCLIP counterpart");
    const auto [n, rest] = *blk;
    const std::string block = fmt::format("transformer.resblocks.{}.", n);
    for (unsigned k = 0; k < 3; ++k)
      for (bool weight : {true, false})
        if (rest == fmt::format("self_attn.{}.{}", kQkv[k], weight ? "weight" : "bias")) {
          qkv[{n, weight}][k] = std::move(t);
          done = true;
        }
    if (done) continue;
    for (const Rename& r : kBlockRenames)
      if (rest == r.hf) {
        t.name = block + std::string(r.openclip);
        out.push_back(std::move(t));
        done = true;
        break;
      }
    if (!done) return not_convertible(path, t.name, "the name has no OpenCLIP counterpart");
  }
  for (auto& [key, parts] : qkv) {
    const auto [n, weight] = key;
    const std::string name =
        fmt::format("transformer.resblocks.{}.attn.in_proj_{}", n, weight ? "weight" : "bias");
    for (unsigned k = 0; k < 3; ++k)
      if (!parts[k])
        return not_convertible(
            path, name,
            fmt::format("layer {} has no self_attn.{}.{}", n, kQkv[k], weight ? "weight" : "bias"));
    const PartTensor& q = *parts[0];
    for (unsigned k = 1; k < 3; ++k)
      if (parts[k]->dtype != q.dtype || parts[k]->shape != q.shape)
        return not_convertible(path, name, "q, k and v differ in dtype or shape");
    PartTensor fused{name, q.dtype, q.shape, {}};
    fused.shape[0] *= 3;
    for (unsigned k = 0; k < 3; ++k)
      for (const Piece& p : parts[k]->pieces) fused.pieces.push_back(p);
    out.push_back(std::move(fused));
  }
  return out;
}

PartTensor row_slice(const PartTensor& t, uint64_t r0, uint64_t count, std::string name) {
  PartTensor out{std::move(name), t.dtype, t.shape, {}};
  out.shape[0] = count;
  uint64_t at = 0;  // first row of the current piece
  for (const Piece& p : t.pieces) {
    const uint64_t n = p.info.shape[0];
    const uint64_t b = std::max(at, r0), e = std::min(at + n, r0 + count);
    if (b < e) out.pieces.push_back(rows(p, b - at, e - at));
    at += n;
  }
  return out;
}

PartTensor concat_rows(std::vector<PartTensor> parts, std::string name) {
  PartTensor out{std::move(name), parts.front().dtype, parts.front().shape, {}};
  out.shape[0] = 0;
  for (PartTensor& p : parts) {
    out.shape[0] += p.shape[0];
    for (Piece& piece : p.pieces) out.pieces.push_back(std::move(piece));
  }
  return out;
}

std::unique_ptr<TensorProducer> part_producer(const PartTensor& t, DType to) {
  if (t.pieces.size() == 1) return make_tensor_producer(t.pieces[0].file, t.pieces[0].info, 0, to);
  std::vector<std::unique_ptr<TensorProducer>> parts;
  std::vector<uint64_t> counts;
  for (const Piece& p : t.pieces) {
    parts.push_back(make_tensor_producer(p.file, p.info, 0, to));
    counts.push_back(p.info.numel());
  }
  return make_concat_producer(std::move(parts), std::move(counts), to);
}

}  // namespace ckptkit::detail
