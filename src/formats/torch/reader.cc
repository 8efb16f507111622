// PyTorch checkpoints: tensor descriptions from the pickle's passive graph, storages located in
// the zip archive or the legacy stream. Nothing a pickle names is imported or called.
//
// How torch.save describes a tensor (every version since 1.0):
//
//   torch._utils._rebuild_tensor_v2(                       REDUCE of an allowlisted global
//       BINPERSID ('storage', torch.FloatStorage, '<key>', 'cpu', <numel>),
//       <storage offset>, (<size>...), (<stride>...), <requires_grad>, OrderedDict() [, meta])
//
// optionally wrapped in torch._utils._rebuild_parameter(tensor, requires_grad, hooks) or
// torch._tensor._rebuild_from_type_v2(func, type, args, state). The storage's bytes are the zip
// entry `<root>/data/<key>` (torch ≥ 1.6) or the key's record after the pickles (legacy).
#include "formats/torch/reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "formats/gguf/reader.h"
#include "formats/safetensors/internal.h"
#include "formats/sniff.h"
#include "io/errors.h"
#include "io/source.h"

namespace ckptkit {
namespace {

using pickle::Global;
using pickle::Kind;
using pickle::Meaning;
using pickle::Node;
using pickle::NodeId;
using pickle::Program;

constexpr int kMaxDepth = 64;  ///< nesting of dicts / wrapper calls followed

/// The place the pickle came from, for messages.
struct PickleSource {
  const std::string& path;
  std::string entry;  ///< "archive/data.pkl", or "" for legacy files
};

Status bad(const PickleSource& src, uint64_t offset, std::string tensor, std::string message) {
  std::string m =
      src.entry.empty() ? std::move(message) : fmt::format("{}: {}", src.entry, message);
  return Status(ErrorCode::kCorrupt, std::move(m), src.path, offset, std::move(tensor));
}

const Node* get(const Program& p, NodeId id) {
  return id < p.nodes.size() ? &p.nodes[id] : nullptr;
}

uint64_t offset_of(const Program& p, NodeId id) {
  const Node* n = get(p, id);
  return n ? n->offset : p.begin;
}

const Global* global_of(const Program& p, NodeId id) {
  const Node* n = get(p, id);
  if (!n || n->kind != Kind::kGlobal || n->global_index >= p.globals.size()) return nullptr;
  return &p.globals[n->global_index];
}

Meaning meaning_of(const Program& p, NodeId id) {
  const Global* g = global_of(p, id);
  return g && g->klass.category == pickle::GlobalCategory::kAllowed ? g->klass.meaning
                                                                    : Meaning::kNone;
}

/// Items of a tuple or list node; nullptr for anything else.
const std::vector<NodeId>* sequence(const Program& p, NodeId id) {
  const Node* n = get(p, id);
  if (!n || (n->kind != Kind::kTuple && n->kind != Kind::kList)) return nullptr;
  return &n->items;
}

std::optional<int64_t> as_int(const Program& p, NodeId id) {
  const Node* n = get(p, id);
  if (!n) return std::nullopt;
  if (n->kind == Kind::kInt) return n->i;
  if (n->kind == Kind::kBool) return n->b ? 1 : 0;
  return std::nullopt;
}

const std::string* as_string(const Program& p, NodeId id) {
  const Node* n = get(p, id);
  return n && (n->kind == Kind::kString || n->kind == Kind::kBytes) ? &n->s : nullptr;
}

/// A printable dict key: strings as they are, ints in decimal, anything else by kind.
std::string key_text(const Program& p, NodeId id) {
  if (const std::string* s = as_string(p, id)) return *s;
  if (auto i = as_int(p, id)) return std::to_string(*i);
  const Node* n = get(p, id);
  if (n && n->kind == Kind::kNone) return "None";
  if (n && n->kind == Kind::kTuple) {
    std::string out;
    for (NodeId item : n->items) out += (out.empty() ? "" : ",") + key_text(p, item);
    return "(" + out + ")";
  }
  return "<object>";
}

/// The (key, value) pairs of a dict, or of an object built by calling collections.OrderedDict
/// (REDUCE with `()` then SETITEMS, or with a list of pairs). False if the node is not one.
bool dict_items(const Program& p, NodeId id, std::vector<std::pair<NodeId, NodeId>>& out) {
  out.clear();
  const Node* n = get(p, id);
  if (!n) return false;
  if (n->kind == Kind::kCall) {
    if (meaning_of(p, n->callable) != Meaning::kOrderedDict) return false;
    if (const auto* args = sequence(p, n->args); args && !args->empty()) {
      if (const auto* pairs = sequence(p, (*args)[0])) {
        for (NodeId pair : *pairs) {
          const auto* kv = sequence(p, pair);
          if (kv && kv->size() == 2) out.emplace_back((*kv)[0], (*kv)[1]);
        }
      }
    }
  } else if (n->kind != Kind::kDict) {
    return false;
  }
  for (size_t i = 0; i + 1 < n->kv.size(); i += 2) out.emplace_back(n->kv[i], n->kv[i + 1]);
  return true;
}

struct TensorRef {
  NodeId pid = pickle::kNoNode;  ///< the kPersistentId node of the storage
  int64_t storage_offset = 0;
  std::vector<int64_t> size, stride;
  uint64_t offset = 0;  ///< absolute offset of the opcode that built the tensor (messages)
};

enum class IsTensor { kNo, kYes, kBroken };

/// Recognizes the tensor-building calls. kBroken: it is one, but its arguments are not what
/// torch writes (`why` says how).
IsTensor tensor_of_call(const Program& p, NodeId callable, NodeId args_id, uint64_t offset,
                        int depth, TensorRef& out, std::string& why) {
  if (depth > 8) return IsTensor::kNo;
  const Meaning m = meaning_of(p, callable);
  const auto* args = sequence(p, args_id);
  switch (m) {
    case Meaning::kRebuildTensor:
    case Meaning::kRebuildTensorV2: {
      if (!args || args->size() < 4) {
        why = "a tensor rebuild call needs (storage, offset, size, stride) arguments";
        return IsTensor::kBroken;
      }
      const Node* st = get(p, (*args)[0]);
      if (!st || st->kind != Kind::kPersistentId) {
        why =
            "a tensor's storage is not a persistent reference to the archive's data (a "
            "storage embedded another way cannot be extracted)";
        return IsTensor::kBroken;
      }
      out.pid = (*args)[0];
      auto off = as_int(p, (*args)[1]);
      const auto* size = sequence(p, (*args)[2]);
      const auto* stride = sequence(p, (*args)[3]);
      // torch.Size(...) arrives as a REDUCE of torch.Size on a tuple in some writers.
      if (!size) {
        const Node* sn = get(p, (*args)[2]);
        if (sn && sn->kind == Kind::kCall && meaning_of(p, sn->callable) == Meaning::kTorchSize) {
          const auto* a = sequence(p, sn->args);
          if (a && !a->empty()) size = sequence(p, (*a)[0]);
        }
      }
      if (!off || !size || !stride) {
        why = "a tensor's storage offset, size or stride is not an integer / tuple";
        return IsTensor::kBroken;
      }
      out.storage_offset = *off;
      out.size.clear();
      out.stride.clear();
      for (NodeId d : *size) {
        auto v = as_int(p, d);
        if (!v) {
          why = "a tensor's size holds something other than integers";
          return IsTensor::kBroken;
        }
        out.size.push_back(*v);
      }
      for (NodeId d : *stride) {
        auto v = as_int(p, d);
        if (!v) {
          why = "a tensor's stride holds something other than integers";
          return IsTensor::kBroken;
        }
        out.stride.push_back(*v);
      }
      out.offset = offset;
      return IsTensor::kYes;
    }
    case Meaning::kRebuildParameter:
    case Meaning::kRebuildParameterWithState: {
      if (!args || args->empty()) {
        why = "a parameter rebuild call without its tensor";
        return IsTensor::kBroken;
      }
      const Node* inner = get(p, (*args)[0]);
      if (!inner || inner->kind != Kind::kCall) {
        why = "a parameter whose data is not a tensor";
        return IsTensor::kBroken;
      }
      return tensor_of_call(p, inner->callable, inner->args, inner->offset, depth + 1, out, why);
    }
    case Meaning::kRebuildFromTypeV2: {
      // (func, new_type, args, state): the tensor is func(*args).
      if (!args || args->size() < 3) {
        why = "_rebuild_from_type_v2 needs (func, type, args, state)";
        return IsTensor::kBroken;
      }
      return tensor_of_call(p, (*args)[0], (*args)[2], offset, depth + 1, out, why);
    }
    default:
      return IsTensor::kNo;
  }
}

IsTensor tensor_of(const Program& p, NodeId id, TensorRef& out, std::string& why) {
  const Node* n = get(p, id);
  if (!n || n->kind != Kind::kCall) return IsTensor::kNo;
  return tensor_of_call(p, n->callable, n->args, n->offset, 0, out, why);
}

/// Does the value hold at least one tensor (itself, or inside nested dicts)?
bool holds_tensor(const Program& p, NodeId id, int depth, std::unordered_set<NodeId>& seen) {
  if (depth > kMaxDepth || !seen.insert(id).second) return false;
  TensorRef ref;
  std::string why;
  if (tensor_of(p, id, ref, why) != IsTensor::kNo) return true;
  std::vector<std::pair<NodeId, NodeId>> items;
  if (!dict_items(p, id, items)) return false;
  for (const auto& kv : items)
    if (holds_tensor(p, kv.second, depth + 1, seen)) return true;
  return false;
}

bool holds_tensor(const Program& p, NodeId id) {
  std::unordered_set<NodeId> seen;
  return holds_tensor(p, id, 0, seen);
}

struct Found {
  std::string name;
  TensorRef ref;
};

/// Walks a state dict: tensors get their key; nested dicts give dotted names.
Status flatten(const Program& p, const PickleSource& src, NodeId id, const std::string& prefix,
               int depth, std::unordered_set<NodeId>& on_path, std::vector<Found>& out,
               uint64_t& dropped) {
  const Node* n = get(p, id);
  if (depth > kMaxDepth)
    return bad(src, n ? n->offset : 0, prefix,
               fmt::format("dicts nested more than {} deep", kMaxDepth));
  std::vector<std::pair<NodeId, NodeId>> items;
  if (!dict_items(p, id, items)) return Status::ok();
  if (!on_path.insert(id).second)
    return bad(src, n->offset, prefix, "the state dict contains itself");
  for (const auto& [k, v] : items) {
    std::string name = prefix.empty() ? key_text(p, k) : prefix + "." + key_text(p, k);
    Found f{std::move(name), {}};
    std::string why;
    switch (tensor_of(p, v, f.ref, why)) {
      case IsTensor::kYes:
        out.push_back(std::move(f));
        break;
      case IsTensor::kBroken:
        return bad(src, offset_of(p, v), f.name, why);
      case IsTensor::kNo: {
        std::vector<std::pair<NodeId, NodeId>> inner;
        if (dict_items(p, v, inner) && holds_tensor(p, v)) {
          CKPT_RETURN_IF_ERROR(flatten(p, src, v, f.name, depth + 1, on_path, out, dropped));
        } else {
          ++dropped;
        }
      }
    }
  }
  on_path.erase(id);
  return Status::ok();
}

/// Where training code keeps the weights, in the order they are preferred.
constexpr std::array<std::string_view, 12> kStateDictKeys = {
    "state_dict", "model", "module",    "params_ema", "params",    "model_state_dict",
    "net",        "ema",   "generator", "weights",    "model_ema", "network"};

/// Picks the state dict inside the root and lists the tensors in it.
Status extract(const Program& p, const PickleSource& src, Checkpoint& ck,
               std::vector<Found>& found) {
  const NodeId root = p.root;
  std::vector<std::pair<NodeId, NodeId>> top;
  std::unordered_set<NodeId> on_path;
  if (!dict_items(p, root, top)) {
    // A bare tensor, or a list of tensors: unusual, but nothing is lost by naming them.
    Found f{"tensor", {}};
    std::string why;
    IsTensor t = tensor_of(p, root, f.ref, why);
    if (t == IsTensor::kBroken) return bad(src, offset_of(p, root), "", why);
    if (t == IsTensor::kYes) {
      found.push_back(std::move(f));
      return Status::ok();
    }
    if (const auto* seq = sequence(p, root)) {
      for (size_t i = 0; i < seq->size(); ++i) {
        Found g{std::to_string(i), {}};
        t = tensor_of(p, (*seq)[i], g.ref, why);
        if (t == IsTensor::kBroken) return bad(src, offset_of(p, (*seq)[i]), g.name, why);
        if (t == IsTensor::kYes)
          found.push_back(std::move(g));
        else
          ++ck.torch.dropped_values;
      }
      return Status::ok();
    }
    return Status::ok();  // no tensors at all; the caller says so
  }
  // Descend from the top level through wrappers ({"model": {"module": sd}}) until a dict that
  // holds tensors directly; only the top level's other entries are reported.
  NodeId chosen = root;
  std::vector<std::pair<NodeId, NodeId>> level = top;
  for (int depth = 0; depth < 8; ++depth) {
    bool direct = false;
    for (const auto& kv : level) {
      TensorRef ref;
      std::string why;
      if (tensor_of(p, kv.second, ref, why) != IsTensor::kNo) {
        direct = true;
        break;
      }
    }
    if (direct) break;
    std::optional<size_t> pick;
    for (std::string_view want : kStateDictKeys) {
      for (size_t i = 0; i < level.size() && !pick; ++i) {
        const std::string* k = as_string(p, level[i].first);
        if (k && *k == want && holds_tensor(p, level[i].second)) pick = i;
      }
      if (pick) break;
    }
    if (!pick) {
      // Otherwise the one entry that holds tensors, if there is exactly one.
      size_t holders = 0;
      for (size_t i = 0; i < level.size(); ++i)
        if (holds_tensor(p, level[i].second)) {
          ++holders;
          pick = i;
        }
      if (holders != 1) pick.reset();
    }
    if (!pick) break;
    std::string& key = ck.torch.state_dict_key;
    key += (key.empty() ? "" : ".") + key_text(p, level[*pick].first);
    if (depth == 0)
      for (size_t i = 0; i < level.size(); ++i)
        if (i != *pick) ck.torch.other_entries.push_back(key_text(p, level[i].first));
    chosen = level[*pick].second;
    std::vector<std::pair<NodeId, NodeId>> next;
    if (!dict_items(p, chosen, next)) break;
    level = std::move(next);
  }
  return flatten(p, src, chosen, "", 0, on_path, found, ck.torch.dropped_values);
}

std::optional<DType> storage_dtype(const Program& p, NodeId type_node) {
  const Global* g = global_of(p, type_node);
  if (!g || g->klass.category != pickle::GlobalCategory::kAllowed) return std::nullopt;
  if (g->klass.meaning == Meaning::kStorageType) return g->klass.dtype;
  if (g->klass.meaning == Meaning::kUntypedStorage) return DType::U8;
  return std::nullopt;
}

/// A storage as the pickle describes it.
struct StorageRef {
  std::string key;
  DType dtype;
  uint64_t numel;
  uint64_t offset;  ///< of the persistent id, for messages
  // Legacy views of a storage: (root key, element offset).
  std::string view_of;
  uint64_t view_offset = 0;
};

/// Parses ('storage', type, key, location, numel[, view_metadata]).
Status parse_pid(const Program& p, const PickleSource& src, NodeId pid_node,
                 const std::string& tensor, StorageRef& out) {
  const Node* pid = get(p, pid_node);
  if (!pid) return bad(src, p.begin, tensor, "persistent id missing");
  const auto* t = sequence(p, pid->args);
  const std::string* tag = t && !t->empty() ? as_string(p, (*t)[0]) : nullptr;
  if (!t || t->size() < 5 || !tag || *tag != "storage")
    return bad(src, pid->offset, tensor,
               "persistent id is not ('storage', type, key, location, size)");
  auto dt = storage_dtype(p, (*t)[1]);
  if (!dt) {
    const Global* g = global_of(p, (*t)[1]);
    return bad(
        src, pid->offset, tensor,
        g ? fmt::format("storage type {}.{} is not a known tensor storage", g->module, g->name)
          : std::string("storage type is not a global"));
  }
  const std::string* key = as_string(p, (*t)[2]);
  std::string key_str = key ? *key : (as_int(p, (*t)[2]) ? key_text(p, (*t)[2]) : "");
  if (key_str.empty()) return bad(src, pid->offset, tensor, "storage key is not a string");
  auto numel = as_int(p, (*t)[4]);
  if (!numel || *numel < 0)
    return bad(src, pid->offset, tensor, "storage size is not a non-negative integer");
  out = {key_str, *dt, static_cast<uint64_t>(*numel), pid->offset, {}, 0};
  if (t->size() >= 6) {
    const auto* view = sequence(p, (*t)[5]);
    if (view && view->size() == 3) {
      // Legacy: (view_key, offset, view_size) — this tensor's storage is a slice of the root.
      const std::string* vk = as_string(p, (*view)[0]);
      auto voff = as_int(p, (*view)[1]);
      auto vsize = as_int(p, (*view)[2]);
      if (!vk || !voff || !vsize || *voff < 0 || *vsize < 0)
        return bad(src, pid->offset, tensor, "malformed storage view metadata");
      out.view_of = out.key;
      out.key = *vk;
      out.view_offset = static_cast<uint64_t>(*voff);
      out.numel = static_cast<uint64_t>(*vsize);
    }
  }
  return Status::ok();
}

/// Turns found tensors into TensorInfos. `locate(key, dtype, numel, where)` gives the storage's
/// absolute offset and the bytes available there.
template <typename Locate>
Status build_tensors(const Program& p, const PickleSource& src, std::vector<Found>& found,
                     bool big_endian, Checkpoint& ck, Locate&& locate) {
  std::unordered_map<std::string, int32_t> by_key;
  std::unordered_set<std::string> names;
  ck.tensors.reserve(found.size());
  for (Found& f : found) {
    StorageRef sr;
    CKPT_RETURN_IF_ERROR(parse_pid(p, src, f.ref.pid, f.name, sr));
    const uint64_t elsize = dtype_info(sr.dtype).bits / 8;
    int32_t index;
    if (auto it = by_key.find(sr.key); it != by_key.end()) {
      index = it->second;
      const StorageInfo& s = ck.torch.storages[static_cast<size_t>(index)];
      if (s.dtype != sr.dtype)
        return bad(src, sr.offset, f.name,
                   fmt::format("storage '{}' is referenced as {} and as {}", sr.key,
                               dtype_name(s.dtype), dtype_name(sr.dtype)));
    } else {
      uint64_t nbytes;
      if (__builtin_mul_overflow(sr.numel, elsize, &nbytes))
        return bad(src, sr.offset, f.name, "storage size overflows");
      StorageInfo s;
      s.key = sr.key;
      s.dtype = sr.dtype;
      s.nbytes = nbytes;
      CKPT_RETURN_IF_ERROR(locate(sr, f.name, s));
      index = static_cast<int32_t>(ck.torch.storages.size());
      ck.torch.storages.push_back(std::move(s));
      by_key.emplace(sr.key, index);
    }
    const StorageInfo& s = ck.torch.storages[static_cast<size_t>(index)];
    const uint64_t storage_numel = s.nbytes / elsize;

    TensorInfo t;
    t.name = std::move(f.name);
    if (!names.insert(t.name).second)
      return bad(src, f.ref.offset, t.name, "two tensors have this name");
    t.dtype = s.dtype;
    t.storage = index;
    t.big_endian = big_endian && elsize > 1;
    const TensorRef& r = f.ref;
    if (r.size.size() != r.stride.size())
      return bad(
          src, r.offset, t.name,
          fmt::format("size has {} dimensions but stride has {}", r.size.size(), r.stride.size()));
    if (r.storage_offset < 0) return bad(src, r.offset, t.name, "negative storage offset");
    uint64_t numel = 1, reach = static_cast<uint64_t>(r.storage_offset);
    bool ok = true;
    for (size_t d = 0; d < r.size.size(); ++d) {
      if (r.size[d] < 0 || r.stride[d] < 0)
        return bad(src, r.offset, t.name, "negative size or stride");
      t.shape.push_back(static_cast<uint64_t>(r.size[d]));
      ok &= !__builtin_mul_overflow(numel, t.shape.back(), &numel);
    }
    if (!ok) return bad(src, r.offset, t.name, "element count overflows");
    if (numel > 0) {
      for (size_t d = 0; d < r.size.size(); ++d) {
        uint64_t step;
        ok &= !__builtin_mul_overflow(t.shape[d] - 1, static_cast<uint64_t>(r.stride[d]), &step);
        ok &= !__builtin_add_overflow(reach, step, &reach);
      }
      if (!ok || reach >= storage_numel)
        return bad(
            src, r.offset, t.name,
            fmt::format("shape {} with stride ({}) from element {} reaches element {} "
                        "of storage '{}', which holds {}",
                        shape_to_string(t.shape), fmt::join(r.stride, ", "), r.storage_offset,
                        ok ? fmt::format("{}", reach) : "2^64+", s.key, storage_numel));
    }
    // C-contiguous (dimensions of size 1 may have any stride)?
    bool contiguous = true;
    uint64_t expect = 1;
    for (size_t d = r.size.size(); d-- > 0;) {
      if (t.shape[d] != 1 && static_cast<uint64_t>(r.stride[d]) != expect) contiguous = false;
      expect *= t.shape[d];
    }
    if (!contiguous && numel > 0)
      for (int64_t st : r.stride) t.strides.push_back(static_cast<uint64_t>(st));
    // Offsets: within the storage's bytes (checked above), so no overflow here.
    t.begin = s.offset + static_cast<uint64_t>(r.storage_offset) * elsize;
    uint64_t logical;
    if (__builtin_mul_overflow(numel, elsize, &logical) ||
        __builtin_add_overflow(t.begin, logical, &t.end))
      return bad(src, r.offset, t.name, "tensor size overflows");
    ck.tensors.push_back(std::move(t));
  }
  return Status::ok();
}

}  // namespace

pickle::Limits pickle_limits(const ReadLimits& limits) {
  pickle::Limits l;
  l.max_nodes = limits.max_pickle_nodes;
  return l;
}

const zip::Entry* find_data_pkl(const zip::Archive& archive) {
  for (const zip::Entry& e : archive.entries) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && slash > 0 &&
        e.name.compare(slash, std::string::npos, "/data.pkl") == 0)
      return &e;
  }
  return nullptr;
}

