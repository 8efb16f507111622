// A pickle machine that never runs anything.
//
// Python's pickle is a small stack language: opcodes push constants, build containers, look up
// globals (`GLOBAL "os\nsystem"`, `STACK_GLOBAL`, `INST`, `EXT1/2/4`) and call them (`REDUCE`,
// `NEWOBJ`, `OBJ`, `BUILD`). `torch.load` hands it to Python's unpickler, which imports every
// module a pickle names and calls what it is told to: a `.ckpt` can run any code.
//
// This machine interprets every opcode of protocols 0–5 into a *passive object graph*: a global
// is only its two names, a call is a node that records "callable applied to arguments", nothing
// is imported, called or evaluated. Each global is classified (allowlisted with its meaning to the
// tensor extractor, unknown, or code execution) by `classify_global`.
//
// Byte layout: a sequence of opcodes (one byte each) with inline arguments (fixed-size
// little-endian integers except BINFLOAT, which is big-endian; length-prefixed strings and bytes;
// newline-terminated text for protocol-0 opcodes), ending at STOP ('.'). PROTO (0x80) and FRAME
// (0x95) may come first; frames are only a buffering hint and are read through.
//
// Every inline length, memo index and stack operation is bounds-checked; container sizes, node
// count, stack depth and memo size are bounded by Limits. Graphs may share nodes and may be
// cyclic (a list appended to itself): consumers must walk them with a visited set or a depth
// bound.
//
// Thread safety: run() is reentrant; a Program is immutable once returned.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/dtype.h"
#include "ckptkit/status.h"

