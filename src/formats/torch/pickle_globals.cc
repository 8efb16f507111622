// classify_global: what a global named in a pickle would do under torch.load.
//
// torch.load (weights_only=False, the default before PyTorch 2.6) imports the module of every
// global a pickle names and hands the object to the pickle, which may call it. This file is the
// table that says, for a (module, name) pair, whether that is
//
//   kAllowed    what torch.load(weights_only=True) accepts for plain tensors and containers
//               (the rebuild functions, storage and dtype names, torch.Size, OrderedDict, …)
//               plus a few plain-data builders (set, frozenset, bytearray, numpy arrays);
//   kDangerous  able to run code, run programs, touch files or the network, import modules or
//               load another pickle;
//   kUnknown    everything else: loading the file imports that module and builds whatever it
//               names, which is not known to do harm by itself (a Lightning callback class, a
//               user's own class from __main__) but is outside the allowlist.
//
// Rules, in order:
//   1. Python 2 module names that Python 3's unpickler maps onto builtins or copyreg
//      (__builtin__, exceptions, copy_reg; also __builtins__) are read as the module they
//      become. Other renamed Python 2 modules (cPickle, commands, urllib2, httplib, …) are
//      listed under their own names below.
//   2. An exact (module, name) row wins: `kExactRules`. Dangerous names inside otherwise
//      harmless modules (builtins.eval, operator.attrgetter, numpy.load, io.open, torch.load)
//      and allowed names inside dangerous modules (torch.serialization._get_layout) live here.
//   3. A name with a dot is dangerous. Protocol 4 resolves "a.b.c" by walking attributes, so
//      module "torch" with name "serialization.os.system" reaches os.system through torch's own
//      imports; which objects a module exposes (often under aliases like `_os`) cannot be
//      judged from the names, so every walk is suspect. (Protocols < 4 refuse dotted names, but
//      the protocol is the file's choice, so it is no defence.)
//   4. A module rule matches the module itself and its submodules at dot boundaries ("os"
//      matches "os" and "os.path", not "osx" nor "posixpath"); the longest matching rule wins,
//      so "numpy.dtypes" can be allowed while "numpy.lib.npyio" is dangerous. Whole modules are
//      dangerous when most of what they export acts on the world (os, subprocess, socket,
//      pickle, importlib, …), even if a few names are harmless (os.path.join): importing them
//      to build data has no legitimate use in a checkpoint, and a list of their harmless names
//      would go stale.
//   5. Anything else is kUnknown.
//
// Borderline decisions (see also the reasons in the rows):
//   * functools.partial/reduce and copyreg._reconstructor are kUnknown: they call or
//     instantiate a callable the pickle must name too, and that global is classified itself.
//     getattr, operator.attrgetter/methodcaller, pkgutil.resolve_name and importlib are
//     dangerous because they reach callables *by a string*, which no table can follow.
//   * threading, _thread, glob, posixpath, ntpath, pathlib and gc are kUnknown: they build
//     objects or read names without running anything the pickle did not name itself.
//   * builtins other than the listed ones are kUnknown (not allowed): torch.load
//     (weights_only=True) refuses them; `builtins.input` and `help` are dangerous because
//     they block on the terminal or start a pager program.
//   * numpy arrays (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype, scalar,
//     _frombuffer) are plain data: ndarray.__setstate__ only stores shape, dtype and bytes; an
//     object array's elements are separate nodes of the pickle, each classified on its own.
//   * torch.TypedStorage/_TypedStorage are allowed with Meaning::kNone: they carry no dtype of
//     their own, and torch.save writes the legacy names (torch.FloatStorage, …) instead. The
//     other tensor rebuild functions weights_only accepts (_rebuild_tensor_v3, _rebuild_qtensor,
//     sparse, meta, nested, wrapper subclasses) are allowed with Meaning::kNone too: harmless,
//     but not something the extractor reads. Quantization schemes and layouts other than via
//     torch.serialization._get_layout do not occur as globals in torch's output: kUnknown.
//   * torch._C is kUnknown except the TorchScript loaders; torch.jit, torch.hub, torch.package
//     and torch.utils.cpp_extension are dangerous as whole modules.
//   * The pseudo-modules "copyreg extension registry" (EXT1/2/4) and "<non-string>"
//     (STACK_GLOBAL on non-strings) that run() records are dangerous: what they resolve to is
//     process state or unknowable.
#include <algorithm>
#include <string_view>