Result<Checkpoint> read_torch_zip(const InputFile& file, const ReadLimits& limits) {
  FileSource src(file);
  CKPT_ASSIGN_OR_RETURN(zip::Archive archive, zip::read_archive(src));
  return read_torch_zip(file, archive, limits);
}

Result<Checkpoint> read_torch_zip(const InputFile& file, const zip::Archive& archive,
                                  const ReadLimits& limits, pickle::Program* program) {
  FileSource src(file);
  const zip::Entry* pkl = find_data_pkl(archive);
  if (!pkl)
    return Status(ErrorCode::kCorrupt,
                  "a zip archive without '<folder>/data.pkl': not a PyTorch checkpoint",
                  file.path(), archive.central_directory_offset);
  if (pkl->uncompressed_size > limits.max_pickle_bytes)
    return Status(ErrorCode::kLimitExceeded,
                  fmt::format("{}: the pickle is {} bytes, more than the limit of {}", pkl->name,
                              pkl->uncompressed_size, limits.max_pickle_bytes),
                  file.path(), pkl->data_offset);
  const std::string root = pkl->name.substr(0, pkl->name.size() - std::strlen("data.pkl"));
  zip::Limits zl;
  zl.max_inflated_entry = limits.max_pickle_bytes;
  CKPT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, zip::read_entry(src, *pkl, zl));

  Checkpoint ck;
  ck.path = file.path();
  ck.format = FileFormat::kTorchZip;
  ck.file_size = file.size();
  ck.header_size = bytes.size();
  ck.data_offset = 0;
  ck.torch.pickle_entry = pkl->name;
  // Stored entries: pickle offsets are file offsets. Deflated: offsets within the entry.
  const uint64_t base = pkl->method == zip::kMethodStored ? pkl->data_offset : 0;
  ck.torch.pickle_offset = pkl->data_offset;
  Program prog = pickle::run(bytes, base, pickle_limits(limits));
  PickleSource psrc{file.path(), pkl->name};
  if (!prog.status.is_ok()) {
    Status s = prog.status;
    return Status(s.code(), fmt::format("{}: {}", pkl->name, s.message()), file.path(), s.offset());
  }
  ck.torch.pickle_protocol = prog.protocol;

  bool big_endian = false;
  if (const zip::Entry* bo = archive.find(root + "byteorder")) {
    CKPT_ASSIGN_OR_RETURN(std::vector<uint8_t> b, zip::read_entry(src, *bo, zl));
    const std::string_view v(reinterpret_cast<const char*>(b.data()), b.size());
    if (v == "big")
      big_endian = true;
    else if (v != "little")
      return Status(ErrorCode::kCorrupt,
                    fmt::format("{}: byte order '{}' is neither 'little' nor 'big'", bo->name,
                                v.substr(0, 32)),
                    file.path(), bo->data_offset);
  }

  std::unordered_map<std::string_view, const zip::Entry*> by_name;
  by_name.reserve(archive.entries.size());
  for (const zip::Entry& e : archive.entries) by_name.emplace(e.name, &e);  // first one wins
  std::vector<Found> found;
  CKPT_RETURN_IF_ERROR(extract(prog, psrc, ck, found));
  CKPT_RETURN_IF_ERROR(build_tensors(
      prog, psrc, found, big_endian, ck,
      [&](const StorageRef& sr, const std::string& tensor, StorageInfo& s) -> Status {
        if (!sr.view_of.empty())
          return bad(psrc, sr.offset, tensor, "storage views are a legacy-format feature");
        s.entry = root + "data/" + sr.key;
        auto found_entry = by_name.find(s.entry);
        const zip::Entry* e = found_entry == by_name.end() ? nullptr : found_entry->second;
        if (!e)
          return bad(psrc, sr.offset, tensor,
                     fmt::format("storage '{}' has no entry '{}' in the archive", sr.key, s.entry));
        // Deflated storages (torch never writes them; re-zipping tools do) are described here
        // and inflated by the consumer that needs their bytes (convert spills them once).
        if (e->method != zip::kMethodStored) {
          s.deflated = true;
          s.compressed_size = e->compressed_size;
          s.crc32 = e->crc32;
        }
        if (e->uncompressed_size < s.nbytes)
          return Status(ErrorCode::kCorrupt,
                        fmt::format("entry '{}' holds {} bytes but the pickle says storage '{}' "
                                    "has {} elements of {} ({} bytes)",
                                    e->name, e->uncompressed_size, sr.key, sr.numel,
                                    dtype_name(sr.dtype), s.nbytes),
                        file.path(), e->data_offset, tensor);
        s.offset = e->data_offset;
        return Status::ok();
      }));
  if (program) *program = std::move(prog);
  return ck;
}