namespace ckptkit::pickle {

using NodeId = uint32_t;
inline constexpr NodeId kNoNode = UINT32_MAX;

enum class GlobalCategory : uint8_t {
  kAllowed,    ///< a name torch.load needs for plain tensors and containers; harmless
  kUnknown,    ///< would import a module under torch.load; not known to run code by itself
  kDangerous,  ///< can run code, touch files/network or load further pickles
};

/// What an allowlisted global means to the tensor extractor.
enum class Meaning : uint8_t {
  kNone,
  kRebuildTensor,              ///< torch._utils._rebuild_tensor(storage, offset, size, stride)
  kRebuildTensorV2,            ///< torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                               ///<   requires_grad, backward_hooks[, metadata])
  kRebuildParameter,           ///< torch._utils._rebuild_parameter(data, requires_grad, hooks)
  kRebuildParameterWithState,  ///< torch._utils._rebuild_parameter_with_state(data, rg, hooks, state)
  kRebuildFromTypeV2,          ///< torch._tensor._rebuild_from_type_v2(func, type, args, state)
  kParameterClass,             ///< torch.nn.parameter.Parameter (a type passed to the above)
  kStorageType,                ///< torch.FloatStorage, torch.HalfStorage, …: `dtype` says which
  kUntypedStorage,             ///< torch.storage.UntypedStorage / torch.UntypedStorage (bytes)
  kTorchDtype,                 ///< torch.float16, torch.bfloat16, …: `dtype` says which
  kOrderedDict,                ///< collections.OrderedDict
  kTorchSize,                  ///< torch.Size
  kTorchDevice,                ///< torch.device
  kCodecsEncode,               ///< _codecs.encode(str, "latin1"): how protocol 2 stores bytes
  kBenignData,                 ///< other plain data: builtins.set/frozenset/bytearray/slice/
                               ///< complex, numpy scalars, numpy.dtype, …
};

struct GlobalClass {
  GlobalCategory category = GlobalCategory::kUnknown;
  Meaning meaning = Meaning::kNone;
  DType dtype = DType::F32;    ///< for kStorageType and kTorchDtype
  std::string_view reason;     ///< plain words for scan: "runs shell commands", "imports modules", …
};

/// Where a global's module comes from: what the scan summary tells the user it would import.
enum class GlobalOrigin : uint8_t {
  kTorch,       ///< "torch" and its submodules
  kStdlib,      ///< a module of Python's standard library (Python 2 names included)
  kThirdParty,  ///< anything else: numpy, Lightning, omegaconf, a user's __main__, …
};

GlobalOrigin global_origin(std::string_view module);

/// Classifies a global by its module and name. Pure function of its arguments. `called` says
/// that the pickle calls the global (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ, or as the callable
/// handed to functools.partial / copyreg's constructors) rather than only naming it: a global
/// from PyTorch or the standard library that no table knows is dangerous when called, unless it
/// is one of the benign constructors real checkpoints carry (see pickle_globals.cc).
GlobalClass classify_global(std::string_view module, std::string_view name, bool called = false);

enum class GlobalOpcode : uint8_t { kGlobal, kStackGlobal, kInst, kObj, kExt };

/// One global reference, in the order the opcodes appear.
struct Global {
  std::string module;   ///< "os"; for EXT1/2/4: "copyreg extension registry"
  std::string name;     ///< "system"; for EXT: the code in decimal
  uint64_t offset = 0;  ///< absolute byte offset of the opcode
  GlobalOpcode opcode = GlobalOpcode::kGlobal;
  bool called = false;  ///< the pickle calls it (see classify_global); `klass` accounts for it
  GlobalClass klass;    ///< EXT codes are kDangerous: the registry is process state, unknowable
};

enum class Kind : uint8_t {
  kNone,
  kBool,          ///< `b`
  kInt,           ///< `i` (fits int64)
  kBigInt,        ///< `s` holds the little-endian two's complement bytes (LONG1/LONG4/LONG)
  kFloat,         ///< `f`
  kString,        ///< `s` (UTF-8 as in the pickle; not validated)
  kBytes,         ///< `s` (BINBYTES, SHORT_BINBYTES, BYTEARRAY8, protocol-0 STRING …)
  kTuple,         ///< `items`
  kList,          ///< `items`
  kDict,          ///< `kv` (key, value, key, value …) in insertion order
  kSet,           ///< `items`
  kFrozenSet,     ///< `items`
  kGlobal,        ///< `global_index` into Program::globals
  kCall,          ///< an object that Python would build: `callable` applied to `args` (a tuple
                  ///< node, or kNoNode), `kwargs` for NEWOBJ_EX; later BUILD sets `state`,
                  ///< SETITEM(S) add to `kv`, APPEND(S) add to `items`
  kPersistentId,  ///< `args` is the persistent id (torch: ('storage', type, key, location, n))
  kPickleBuffer,  ///< protocol 5 NEXT_BUFFER / READONLY_BUFFER: out-of-band data (absent here)
};

enum class CallOpcode : uint8_t { kReduce, kNewObj, kNewObjEx, kInst, kObj };

struct Node {
  Kind kind = Kind::kNone;
  CallOpcode call = CallOpcode::kReduce;  ///< for kCall
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<NodeId> items;
  std::vector<NodeId> kv;
  uint32_t global_index = 0;
  NodeId callable = kNoNode;
  NodeId args = kNoNode;
  NodeId kwargs = kNoNode;
  NodeId state = kNoNode;
  uint64_t offset = 0;  ///< absolute offset of the opcode that created the node
};

struct Limits {
  uint64_t max_nodes = 1u << 26;
  uint64_t max_stack = 1u << 20;      ///< values + marks on the stack
  uint64_t max_memo = 1u << 24;       ///< memo entries (index values may be anything ≤ 2^32)
  uint64_t max_container = 1u << 26;  ///< items in one container / args in one call
};

struct Program {
  std::vector<Node> nodes;
  std::vector<Global> globals;   ///< every global reference, including those in EXT opcodes
  NodeId root = kNoNode;         ///< what STOP returned; kNoNode when `status` is an error
  int protocol = 0;              ///< from PROTO; 0 when absent
  uint64_t begin = 0;            ///< absolute offset of the first opcode
  uint64_t end = 0;              ///< absolute offset one past STOP (or where reading stopped)
  /// Ok when STOP was reached. On an error the program holds everything read before it (the
  /// globals in particular, so that scan can still name them) and the status names the
  /// absolute offset and the opcode.
  Status status;

  const Node& node(NodeId id) const { return nodes[id]; }
};

/// Interprets `bytes` (a pickle starting at bytes[0], found at absolute file offset `base`) up
/// to its STOP opcode. Bytes after STOP are not read (the legacy torch format puts several
/// pickles one after another: call again at `end`).
Program run(std::span<const uint8_t> bytes, uint64_t base = 0, const Limits& limits = {});

/// The opcode's name for messages ("BINUNICODE"), or "unknown".
std::string_view opcode_name(uint8_t op);

}  // namespace ckptkit::pickle