#include "formats/torch/pickle.h"

namespace ckptkit::pickle {
namespace {

// ---- reasons, in plain words for `ckptkit scan` ---------------------------------------------

// Allowed.
constexpr std::string_view kRebuild = "rebuilds a tensor from a storage (torch.load's own format)";
constexpr std::string_view kRebuildOther =
    "rebuilds a special tensor (quantized, sparse, meta, …); accepted by "
    "torch.load(weights_only=True), not extracted by ckptkit";
constexpr std::string_view kParameter = "the nn.Parameter class, wrapped around a tensor";
constexpr std::string_view kTensorClass = "the torch.Tensor class";
constexpr std::string_view kLegacyTensor = "a legacy tensor type (torch.FloatTensor, …)";
constexpr std::string_view kStorage = "a storage type naming the element type of tensor data";
constexpr std::string_view kStorageNoDtype =
    "a storage type whose element type ckptkit does not compute with";
constexpr std::string_view kUntyped = "an untyped (byte) storage of tensor data";
constexpr std::string_view kTypedStorage =
    "the generic typed storage class (no element type of its own)";
constexpr std::string_view kDtype = "a torch dtype";
constexpr std::string_view kDtypeNoDType = "a complex torch dtype ckptkit does not compute with";
constexpr std::string_view kSize = "torch.Size, a tuple of dimensions";
constexpr std::string_view kDevice = "torch.device, a device name";
constexpr std::string_view kLayout = "looks up a tensor layout (torch.sparse_coo, …) by name";
constexpr std::string_view kOrderedDictR = "collections.OrderedDict, an ordered dictionary";
constexpr std::string_view kCodecs = "encodes a string to bytes: how protocols 0-2 store bytes";
constexpr std::string_view kBuiltinData = "a built-in data type (set, frozenset, bytearray, …)";
constexpr std::string_view kNumpyData = "rebuilds numpy data (arrays, scalars, dtypes)";

// Unknown.
constexpr std::string_view kUnknownDefault =
    "not on the allowlist: torch.load imports its module and builds or calls it";
constexpr std::string_view kOtherBuiltin =
    "a Python built-in outside torch.load(weights_only=True)'s allowlist";
constexpr std::string_view kPartial =
    "calls another callable with bound arguments; that callable is judged where the pickle "
    "names it";
constexpr std::string_view kReconstructor =
    "instantiates the class it is given; the class is judged where the pickle names it";

// Dangerous.
constexpr std::string_view kRunsCommands = "runs shell commands or other programs";
constexpr std::string_view kPlatform = "runs external programs (uname, file)";
constexpr std::string_view kEvaluates = "evaluates Python code";
constexpr std::string_view kCompiles = "compiles Python code (for exec/eval)";
constexpr std::string_view kImports = "imports any module";
constexpr std::string_view kOpensFiles = "opens files";
constexpr std::string_view kWritesFiles = "creates, changes or deletes files";
constexpr std::string_view kLoadsPickle = "loads another pickle (which can run code)";
constexpr std::string_view kNetwork = "opens network connections";
constexpr std::string_view kBrowser = "opens a web browser (runs a program)";
constexpr std::string_view kAsyncio = "runs subprocesses and opens network connections";
constexpr std::string_view kProcesses = "starts processes and unpickles what they send back";
constexpr std::string_view kInterpreter =
    "reaches the interpreter's internals (sys.modules, trace hooks, exit)";
constexpr std::string_view kGetattr =
    "gets any attribute of any object: the classic way to reach a dangerous function from a "
    "harmless-looking one";
constexpr std::string_view kMethodCaller = "calls any method of any object, chosen by name";
constexpr std::string_view kSetattr =
    "changes or deletes attributes of any object (can replace functions other code calls)";
constexpr std::string_view kNamespace =
    "hands out a namespace dictionary (a path to any function)";
constexpr std::string_view kInput = "reads the terminal (the load waits for whoever types)";
constexpr std::string_view kDebugger = "starts a debugger, which runs commands";
constexpr std::string_view kPager = "starts a pager program";
constexpr std::string_view kNative = "calls native code (loads shared libraries, writes memory)";
constexpr std::string_view kMarshal = "loads raw Python code objects";
constexpr std::string_view kCodeObjects = "builds functions from raw code objects";
constexpr std::string_view kSite = "runs .pth files and imports modules";
constexpr std::string_view kRunpy = "runs a module or script as code";
constexpr std::string_view kPydoc = "runs a pager program and imports any module";
constexpr std::string_view kInstalls = "installs packages or runs build commands";
constexpr std::string_view kLoggingConfig =
    "evaluates logging configuration (can import and call anything) and listens on a socket";
constexpr std::string_view kTorchHub = "downloads and runs code (torch.hub)";
constexpr std::string_view kTorchScript = "loads TorchScript programs";
constexpr std::string_view kTorchPackage = "imports Python code packaged in the file";
constexpr std::string_view kCompilesNative = "compiles and loads native code";
constexpr std::string_view kYaml = "builds arbitrary Python objects from YAML (can run code)";
constexpr std::string_view kExt =
    "names a global through the copyreg extension registry, process state that a static "
    "reader cannot see";
constexpr std::string_view kNonStringR =
    "STACK_GLOBAL on something other than strings: what it resolves to cannot be known "
    "statically";
constexpr std::string_view kDotted =
    "a dotted name walks the module's attributes (module 'torch', name "
    "'serialization.os.system' reaches os.system): where it ends cannot be judged statically";

struct ExactRule {
  std::string_view module;
  std::string_view name;
  GlobalCategory category;
  Meaning meaning;
  DType dtype;  // for kStorageType and kTorchDtype
  std::string_view reason;
};

// Sorted by (module, name), byte order; checked at compile time below.
constexpr ExactRule kExactRules[] = {
    {"_codecs", "encode", GlobalCategory::kAllowed, Meaning::kCodecsEncode, DType::F32, kCodecs},
    {"_io", "FileIO", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"_io", "open", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"_io", "open_code", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"_operator", "attrgetter", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kGetattr},
    {"_operator", "methodcaller", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kMethodCaller},
    {"builtins", "__import__", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kImports},
    {"builtins", "breakpoint", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kDebugger},
    {"builtins", "bytearray", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kBuiltinData},
    {"builtins", "compile", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kCompiles},
    {"builtins", "complex", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kBuiltinData},
    {"builtins", "delattr", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kSetattr},
    {"builtins", "eval", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kEvaluates},
    {"builtins", "exec", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kEvaluates},
    {"builtins", "execfile", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kEvaluates},
    {"builtins", "file", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"builtins", "frozenset", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kBuiltinData},
    {"builtins", "getattr", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kGetattr},
    {"builtins", "globals", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kNamespace},
    {"builtins", "help", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kPager},
    {"builtins", "input", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kInput},
    {"builtins", "locals", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kNamespace},
    {"builtins", "open", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"builtins", "raw_input", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kInput},
    {"builtins", "reload", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kImports},
    {"builtins", "set", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kBuiltinData},
    {"builtins", "setattr", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kSetattr},
    {"builtins", "slice", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kBuiltinData},
    {"builtins", "vars", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kNamespace},
    {"bz2", "BZ2File", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"bz2", "open", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"codecs", "open", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"collections", "OrderedDict", GlobalCategory::kAllowed, Meaning::kOrderedDict, DType::F32, kOrderedDictR},
    {"copyreg", "__newobj__", GlobalCategory::kUnknown, Meaning::kNone, DType::F32, kReconstructor},
    {"copyreg", "__newobj_ex__", GlobalCategory::kUnknown, Meaning::kNone, DType::F32, kReconstructor},
    {"copyreg", "_reconstructor", GlobalCategory::kUnknown, Meaning::kNone, DType::F32, kReconstructor},
    {"functools", "partial", GlobalCategory::kUnknown, Meaning::kNone, DType::F32, kPartial},
    {"functools", "reduce", GlobalCategory::kUnknown, Meaning::kNone, DType::F32, kPartial},
    {"gzip", "GzipFile", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"gzip", "open", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"io", "FileIO", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"io", "open", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"io", "open_code", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"joblib", "load", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kLoadsPickle},
    {"lzma", "LZMAFile", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"lzma", "open", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "DataSource", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "dtype", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kNumpyData},
    {"numpy", "fromfile", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "fromregex", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "genfromtxt", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "load", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kLoadsPickle},
    {"numpy", "loadtxt", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "memmap", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "ndarray", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kNumpyData},
    {"numpy", "save", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "savetxt", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "savez", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy", "savez_compressed", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"numpy._core.multiarray", "_reconstruct", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kNumpyData},
    {"numpy._core.multiarray", "scalar", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kNumpyData},
    {"numpy._core.numeric", "_frombuffer", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kNumpyData},
    {"numpy.core.multiarray", "_reconstruct", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kNumpyData},
    {"numpy.core.multiarray", "scalar", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kNumpyData},
    {"numpy.core.numeric", "_frombuffer", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kNumpyData},
    {"operator", "attrgetter", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kGetattr},
    {"operator", "methodcaller", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kMethodCaller},
    {"pandas", "eval", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kEvaluates},
    {"pandas", "read_pickle", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kLoadsPickle},
    {"torch", "BFloat16Storage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::BF16, kStorage},
    {"torch", "BFloat16Tensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "BoolStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::BOOL, kStorage},
    {"torch", "BoolTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "ByteStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::U8, kStorage},
    {"torch", "ByteTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "CharStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::I8, kStorage},
    {"torch", "CharTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "ComplexDoubleStorage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kStorageNoDtype},
    {"torch", "ComplexFloatStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::C64, kStorage},
    {"torch", "DoubleStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::F64, kStorage},
    {"torch", "DoubleTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "FloatStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::F32, kStorage},
    {"torch", "FloatTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "HalfStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::F16, kStorage},
    {"torch", "HalfTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "IntStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::I32, kStorage},
    {"torch", "IntTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "LongStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::I64, kStorage},
    {"torch", "LongTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "QInt32Storage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kStorageNoDtype},
    {"torch", "QInt8Storage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kStorageNoDtype},
    {"torch", "QUInt2x4Storage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kStorageNoDtype},
    {"torch", "QUInt4x2Storage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kStorageNoDtype},
    {"torch", "QUInt8Storage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kStorageNoDtype},
    {"torch", "ShortStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::I16, kStorage},
    {"torch", "ShortTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch", "Size", GlobalCategory::kAllowed, Meaning::kTorchSize, DType::F32, kSize},
    {"torch", "Tensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kTensorClass},
    {"torch", "TypedStorage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kTypedStorage},
    {"torch", "UntypedStorage", GlobalCategory::kAllowed, Meaning::kUntypedStorage, DType::F32, kUntyped},
    {"torch", "_TypedStorage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kTypedStorage},
    {"torch", "_UntypedStorage", GlobalCategory::kAllowed, Meaning::kUntypedStorage, DType::F32, kUntyped},
    {"torch", "bfloat16", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::BF16, kDtype},
    {"torch", "bool", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::BOOL, kDtype},
    {"torch", "cdouble", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kDtypeNoDType},
    {"torch", "cfloat", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::C64, kDtype},
    {"torch", "chalf", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kDtypeNoDType},
    {"torch", "complex128", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kDtypeNoDType},
    {"torch", "complex32", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kDtypeNoDType},
    {"torch", "complex64", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::C64, kDtype},
    {"torch", "device", GlobalCategory::kAllowed, Meaning::kTorchDevice, DType::F32, kDevice},
    {"torch", "double", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F64, kDtype},
    {"torch", "float", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F32, kDtype},
    {"torch", "float16", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F16, kDtype},
    {"torch", "float32", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F32, kDtype},
    {"torch", "float64", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F64, kDtype},
    {"torch", "float8_e4m3fn", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F8_E4M3, kDtype},
    {"torch", "float8_e5m2", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F8_E5M2, kDtype},
    {"torch", "float8_e8m0fnu", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F8_E8M0, kDtype},
    {"torch", "from_file", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kOpensFiles},
    {"torch", "half", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::F16, kDtype},
    {"torch", "int", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::I32, kDtype},
    {"torch", "int16", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::I16, kDtype},
    {"torch", "int32", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::I32, kDtype},
    {"torch", "int64", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::I64, kDtype},
    {"torch", "int8", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::I8, kDtype},
    {"torch", "load", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kLoadsPickle},
    {"torch", "long", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::I64, kDtype},
    {"torch", "save", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kWritesFiles},
    {"torch", "short", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::I16, kDtype},
    {"torch", "uint16", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::U16, kDtype},
    {"torch", "uint32", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::U32, kDtype},
    {"torch", "uint64", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::U64, kDtype},
    {"torch", "uint8", GlobalCategory::kAllowed, Meaning::kTorchDtype, DType::U8, kDtype},
    {"torch._C", "_load_for_lite_interpreter", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kTorchScript},
    {"torch._C", "_load_for_lite_interpreter_from_buffer", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kTorchScript},
    {"torch._C", "import_ir_module", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kTorchScript},
    {"torch._C", "import_ir_module_from_buffer", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kTorchScript},
    {"torch._tensor", "_rebuild_from_type_v2", GlobalCategory::kAllowed, Meaning::kRebuildFromTypeV2, DType::F32, kRebuild},
    {"torch._utils", "_import_dotted_name", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kImports},
    {"torch._utils", "_rebuild_device_tensor_from_numpy", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kRebuildOther},
    {"torch._utils", "_rebuild_meta_tensor_no_storage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kRebuildOther},
    {"torch._utils", "_rebuild_nested_tensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kRebuildOther},
    {"torch._utils", "_rebuild_parameter", GlobalCategory::kAllowed, Meaning::kRebuildParameter, DType::F32, kRebuild},
    {"torch._utils", "_rebuild_parameter_with_state", GlobalCategory::kAllowed, Meaning::kRebuildParameterWithState, DType::F32, kRebuild},
    {"torch._utils", "_rebuild_qtensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kRebuildOther},
    {"torch._utils", "_rebuild_sparse_csr_tensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kRebuildOther},
    {"torch._utils", "_rebuild_sparse_tensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kRebuildOther},
    {"torch._utils", "_rebuild_tensor", GlobalCategory::kAllowed, Meaning::kRebuildTensor, DType::F32, kRebuild},
    {"torch._utils", "_rebuild_tensor_v2", GlobalCategory::kAllowed, Meaning::kRebuildTensorV2, DType::F32, kRebuild},
    {"torch._utils", "_rebuild_tensor_v3", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kRebuildOther},
    {"torch._utils", "_rebuild_wrapper_subclass", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kRebuildOther},
    {"torch.cuda", "BFloat16Storage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::BF16, kStorage},
    {"torch.cuda", "BFloat16Tensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "BoolStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::BOOL, kStorage},
    {"torch.cuda", "BoolTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "ByteStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::U8, kStorage},
    {"torch.cuda", "ByteTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "CharStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::I8, kStorage},
    {"torch.cuda", "CharTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "ComplexDoubleStorage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kStorageNoDtype},
    {"torch.cuda", "ComplexFloatStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::C64, kStorage},
    {"torch.cuda", "DoubleStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::F64, kStorage},
    {"torch.cuda", "DoubleTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "FloatStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::F32, kStorage},
    {"torch.cuda", "FloatTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "HalfStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::F16, kStorage},
    {"torch.cuda", "HalfTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "IntStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::I32, kStorage},
    {"torch.cuda", "IntTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "LongStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::I64, kStorage},
    {"torch.cuda", "LongTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.cuda", "ShortStorage", GlobalCategory::kAllowed, Meaning::kStorageType, DType::I16, kStorage},
    {"torch.cuda", "ShortTensor", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kLegacyTensor},
    {"torch.nn.parameter", "Parameter", GlobalCategory::kAllowed, Meaning::kParameterClass, DType::F32, kParameter},
    {"torch.serialization", "_get_layout", GlobalCategory::kAllowed, Meaning::kBenignData, DType::F32, kLayout},
    {"torch.storage", "TypedStorage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kTypedStorage},
    {"torch.storage", "UntypedStorage", GlobalCategory::kAllowed, Meaning::kUntypedStorage, DType::F32, kUntyped},
    {"torch.storage", "_TypedStorage", GlobalCategory::kAllowed, Meaning::kNone, DType::F32, kTypedStorage},
    {"torch.storage", "_UntypedStorage", GlobalCategory::kAllowed, Meaning::kUntypedStorage, DType::F32, kUntyped},
    {"torch.storage", "_load_from_bytes", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kLoadsPickle},
    {"yaml", "full_load", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kYaml},
    {"yaml", "full_load_all", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kYaml},
    {"yaml", "load", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kYaml},
    {"yaml", "load_all", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kYaml},
    {"yaml", "unsafe_load", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kYaml},
    {"yaml", "unsafe_load_all", GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kYaml},
};

struct ModuleRule {
  std::string_view module;  // matches itself and its submodules
  GlobalCategory category;
  Meaning meaning;
  std::string_view reason;
};

// Sorted by module, byte order.
constexpr ModuleRule kModuleRules[] = {
    {"<non-string>", GlobalCategory::kDangerous, Meaning::kNone, kNonStringR},
    {"BaseHTTPServer", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"CGIHTTPServer", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"DocXMLRPCServer", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"SimpleHTTPServer", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"SimpleXMLRPCServer", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"SocketServer", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"_ctypes", GlobalCategory::kDangerous, Meaning::kNone, kNative},
    {"_pickle", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"_posixsubprocess", GlobalCategory::kDangerous, Meaning::kNone, kRunsCommands},
    {"_socket", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"_winapi", GlobalCategory::kDangerous, Meaning::kNone, kRunsCommands},
    {"aiohttp", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"anydbm", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"asynchat", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"asyncio", GlobalCategory::kDangerous, Meaning::kNone, kAsyncio},
    {"asyncore", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"bdb", GlobalCategory::kDangerous, Meaning::kNone, kDebugger},
    {"builtins", GlobalCategory::kUnknown, Meaning::kNone, kOtherBuiltin},
    {"cPickle", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"cProfile", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"cffi", GlobalCategory::kDangerous, Meaning::kNone, kNative},
    {"cloudpickle", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"code", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"codeop", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"commands", GlobalCategory::kDangerous, Meaning::kNone, kRunsCommands},
    {"compileall", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"copyreg extension registry", GlobalCategory::kDangerous, Meaning::kNone, kExt},
    {"ctypes", GlobalCategory::kDangerous, Meaning::kNone, kNative},
    {"dbhash", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"dbm", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"dill", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"distutils", GlobalCategory::kDangerous, Meaning::kNone, kInstalls},
    {"doctest", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"dumbdbm", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"ensurepip", GlobalCategory::kDangerous, Meaning::kNone, kInstalls},
    {"fileinput", GlobalCategory::kDangerous, Meaning::kNone, kOpensFiles},
    {"ftplib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"gdbm", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"http", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"httplib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"httpx", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"idlelib", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"imaplib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"imp", GlobalCategory::kDangerous, Meaning::kNone, kImports},
    {"importlib", GlobalCategory::kDangerous, Meaning::kNone, kImports},
    {"linecache", GlobalCategory::kDangerous, Meaning::kNone, kOpensFiles},
    {"logging.config", GlobalCategory::kDangerous, Meaning::kNone, kLoggingConfig},
    {"marshal", GlobalCategory::kDangerous, Meaning::kNone, kMarshal},
    {"multiprocessing", GlobalCategory::kDangerous, Meaning::kNone, kProcesses},
    {"nntplib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"nt", GlobalCategory::kDangerous, Meaning::kNone, kRunsCommands},
    {"numpy.ctypeslib", GlobalCategory::kDangerous, Meaning::kNone, kNative},
    {"numpy.distutils", GlobalCategory::kDangerous, Meaning::kNone, kInstalls},
    {"numpy.dtypes", GlobalCategory::kAllowed, Meaning::kBenignData, kNumpyData},
    {"numpy.f2py", GlobalCategory::kDangerous, Meaning::kNone, kCompilesNative},
    {"numpy.lib._datasource", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"numpy.lib._npyio_impl", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"numpy.lib.npyio", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"numpy.testing", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"os", GlobalCategory::kDangerous, Meaning::kNone, kRunsCommands},
    {"pandas.io", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"pdb", GlobalCategory::kDangerous, Meaning::kNone, kDebugger},
    {"pickle", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"pip", GlobalCategory::kDangerous, Meaning::kNone, kInstalls},
    {"pkgutil", GlobalCategory::kDangerous, Meaning::kNone, kImports},
    {"platform", GlobalCategory::kDangerous, Meaning::kNone, kPlatform},
    {"poplib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"posix", GlobalCategory::kDangerous, Meaning::kNone, kRunsCommands},
    {"profile", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"pty", GlobalCategory::kDangerous, Meaning::kNone, kRunsCommands},
    {"py_compile", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"pydoc", GlobalCategory::kDangerous, Meaning::kNone, kPydoc},
    {"requests", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"runpy", GlobalCategory::kDangerous, Meaning::kNone, kRunpy},
    {"setuptools", GlobalCategory::kDangerous, Meaning::kNone, kInstalls},
    {"shelve", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"shutil", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"site", GlobalCategory::kDangerous, Meaning::kNone, kSite},
    {"smtplib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"socket", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"socketserver", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"sqlite3", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"ssl", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"subprocess", GlobalCategory::kDangerous, Meaning::kNone, kRunsCommands},
    {"sys", GlobalCategory::kDangerous, Meaning::kNone, kInterpreter},
    {"tarfile", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"telnetlib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"tempfile", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"timeit", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"torch.hub", GlobalCategory::kDangerous, Meaning::kNone, kTorchHub},
    {"torch.jit", GlobalCategory::kDangerous, Meaning::kNone, kTorchScript},
    {"torch.package", GlobalCategory::kDangerous, Meaning::kNone, kTorchPackage},
    {"torch.serialization", GlobalCategory::kDangerous, Meaning::kNone, kLoadsPickle},
    {"torch.utils.cpp_extension", GlobalCategory::kDangerous, Meaning::kNone, kCompilesNative},
    {"trace", GlobalCategory::kDangerous, Meaning::kNone, kEvaluates},
    {"types", GlobalCategory::kDangerous, Meaning::kNone, kCodeObjects},
    {"urllib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"urllib2", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"urllib3", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"venv", GlobalCategory::kDangerous, Meaning::kNone, kInstalls},
    {"webbrowser", GlobalCategory::kDangerous, Meaning::kNone, kBrowser},
    {"whichdb", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"xmlrpc", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"xmlrpclib", GlobalCategory::kDangerous, Meaning::kNone, kNetwork},
    {"zipfile", GlobalCategory::kDangerous, Meaning::kNone, kWritesFiles},
    {"zipimport", GlobalCategory::kDangerous, Meaning::kNone, kImports},
};

constexpr bool exact_less(const ExactRule& a, const ExactRule& b) {
  return a.module != b.module ? a.module < b.module : a.name < b.name;
}
constexpr bool exact_sorted() {
  for (size_t i = 1; i < std::size(kExactRules); ++i)
    if (!exact_less(kExactRules[i - 1], kExactRules[i])) return false;
  return true;
}
constexpr bool modules_sorted() {
  for (size_t i = 1; i < std::size(kModuleRules); ++i)
    if (!(kModuleRules[i - 1].module < kModuleRules[i].module)) return false;
  return true;
}
static_assert(exact_sorted(), "kExactRules must be sorted by (module, name) without duplicates");
static_assert(modules_sorted(), "kModuleRules must be sorted by module without duplicates");

/// Python 2 module names that Python 3's unpickler (fix_imports) turns into these.
std::string_view py3_module(std::string_view module) {
  if (module == "__builtin__" || module == "__builtins__" || module == "exceptions")
    return "builtins";
  if (module == "copy_reg") return "copyreg";
  return module;
}

const ExactRule* find_exact(std::string_view module, std::string_view name) {
  const ExactRule key{module, name, GlobalCategory::kUnknown, Meaning::kNone, DType::F32, {}};
  const ExactRule* end = std::end(kExactRules);
  const ExactRule* it = std::lower_bound(std::begin(kExactRules), end, key, exact_less);
  return it != end && it->module == module && it->name == name ? it : nullptr;
}

/// The longest module rule that is `module` or a dot-separated prefix of it.
const ModuleRule* find_module(std::string_view module) {
  const auto less = [](const ModuleRule& r, std::string_view m) { return r.module < m; };
  while (true) {
    const ModuleRule* end = std::end(kModuleRules);
    const ModuleRule* it = std::lower_bound(std::begin(kModuleRules), end, module, less);
    if (it != end && it->module == module) return it;
    const size_t dot = module.rfind('.');
    if (dot == std::string_view::npos) return nullptr;
    module = module.substr(0, dot);
  }
}

}  // namespace

GlobalClass classify_global(std::string_view module, std::string_view name) {
  module = py3_module(module);
  if (const ExactRule* r = find_exact(module, name))
    return {r->category, r->meaning, r->dtype, r->reason};
  if (name.find('.') != std::string_view::npos || name == "<non-string>")
    return {GlobalCategory::kDangerous, Meaning::kNone, DType::F32,
            name == "<non-string>" ? kNonStringR : kDotted};
  if (const ModuleRule* r = find_module(module))
    return {r->category, r->meaning, DType::F32, r->reason};
  return {GlobalCategory::kUnknown, Meaning::kNone, DType::F32, kUnknownDefault};
}

}  // namespace ckptkit::pickle