namespace {

/// The magic number legacy torch.save writes first: 0x1950a86a20f9469cfc6c.
constexpr std::array<uint8_t, 10> kLegacyMagic = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                                  0x20, 0x6a, 0xa8, 0x50, 0x19};

bool is_legacy_magic(const Program& p) {
  const Node* n = get(p, p.root);
  if (!n || n->kind != Kind::kBigInt) return false;
  std::string s = n->s;
  while (s.size() > kLegacyMagic.size() && s.back() == 0) s.pop_back();
  return s.size() == kLegacyMagic.size() &&
         std::memcmp(s.data(), kLegacyMagic.data(), kLegacyMagic.size()) == 0;
}

}  // namespace

Status run_leading_pickles(const InputFile& file, int max_count, const ReadLimits& limits,
                           std::vector<pickle::Program>& out) {
  // Read a window and grow it while a pickle runs off its end; the data after the pickles
  // (legacy storages, gigabytes) is never read.
  std::vector<uint8_t> head;
  uint64_t window = std::min<uint64_t>(file.size(), 1u << 20);
  for (;;) {
    head.resize(window);
    CKPT_RETURN_IF_ERROR(file.pread_exact(head, 0, "the pickles at the start of the file"));
    out.clear();
    uint64_t pos = 0;
    bool short_read = false;
    while (static_cast<int>(out.size()) < max_count && pos < window) {
      out.push_back(pickle::run(std::span(head).subspan(pos), pos, pickle_limits(limits)));
      const Program& p = out.back();
      if (!p.status.is_ok()) {
        short_read = window < file.size() && p.end + 16 >= window;
        break;
      }
      pos = p.end;
    }
    if (!short_read) return Status::ok();
    if (window >= limits.max_pickle_bytes)
      return Status(
          ErrorCode::kLimitExceeded,
          fmt::format("the pickles are longer than the limit of {} bytes", limits.max_pickle_bytes),
          file.path(), 0);
    window = std::min<uint64_t>({file.size(), window * 4, limits.max_pickle_bytes});
  }
}

Result<Checkpoint> read_torch_legacy(const InputFile& file, const ReadLimits& limits) {
  const std::string& path = file.path();
  std::vector<Program> progs;
  CKPT_RETURN_IF_ERROR(run_leading_pickles(file, 5, limits, progs));
  if (!progs.empty() && progs[0].status.is_ok() && !is_legacy_magic(progs[0]))
    return Status(ErrorCode::kCorrupt,
                  "a pickle, but not a torch.save file (no legacy magic number); `ckptkit scan` "
                  "tells what it would do when loaded",
                  path, 0);
  int done = 0;
  while (done < static_cast<int>(progs.size()) && progs[static_cast<size_t>(done)].status.is_ok())
    ++done;
  const uint64_t pos = done > 0 ? progs[static_cast<size_t>(done) - 1].end : 0;
  static constexpr const char* kWhat[5] = {"magic number", "protocol version", "system info",
                                           "object", "storage key list"};
  if (done < 5) {
    if (done >= static_cast<int>(progs.size()))
      return Status(ErrorCode::kCorrupt,
                    fmt::format("legacy torch file ends before its {} pickle", kWhat[done]), path,
                    pos);
    const Status& s = progs[static_cast<size_t>(done)].status;
    return Status(s.code(),
                  fmt::format("legacy torch file, {} pickle: {}", kWhat[done], s.message()), path,
                  s.offset());
  }
  Checkpoint ck;
  ck.path = path;
  ck.format = FileFormat::kTorchLegacy;
  ck.file_size = file.size();
  ck.data_offset = 0;
  ck.torch.pickle_offset = progs[3].begin;
  ck.torch.pickle_protocol = progs[3].protocol;
  ck.header_size = progs[4].end;

  // sys_info: {'protocol_version': 1001, 'little_endian': bool, 'type_sizes': {...}}
  bool big_endian = false;
  {
    const Program& si = progs[2];
    std::vector<std::pair<NodeId, NodeId>> items;
    if (dict_items(si, si.root, items))
      for (const auto& [k, v] : items) {
        const std::string* ks = as_string(si, k);
        auto b = as_int(si, v);
        if (ks && *ks == "little_endian" && b) big_endian = *b == 0;
      }
  }
  const Program& prog = progs[3];
  PickleSource psrc{path, ""};

  // The storage records, in the order of the key list: u64 element count, then the bytes.
  const Program& keys = progs[4];
  const auto* key_list = sequence(keys, keys.root);
  if (!key_list)
    return Status(ErrorCode::kCorrupt, "legacy torch file: the storage key list is not a list",
                  path, keys.begin);
  // First the element sizes the object pickle gives each key.
  std::unordered_map<std::string, DType> key_dtype;
  for (const Node& n : prog.nodes) {
    if (n.kind != Kind::kPersistentId) continue;
    const auto* t = sequence(prog, n.args);
    if (!t || t->size() < 5) continue;
    auto dt = storage_dtype(prog, (*t)[1]);
    std::string k = as_string(prog, (*t)[2]) ? *as_string(prog, (*t)[2]) : key_text(prog, (*t)[2]);
    if (dt) key_dtype.emplace(k, *dt);
  }
  struct Record {
    uint64_t offset, numel;
  };
  std::unordered_map<std::string, Record> records;
  uint64_t at = pos;
  for (NodeId kid : *key_list) {
    const std::string* k = as_string(keys, kid);
    if (!k)
      return Status(ErrorCode::kCorrupt, "legacy torch file: a storage key is not a string", path,
                    keys.begin);
    auto dt = key_dtype.find(*k);
    if (dt == key_dtype.end())
      return Status(
          ErrorCode::kCorrupt,
          fmt::format("legacy torch file: storage '{}' is listed but no tensor uses it", *k), path,
          keys.begin);
    std::array<uint8_t, 8> n8;
    CKPT_RETURN_IF_ERROR(file.pread_exact(n8, at, "a storage's element count"));
    uint64_t numel = 0;
    for (int i = 0; i < 8; ++i) {
      const uint8_t b = big_endian ? n8[static_cast<size_t>(i)] : n8[static_cast<size_t>(7 - i)];
      numel = numel << 8 | b;
    }
    uint64_t nbytes, data, end;
    if (__builtin_mul_overflow(numel, dtype_info(dt->second).bits / 8, &nbytes) ||
        __builtin_add_overflow(at, 8, &data) || __builtin_add_overflow(data, nbytes, &end) ||
        end > file.size())
      return Status(ErrorCode::kCorrupt,
                    fmt::format("legacy torch file: storage '{}' claims {} elements of {}, which "
                                "reach past the end of the file ({} bytes)",
                                *k, numel, dtype_name(dt->second), file.size()),
                    path, at);
    if (!records.emplace(*k, Record{data, numel}).second)
      return Status(ErrorCode::kCorrupt,
                    fmt::format("legacy torch file: storage '{}' is listed twice", *k), path, at);
    at = end;
  }

  std::vector<Found> found;
  CKPT_RETURN_IF_ERROR(extract(prog, psrc, ck, found));
  CKPT_RETURN_IF_ERROR(build_tensors(
      prog, psrc, found, big_endian, ck,
      [&](const StorageRef& sr, const std::string& tensor, StorageInfo& s) -> Status {
        const std::string& root = sr.view_of.empty() ? sr.key : sr.view_of;
        auto it = records.find(root);
        if (it == records.end())
          return bad(psrc, sr.offset, tensor,
                     fmt::format("storage '{}' is not in the file's storage list", root));
        const uint64_t elsize = dtype_info(sr.dtype).bits / 8;
        uint64_t first = sr.view_offset, last;
        if (__builtin_add_overflow(first, sr.numel, &last) || last > it->second.numel)
          return bad(psrc, sr.offset, tensor,
                     fmt::format("storage '{}' holds {} elements, the pickle needs {}", root,
                                 it->second.numel, last));
        s.offset = it->second.offset + first * elsize;
        return Status::ok();
      }));
  return ck;
}

Result<Checkpoint> read_checkpoint(const InputFile& file, const ReadLimits& limits) {
  CKPT_ASSIGN_OR_RETURN(Sniffed kind, sniff_file(file));
  switch (kind) {
    case Sniffed::kTorchZip:
      return read_torch_zip(file, limits);
    case Sniffed::kPickle:
      return read_torch_legacy(file, limits);
    case Sniffed::kGguf: {
      FileSource source(file);
      return read_gguf(source, limits.gguf);
    }
    default:
      return read_safetensors(file, limits.safetensors);
  }
}

Result<Checkpoint> read_checkpoint(const std::string& path, const ReadLimits& limits) {
  CKPT_ASSIGN_OR_RETURN(InputFile file, InputFile::open(path));
  return read_checkpoint(file, limits);
}

}  // namespace ckptkit
