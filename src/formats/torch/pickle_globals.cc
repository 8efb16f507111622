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
//   5. A global the pickle *calls* (Global::called: REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ, or the
//      callable functools.partial / copyreg's constructors are handed) that no rule above
//      decided, or that only the catch-all `builtins` rule decided, is dangerous when its
//      module is PyTorch's or the standard library's — unless it is one of the benign
//      constructors real checkpoints carry (`kBenignCalls`: argparse.Namespace, pathlib paths,
//      datetime, decimal, fractions, enum, collections, uuid, TorchVersion, nn.Module classes
//      of whole-model pickles, the plain built-in types). Both supplies of gadgets keep
//      growing (every picklescan advisory of 2025 was a torch or standard-library function
//      that runs a command, evaluates a string or unpickles bytes); a list of them is always
//      one advisory behind, and real checkpoints call only a few data constructors from
//      there. Third-party and user classes (Lightning callbacks, omegaconf containers, a
//      user's __main__ classes) stay kUnknown whether called or not: ckptkit cannot know
//      their code, and checkpoints carry them all the time.
//   6. Anything else is kUnknown. Its origin (`global_origin`: PyTorch, standard library or
//      third party) is what the scan summary names.
//
// Known gadgets are rows of their own, whatever rule 5 would say, so that the reason names
// the advisory (the sources are listed in docs/formats.md, "`scan` categories"): the
// picklescan security advisories of 2025-2026 (GHSA-…), JFrog's CVE-2025-10155/10156/10157
// classes, fickling's unsafe-imports list and modelscan's unsafe globals.
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
//     and torch.utils.cpp_extension are dangerous as whole modules, and so are the modules that
//     published gadgets live in (torch._dynamo, torch._inductor, torch.utils.bottleneck,
//     torch.utils.collect_env, torch.utils._config_module, torch.fx.experimental.
//     symbolic_shapes, torch.utils.data.datapipes.utils.decoder): none of them has anything a
//     checkpoint needs.
//   * Benign constructors (rule 5) stay kUnknown, not kAllowed: torch.load(weights_only=True)
//     refuses them, and they do import a module; they are simply not dangerous to call.
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
constexpr std::string_view kProcesses = "starts processes and unpickles what they send back";
constexpr std::string_view kInterpreter =
    "reaches the interpreter's internals (sys.modules, trace hooks, exit)";
constexpr std::string_view kGetattr =
    "gets any attribute of any object: the classic way to reach a dangerous function from a "
    "harmless-looking one";
constexpr std::string_view kMethodCaller = "calls any method of any object, chosen by name";
constexpr std::string_view kSetattr =
    "changes or deletes attributes of any object (can replace functions other code calls)";
constexpr std::string_view kNamespace = "hands out a namespace dictionary (a path to any function)";
constexpr std::string_view kInput = "reads the terminal (the load waits for whoever types)";
constexpr std::string_view kDebugger = "starts a debugger, which runs commands";
constexpr std::string_view kPager = "starts a pager program";
constexpr std::string_view kNative = "calls native code (loads shared libraries, writes memory)";
constexpr std::string_view kCodeObjects = "builds functions from raw code objects";
constexpr std::string_view kSite = "runs .pth files and imports modules";
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
// Gadgets from published advisories (picklescan GHSA-…, JFrog CVE-2025-1015x, fickling,
// modelscan). Each names what it does and where it was published.
constexpr std::string_view kCollectEnv =
    "runs shell commands: torch.utils.collect_env.run and run_and_read_all (picklescan "
    "GHSA-f745-w6jp-hpxx, GHSA-jhph-76pp-mggw)";
constexpr std::string_view kBottleneck =
    "runs Python code under a profiler: torch.utils.bottleneck.__main__.run_cprofile and "
    "run_autograd_prof (picklescan GHSA-4r9r-ch6f-vxmx, GHSA-4whj-rm5r-c2v8)";
constexpr std::string_view kDynamo =
    "evaluates guard expressions and compiles code: torch._dynamo.guards.GuardBuilder.get "
    "(picklescan GHSA-86cj-95qr-2p4f); torch._dynamo.utils compiles and runs code too";
constexpr std::string_view kInductor =
    "compiles and loads native code and runs compiler commands: "
    "torch._inductor.codecache.compile_file (picklescan unsafe-globals list)";
constexpr std::string_view kSymbolicShapes =
    "evaluates guard expressions: torch.fx.experimental.symbolic_shapes.ShapeEnv."
    "evaluate_guards_expression (picklescan GHSA-f4x7-rfwp-v3xw)";
constexpr std::string_view kDatapipeDecoder =
    "unpickles the bytes it is given: torch.utils.data.datapipes.utils.decoder.basichandlers "
    "(picklescan GHSA-h3qp-7fh3-f8h4)";
constexpr std::string_view kJitExecWrapper =
    "executes Python code: torch.jit.unsupported_tensor_ops.execWrapper (picklescan "
    "GHSA-vr7h-p6mm-wpmh)";
constexpr std::string_view kConfigModule =
    "unpickles the bytes it is given: torch.utils._config_module.ConfigModule.load_config "
    "(picklescan GHSA-vv6j-3g6g-2pvj)";
constexpr std::string_view kTorchLoadGadget =
    "loads another checkpoint with torch.load, which can run code (picklescan "
    "unsafe-globals list: torch.serialization.load, also reached through functools.partial)";
constexpr std::string_view kCProfile =
    "runs Python code: cProfile.run and runctx (picklescan GHSA-49gj-c84q-6qm9, "
    "GHSA-9w88-8rmg-7g2p)";
constexpr std::string_view kProfile =
    "runs Python code: profile.Profile.run and runctx (picklescan GHSA-x696-vm39-cp64, "
    "GHSA-6vqj-c2q5-j97w)";
constexpr std::string_view kTrace =
    "runs Python code: trace.Trace.run and runctx (picklescan GHSA-5qwp-399c-mjwf, "
    "GHSA-g344-hcph-8vgg)";
constexpr std::string_view kDoctest =
    "runs Python code: doctest.debug_script (picklescan GHSA-fqq6-7vqf-w3fg)";
constexpr std::string_view kEnsurepip =
    "runs pip in a new Python process with code built from its arguments: ensurepip._run_pip "
    "(picklescan GHSA-xp4f-hrf8-rxw7)";
constexpr std::string_view kLib2to3 =
    "evaluates strings and unpickles bytes: lib2to3.pgen2.pgen.ParserGenerator.make_label "
    "(picklescan GHSA-p9w7-82w4-7q8m), lib2to3.pgen2.grammar.Grammar.loads "
    "(GHSA-f54q-57x4-jg88)";
constexpr std::string_view kIdlelib =
    "runs Python code: idlelib.run.Executive.runcode (picklescan GHSA-m869-42cg-3xwr), "
    "idlelib.pyshell.ModifiedInterpreter.runcommand/runcode (GHSA-j343-8v2j-ff7w, "
    "GHSA-3gf5-cxq9-w223), idlelib.debugobj.ObjectTreeItem.SetText (GHSA-3vg9-h568-4w9m), "
    "idlelib.autocomplete.AutoComplete.get_entity/fetch_completions (GHSA-6w4w-5w54-rjvr, "
    "GHSA-7cq8-mj8x-j263), idlelib.calltip.Calltip.fetch_tip and get_entity "
    "(GHSA-8r4j-24qv-fmq9, GHSA-9xph-j2h6-g47v)";
constexpr std::string_view kCodeModule =
    "runs Python code: code.InteractiveInterpreter.runcode (picklescan GHSA-cj3c-v495-4xqh)";
constexpr std::string_view kTimeit =
    "runs Python code: timeit.timeit (picklescan GHSA-v7x6-rv5q-mhwc)";
constexpr std::string_view kAsyncioGadget =
    "runs subprocesses and opens network connections: asyncio.unix_events."
    "_UnixSubprocessTransport._start (picklescan GHSA-q77w-mwjj-7mqx, GHSA-jgw4-cr84-mqxg; "
    "JFrog CVE-2025-10157: a submodule of a listed module)";
constexpr std::string_view kDistutils =
    "writes files and runs build commands: distutils.file_util.write_file (picklescan "
    "GHSA-m273-6v24-x4m4)";
constexpr std::string_view kCtypesGadget =
    "calls native code (loads shared libraries, writes memory): ctypes.CDLL (picklescan "
    "GHSA-4675-36f9-wf6r)";
constexpr std::string_view kPydocGadget =
    "imports any module by name and runs a pager program: pydoc.locate with "
    "operator.methodcaller (picklescan GHSA-84r2-jw7c-4r5q), pydoc.pipepager";
constexpr std::string_view kPtyGadget =
    "runs programs on a terminal: pty.spawn (picklescan GHSA-vqmv-47xg-9wpr)";
constexpr std::string_view kF2py =
    "evaluates Fortran expressions as Python: numpy.f2py.crackfortran.getlincoef "
    "(picklescan GHSA-r8g5-cgf2-4m4m); f2py also compiles and loads native code";
constexpr std::string_view kPkgutilGadget =
    "resolves any dotted name to an object, importing as it goes: pkgutil.resolve_name "
    "(picklescan GHSA-vvpj-8cmc-gx39)";
constexpr std::string_view kOperatorGadget =
    "gets any attribute of any object: operator.attrgetter, also as _operator (picklescan "
    "GHSA-955r-x9j8-7rhh, GHSA-46h3-79wf-xr6c)";
constexpr std::string_view kItemGetter =
    "gets any item of any object (a namespace dictionary's functions): operator.itemgetter "
    "(picklescan unsafe-globals list)";
constexpr std::string_view kNumpyRunstring =
    "runs Python code: numpy.testing._private.utils.runstring (picklescan unsafe-globals "
    "list)";
constexpr std::string_view kRunpyGadget =
    "runs a module or script as code: runpy._run_code (picklescan, modelscan unsafe globals)";
constexpr std::string_view kVenvGadget =
    "creates environments and runs pip with arguments from the pickle: venv.create "
    "(picklescan unsafe-globals list)";
constexpr std::string_view kImportlibGadget =
    "imports any module by name: importlib.import_module (reported to picklescan, PR 74, "
    "as a universal bypass)";
constexpr std::string_view kMarshalGadget =
    "loads raw Python code objects: marshal.loads (reported to picklescan, PR 74)";
constexpr std::string_view kApply = "calls any callable with any arguments (Python 2 apply)";
constexpr std::string_view kLoadmat =
    "reads a MATLAB file from any path the pickle names: scipy.io.loadmat";
// Rule 5: calls no table decides.
constexpr std::string_view kTorchCalled =
    "a PyTorch function or class outside torch.load's allowlist that the pickle calls: "
    "PyTorch's own modules hold many published code-execution gadgets (collect_env.run, "
    "codecache.compile_file, …) and checkpoints call none of them";
constexpr std::string_view kStdlibCalled =
    "a standard-library function or class that the pickle calls and that is not a benign "
    "data constructor: the standard library holds many published code-execution gadgets "
    "(ensurepip._run_pip, cProfile.run, doctest.debug_script, …)";
constexpr std::string_view kBuiltinCalled =
    "a Python built-in outside the allowlist that the pickle calls (only the plain data types "
    "are benign to call)";
// Benign constructors (kUnknown even when called).
constexpr std::string_view kBenignStdlib =
    "a standard-library data class that checkpoints carry (argparse.Namespace, pathlib paths, "
    "datetime, decimal, enum, collections types, …): builds plain data";
constexpr std::string_view kBenignBuiltin =
    "a built-in data type (dict, list, int, str, …): builds plain data";
constexpr std::string_view kTorchVersion =
    "torch.torch_version.TorchVersion, a version string Lightning checkpoints carry";
constexpr std::string_view kTorchModule =
    "an nn.Module class, as whole-model pickles (torch.save(model)) carry: builds layers";
constexpr std::string_view kDotted =
    "a dotted name walks the module's attributes (module 'torch', name "
    "'serialization.os.system' reaches os.system): where it ends cannot be judged statically";

constexpr GlobalCategory A = GlobalCategory::kAllowed;
constexpr GlobalCategory U = GlobalCategory::kUnknown;
constexpr GlobalCategory D = GlobalCategory::kDangerous;
using M = Meaning;

struct ExactRule {
  std::string_view module;
  std::string_view name;
  GlobalCategory category;
  Meaning meaning;
  std::string_view reason;
  DType dtype = DType::F32;  // for kStorageType and kTorchDtype
};

// Sorted by (module, name), byte order; checked at compile time below.
constexpr ExactRule kExactRules[] = {
    {"_codecs", "encode", A, M::kCodecsEncode, kCodecs},
    {"_io", "FileIO", D, M::kNone, kOpensFiles},
    {"_io", "open", D, M::kNone, kOpensFiles},
    {"_io", "open_code", D, M::kNone, kOpensFiles},
    {"_operator", "attrgetter", D, M::kNone, kOperatorGadget},
    {"_operator", "itemgetter", D, M::kNone, kItemGetter},
    {"_operator", "methodcaller", D, M::kNone, kMethodCaller},
    {"argparse", "Namespace", U, M::kNone, kBenignStdlib},
    {"asyncio.unix_events", "_UnixSubprocessTransport._start", D, M::kNone, kAsyncioGadget},
    {"builtins", "__import__", D, M::kNone, kImports},
    {"builtins", "apply", D, M::kNone, kApply},
    {"builtins", "bool", U, M::kNone, kBenignBuiltin},
    {"builtins", "breakpoint", D, M::kNone, kDebugger},
    {"builtins", "bytearray", A, M::kBenignData, kBuiltinData},
    {"builtins", "bytes", U, M::kNone, kBenignBuiltin},
    {"builtins", "compile", D, M::kNone, kCompiles},
    {"builtins", "complex", A, M::kBenignData, kBuiltinData},
    {"builtins", "delattr", D, M::kNone, kSetattr},
    {"builtins", "dict", U, M::kNone, kBenignBuiltin},
    {"builtins", "eval", D, M::kNone, kEvaluates},
    {"builtins", "exec", D, M::kNone, kEvaluates},
    {"builtins", "execfile", D, M::kNone, kEvaluates},
    {"builtins", "file", D, M::kNone, kOpensFiles},
    {"builtins", "float", U, M::kNone, kBenignBuiltin},
    {"builtins", "frozenset", A, M::kBenignData, kBuiltinData},
    {"builtins", "getattr", D, M::kNone, kGetattr},
    {"builtins", "globals", D, M::kNone, kNamespace},
    {"builtins", "help", D, M::kNone, kPager},
    {"builtins", "input", D, M::kNone, kInput},
    {"builtins", "int", U, M::kNone, kBenignBuiltin},
    {"builtins", "list", U, M::kNone, kBenignBuiltin},
    {"builtins", "locals", D, M::kNone, kNamespace},
    {"builtins", "object", U, M::kNone, kBenignBuiltin},
    {"builtins", "open", D, M::kNone, kOpensFiles},
    {"builtins", "range", U, M::kNone, kBenignBuiltin},
    {"builtins", "raw_input", D, M::kNone, kInput},
    {"builtins", "reload", D, M::kNone, kImports},
    {"builtins", "set", A, M::kBenignData, kBuiltinData},
    {"builtins", "setattr", D, M::kNone, kSetattr},
    {"builtins", "slice", A, M::kBenignData, kBuiltinData},
    {"builtins", "str", U, M::kNone, kBenignBuiltin},
    {"builtins", "tuple", U, M::kNone, kBenignBuiltin},
    {"builtins", "vars", D, M::kNone, kNamespace},
    {"bz2", "BZ2File", D, M::kNone, kOpensFiles},
    {"bz2", "open", D, M::kNone, kOpensFiles},
    {"cProfile", "run", D, M::kNone, kCProfile},
    {"cProfile", "runctx", D, M::kNone, kCProfile},
    {"code", "InteractiveInterpreter.runcode", D, M::kNone, kCodeModule},
    {"codecs", "open", D, M::kNone, kOpensFiles},
    {"collections", "OrderedDict", A, M::kOrderedDict, kOrderedDictR},
    {"copyreg", "__newobj__", U, M::kNone, kReconstructor},
    {"copyreg", "__newobj_ex__", U, M::kNone, kReconstructor},
    {"copyreg", "_reconstructor", U, M::kNone, kReconstructor},
    {"ctypes", "CDLL", D, M::kNone, kCtypesGadget},
    {"distutils.file_util", "write_file", D, M::kNone, kDistutils},
    {"doctest", "debug_script", D, M::kNone, kDoctest},
    {"ensurepip", "_run_pip", D, M::kNone, kEnsurepip},
    {"functools", "partial", U, M::kNone, kPartial},
    {"functools", "reduce", U, M::kNone, kPartial},
    {"gzip", "GzipFile", D, M::kNone, kOpensFiles},
    {"gzip", "open", D, M::kNone, kOpensFiles},
    {"idlelib.autocomplete", "AutoComplete.fetch_completions", D, M::kNone, kIdlelib},
    {"idlelib.autocomplete", "AutoComplete.get_entity", D, M::kNone, kIdlelib},
    {"idlelib.calltip", "Calltip.fetch_tip", D, M::kNone, kIdlelib},
    {"idlelib.calltip", "get_entity", D, M::kNone, kIdlelib},
    {"idlelib.debugobj", "ObjectTreeItem.SetText", D, M::kNone, kIdlelib},
    {"idlelib.pyshell", "ModifiedInterpreter.runcode", D, M::kNone, kIdlelib},
    {"idlelib.pyshell", "ModifiedInterpreter.runcommand", D, M::kNone, kIdlelib},
    {"idlelib.run", "Executive.runcode", D, M::kNone, kIdlelib},
    {"importlib", "import_module", D, M::kNone, kImportlibGadget},
    {"io", "FileIO", D, M::kNone, kOpensFiles},
    {"io", "open", D, M::kNone, kOpensFiles},
    {"io", "open_code", D, M::kNone, kOpensFiles},
    {"joblib", "load", D, M::kNone, kLoadsPickle},
    {"lib2to3.pgen2.grammar", "Grammar.loads", D, M::kNone, kLib2to3},
    {"lib2to3.pgen2.pgen", "ParserGenerator.make_label", D, M::kNone, kLib2to3},
    {"lzma", "LZMAFile", D, M::kNone, kOpensFiles},
    {"lzma", "open", D, M::kNone, kOpensFiles},
    {"marshal", "loads", D, M::kNone, kMarshalGadget},
    {"numpy", "DataSource", D, M::kNone, kOpensFiles},
    {"numpy", "dtype", A, M::kBenignData, kNumpyData},
    {"numpy", "fromfile", D, M::kNone, kOpensFiles},
    {"numpy", "fromregex", D, M::kNone, kOpensFiles},
    {"numpy", "genfromtxt", D, M::kNone, kOpensFiles},
    {"numpy", "load", D, M::kNone, kLoadsPickle},
    {"numpy", "loadtxt", D, M::kNone, kOpensFiles},
    {"numpy", "memmap", D, M::kNone, kOpensFiles},
    {"numpy", "ndarray", A, M::kBenignData, kNumpyData},
    {"numpy", "save", D, M::kNone, kOpensFiles},
    {"numpy", "savetxt", D, M::kNone, kOpensFiles},
    {"numpy", "savez", D, M::kNone, kOpensFiles},
    {"numpy", "savez_compressed", D, M::kNone, kOpensFiles},
    {"numpy._core.multiarray", "_reconstruct", A, M::kBenignData, kNumpyData},
    {"numpy._core.multiarray", "scalar", A, M::kBenignData, kNumpyData},
    {"numpy._core.numeric", "_frombuffer", A, M::kBenignData, kNumpyData},
    {"numpy.core.multiarray", "_reconstruct", A, M::kBenignData, kNumpyData},
    {"numpy.core.multiarray", "scalar", A, M::kBenignData, kNumpyData},
    {"numpy.core.numeric", "_frombuffer", A, M::kBenignData, kNumpyData},
    {"numpy.f2py.crackfortran", "getlincoef", D, M::kNone, kF2py},
    {"numpy.testing._private.utils", "runstring", D, M::kNone, kNumpyRunstring},
    {"operator", "attrgetter", D, M::kNone, kOperatorGadget},
    {"operator", "itemgetter", D, M::kNone, kItemGetter},
    {"operator", "methodcaller", D, M::kNone, kMethodCaller},
    {"pandas", "eval", D, M::kNone, kEvaluates},
    {"pandas", "read_pickle", D, M::kNone, kLoadsPickle},
    {"pkgutil", "resolve_name", D, M::kNone, kPkgutilGadget},
    {"profile", "Profile.run", D, M::kNone, kProfile},
    {"profile", "Profile.runctx", D, M::kNone, kProfile},
    {"pty", "spawn", D, M::kNone, kPtyGadget},
    {"pydoc", "locate", D, M::kNone, kPydocGadget},
    {"pydoc", "pipepager", D, M::kNone, kPydocGadget},
    {"runpy", "_run_code", D, M::kNone, kRunpyGadget},
    {"scipy.io", "loadmat", D, M::kNone, kLoadmat},
    {"timeit", "timeit", D, M::kNone, kTimeit},
    {"torch", "BFloat16Storage", A, M::kStorageType, kStorage, DType::BF16},
    {"torch", "BFloat16Tensor", A, M::kNone, kLegacyTensor},
    {"torch", "BoolStorage", A, M::kStorageType, kStorage, DType::BOOL},
    {"torch", "BoolTensor", A, M::kNone, kLegacyTensor},
    {"torch", "ByteStorage", A, M::kStorageType, kStorage, DType::U8},
    {"torch", "ByteTensor", A, M::kNone, kLegacyTensor},
    {"torch", "CharStorage", A, M::kStorageType, kStorage, DType::I8},
    {"torch", "CharTensor", A, M::kNone, kLegacyTensor},
    {"torch", "ComplexDoubleStorage", A, M::kNone, kStorageNoDtype},
    {"torch", "ComplexFloatStorage", A, M::kStorageType, kStorage, DType::C64},
    {"torch", "DoubleStorage", A, M::kStorageType, kStorage, DType::F64},
    {"torch", "DoubleTensor", A, M::kNone, kLegacyTensor},
    {"torch", "FloatStorage", A, M::kStorageType, kStorage, DType::F32},
    {"torch", "FloatTensor", A, M::kNone, kLegacyTensor},
    {"torch", "HalfStorage", A, M::kStorageType, kStorage, DType::F16},
    {"torch", "HalfTensor", A, M::kNone, kLegacyTensor},
    {"torch", "IntStorage", A, M::kStorageType, kStorage, DType::I32},
    {"torch", "IntTensor", A, M::kNone, kLegacyTensor},
    {"torch", "LongStorage", A, M::kStorageType, kStorage, DType::I64},
    {"torch", "LongTensor", A, M::kNone, kLegacyTensor},
    {"torch", "QInt32Storage", A, M::kNone, kStorageNoDtype},
    {"torch", "QInt8Storage", A, M::kNone, kStorageNoDtype},
    {"torch", "QUInt2x4Storage", A, M::kNone, kStorageNoDtype},
    {"torch", "QUInt4x2Storage", A, M::kNone, kStorageNoDtype},
    {"torch", "QUInt8Storage", A, M::kNone, kStorageNoDtype},
    {"torch", "ShortStorage", A, M::kStorageType, kStorage, DType::I16},
    {"torch", "ShortTensor", A, M::kNone, kLegacyTensor},
    {"torch", "Size", A, M::kTorchSize, kSize},
    {"torch", "Tensor", A, M::kNone, kTensorClass},
    {"torch", "TypedStorage", A, M::kNone, kTypedStorage},
    {"torch", "UntypedStorage", A, M::kUntypedStorage, kUntyped},
    {"torch", "_TypedStorage", A, M::kNone, kTypedStorage},
    {"torch", "_UntypedStorage", A, M::kUntypedStorage, kUntyped},
    {"torch", "bfloat16", A, M::kTorchDtype, kDtype, DType::BF16},
    {"torch", "bool", A, M::kTorchDtype, kDtype, DType::BOOL},
    {"torch", "cdouble", A, M::kNone, kDtypeNoDType},
    {"torch", "cfloat", A, M::kTorchDtype, kDtype, DType::C64},
    {"torch", "chalf", A, M::kNone, kDtypeNoDType},
    {"torch", "complex128", A, M::kNone, kDtypeNoDType},
    {"torch", "complex32", A, M::kNone, kDtypeNoDType},
    {"torch", "complex64", A, M::kTorchDtype, kDtype, DType::C64},
    {"torch", "device", A, M::kTorchDevice, kDevice},
    {"torch", "double", A, M::kTorchDtype, kDtype, DType::F64},
    {"torch", "float", A, M::kTorchDtype, kDtype, DType::F32},
    {"torch", "float16", A, M::kTorchDtype, kDtype, DType::F16},
    {"torch", "float32", A, M::kTorchDtype, kDtype, DType::F32},
    {"torch", "float64", A, M::kTorchDtype, kDtype, DType::F64},
    {"torch", "float8_e4m3fn", A, M::kTorchDtype, kDtype, DType::F8_E4M3},
    {"torch", "float8_e5m2", A, M::kTorchDtype, kDtype, DType::F8_E5M2},
    {"torch", "float8_e8m0fnu", A, M::kTorchDtype, kDtype, DType::F8_E8M0},
    {"torch", "from_file", D, M::kNone, kOpensFiles},
    {"torch", "half", A, M::kTorchDtype, kDtype, DType::F16},
    {"torch", "int", A, M::kTorchDtype, kDtype, DType::I32},
    {"torch", "int16", A, M::kTorchDtype, kDtype, DType::I16},
    {"torch", "int32", A, M::kTorchDtype, kDtype, DType::I32},
    {"torch", "int64", A, M::kTorchDtype, kDtype, DType::I64},
    {"torch", "int8", A, M::kTorchDtype, kDtype, DType::I8},
    {"torch", "load", D, M::kNone, kLoadsPickle},
    {"torch", "long", A, M::kTorchDtype, kDtype, DType::I64},
    {"torch", "save", D, M::kNone, kWritesFiles},
    {"torch", "short", A, M::kTorchDtype, kDtype, DType::I16},
    {"torch", "uint16", A, M::kTorchDtype, kDtype, DType::U16},
    {"torch", "uint32", A, M::kTorchDtype, kDtype, DType::U32},
    {"torch", "uint64", A, M::kTorchDtype, kDtype, DType::U64},
    {"torch", "uint8", A, M::kTorchDtype, kDtype, DType::U8},
    {"torch._C", "_load_for_lite_interpreter", D, M::kNone, kTorchScript},
    {"torch._C", "_load_for_lite_interpreter_from_buffer", D, M::kNone, kTorchScript},
    {"torch._C", "import_ir_module", D, M::kNone, kTorchScript},
    {"torch._C", "import_ir_module_from_buffer", D, M::kNone, kTorchScript},
    {"torch._dynamo.guards", "GuardBuilder.get", D, M::kNone, kDynamo},
    {"torch._inductor.codecache", "compile_file", D, M::kNone, kInductor},
    {"torch._tensor", "_rebuild_from_type_v2", A, M::kRebuildFromTypeV2, kRebuild},
    {"torch._utils", "_import_dotted_name", D, M::kNone, kImports},
    {"torch._utils", "_rebuild_device_tensor_from_numpy", A, M::kNone, kRebuildOther},
    {"torch._utils", "_rebuild_meta_tensor_no_storage", A, M::kNone, kRebuildOther},
    {"torch._utils", "_rebuild_nested_tensor", A, M::kNone, kRebuildOther},
    {"torch._utils", "_rebuild_parameter", A, M::kRebuildParameter, kRebuild},
    {"torch._utils", "_rebuild_parameter_with_state", A, M::kRebuildParameterWithState, kRebuild},
    {"torch._utils", "_rebuild_qtensor", A, M::kNone, kRebuildOther},
    {"torch._utils", "_rebuild_sparse_csr_tensor", A, M::kNone, kRebuildOther},
    {"torch._utils", "_rebuild_sparse_tensor", A, M::kNone, kRebuildOther},
    {"torch._utils", "_rebuild_tensor", A, M::kRebuildTensor, kRebuild},
    {"torch._utils", "_rebuild_tensor_v2", A, M::kRebuildTensorV2, kRebuild},
    {"torch._utils", "_rebuild_tensor_v3", A, M::kNone, kRebuildOther},
    {"torch._utils", "_rebuild_wrapper_subclass", A, M::kNone, kRebuildOther},
    {"torch.cuda", "BFloat16Storage", A, M::kStorageType, kStorage, DType::BF16},
    {"torch.cuda", "BFloat16Tensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "BoolStorage", A, M::kStorageType, kStorage, DType::BOOL},
    {"torch.cuda", "BoolTensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "ByteStorage", A, M::kStorageType, kStorage, DType::U8},
    {"torch.cuda", "ByteTensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "CharStorage", A, M::kStorageType, kStorage, DType::I8},
    {"torch.cuda", "CharTensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "ComplexDoubleStorage", A, M::kNone, kStorageNoDtype},
    {"torch.cuda", "ComplexFloatStorage", A, M::kStorageType, kStorage, DType::C64},
    {"torch.cuda", "DoubleStorage", A, M::kStorageType, kStorage, DType::F64},
    {"torch.cuda", "DoubleTensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "FloatStorage", A, M::kStorageType, kStorage, DType::F32},
    {"torch.cuda", "FloatTensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "HalfStorage", A, M::kStorageType, kStorage, DType::F16},
    {"torch.cuda", "HalfTensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "IntStorage", A, M::kStorageType, kStorage, DType::I32},
    {"torch.cuda", "IntTensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "LongStorage", A, M::kStorageType, kStorage, DType::I64},
    {"torch.cuda", "LongTensor", A, M::kNone, kLegacyTensor},
    {"torch.cuda", "ShortStorage", A, M::kStorageType, kStorage, DType::I16},
    {"torch.cuda", "ShortTensor", A, M::kNone, kLegacyTensor},
    {"torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression", D, M::kNone, kSymbolicShapes},
    {"torch.jit.unsupported_tensor_ops", "execWrapper", D, M::kNone, kJitExecWrapper},
    {"torch.nn.parameter", "Parameter", A, M::kParameterClass, kParameter},
    {"torch.serialization", "_get_layout", A, M::kBenignData, kLayout},
    {"torch.serialization", "load", D, M::kNone, kTorchLoadGadget},
    {"torch.storage", "TypedStorage", A, M::kNone, kTypedStorage},
    {"torch.storage", "UntypedStorage", A, M::kUntypedStorage, kUntyped},
    {"torch.storage", "_TypedStorage", A, M::kNone, kTypedStorage},
    {"torch.storage", "_UntypedStorage", A, M::kUntypedStorage, kUntyped},
    {"torch.storage", "_load_from_bytes", D, M::kNone, kLoadsPickle},
    {"torch.torch_version", "TorchVersion", U, M::kNone, kTorchVersion},
    {"torch.utils._config_module", "ConfigModule.load_config", D, M::kNone, kConfigModule},
    {"torch.utils.bottleneck.__main__", "run_autograd_prof", D, M::kNone, kBottleneck},
    {"torch.utils.bottleneck.__main__", "run_cprofile", D, M::kNone, kBottleneck},
    {"torch.utils.collect_env", "run", D, M::kNone, kCollectEnv},
    {"torch.utils.collect_env", "run_and_read_all", D, M::kNone, kCollectEnv},
    {"torch.utils.data.datapipes.utils.decoder", "basichandlers", D, M::kNone, kDatapipeDecoder},
    {"trace", "Trace.run", D, M::kNone, kTrace},
    {"trace", "Trace.runctx", D, M::kNone, kTrace},
    {"types", "SimpleNamespace", U, M::kNone, kBenignStdlib},
    {"uuid", "UUID", U, M::kNone, kBenignStdlib},
    {"venv", "create", D, M::kNone, kVenvGadget},
    {"yaml", "full_load", D, M::kNone, kYaml},
    {"yaml", "full_load_all", D, M::kNone, kYaml},
    {"yaml", "load", D, M::kNone, kYaml},
    {"yaml", "load_all", D, M::kNone, kYaml},
    {"yaml", "unsafe_load", D, M::kNone, kYaml},
    {"yaml", "unsafe_load_all", D, M::kNone, kYaml},
};

struct ModuleRule {
  std::string_view module;  // matches itself and its submodules
  GlobalCategory category;
  Meaning meaning;
  std::string_view reason;
};

// Sorted by module, byte order.
constexpr ModuleRule kModuleRules[] = {
    {"<non-string>", D, M::kNone, kNonStringR},
    {"BaseHTTPServer", D, M::kNone, kNetwork},
    {"CGIHTTPServer", D, M::kNone, kNetwork},
    {"DocXMLRPCServer", D, M::kNone, kNetwork},
    {"SimpleHTTPServer", D, M::kNone, kNetwork},
    {"SimpleXMLRPCServer", D, M::kNone, kNetwork},
    {"SocketServer", D, M::kNone, kNetwork},
    {"_ctypes", D, M::kNone, kCtypesGadget},
    {"_pickle", D, M::kNone, kLoadsPickle},
    {"_posixsubprocess", D, M::kNone, kRunsCommands},
    {"_socket", D, M::kNone, kNetwork},
    {"_winapi", D, M::kNone, kRunsCommands},
    {"aiohttp", D, M::kNone, kNetwork},
    {"anydbm", D, M::kNone, kWritesFiles},
    {"asynchat", D, M::kNone, kNetwork},
    {"asyncio", D, M::kNone, kAsyncioGadget},
    {"asyncore", D, M::kNone, kNetwork},
    {"bdb", D, M::kNone, kDebugger},
    {"builtins", U, M::kNone, kOtherBuiltin},
    {"cPickle", D, M::kNone, kLoadsPickle},
    {"cProfile", D, M::kNone, kCProfile},
    {"cffi", D, M::kNone, kNative},
    {"cloudpickle", D, M::kNone, kLoadsPickle},
    {"code", D, M::kNone, kCodeModule},
    {"codeop", D, M::kNone, kEvaluates},
    {"collections", U, M::kNone, kBenignStdlib},
    {"commands", D, M::kNone, kRunsCommands},
    {"compileall", D, M::kNone, kWritesFiles},
    {"copyreg extension registry", D, M::kNone, kExt},
    {"ctypes", D, M::kNone, kCtypesGadget},
    {"datetime", U, M::kNone, kBenignStdlib},
    {"dbhash", D, M::kNone, kWritesFiles},
    {"dbm", D, M::kNone, kWritesFiles},
    {"decimal", U, M::kNone, kBenignStdlib},
    {"dill", D, M::kNone, kLoadsPickle},
    {"distutils", D, M::kNone, kDistutils},
    {"doctest", D, M::kNone, kDoctest},
    {"dumbdbm", D, M::kNone, kWritesFiles},
    {"ensurepip", D, M::kNone, kEnsurepip},
    {"enum", U, M::kNone, kBenignStdlib},
    {"fileinput", D, M::kNone, kOpensFiles},
    {"fractions", U, M::kNone, kBenignStdlib},
    {"ftplib", D, M::kNone, kNetwork},
    {"gdbm", D, M::kNone, kWritesFiles},
    {"http", D, M::kNone, kNetwork},
    {"httplib", D, M::kNone, kNetwork},
    {"httpx", D, M::kNone, kNetwork},
    {"idlelib", D, M::kNone, kIdlelib},
    {"imaplib", D, M::kNone, kNetwork},
    {"imp", D, M::kNone, kImports},
    {"importlib", D, M::kNone, kImportlibGadget},
    {"lib2to3", D, M::kNone, kLib2to3},
    {"linecache", D, M::kNone, kOpensFiles},
    {"logging.config", D, M::kNone, kLoggingConfig},
    {"marshal", D, M::kNone, kMarshalGadget},
    {"multiprocessing", D, M::kNone, kProcesses},
    {"nntplib", D, M::kNone, kNetwork},
    {"nt", D, M::kNone, kRunsCommands},
    {"numpy.ctypeslib", D, M::kNone, kNative},
    {"numpy.distutils", D, M::kNone, kInstalls},
    {"numpy.dtypes", A, M::kBenignData, kNumpyData},
    {"numpy.f2py", D, M::kNone, kF2py},
    {"numpy.lib._datasource", D, M::kNone, kNetwork},
    {"numpy.lib._npyio_impl", D, M::kNone, kLoadsPickle},
    {"numpy.lib.npyio", D, M::kNone, kLoadsPickle},
    {"numpy.testing", D, M::kNone, kEvaluates},
    {"os", D, M::kNone, kRunsCommands},
    {"pandas.io", D, M::kNone, kLoadsPickle},
    {"pathlib", U, M::kNone, kBenignStdlib},
    {"pdb", D, M::kNone, kDebugger},
    {"pickle", D, M::kNone, kLoadsPickle},
    {"pip", D, M::kNone, kInstalls},
    {"pkgutil", D, M::kNone, kPkgutilGadget},
    {"platform", D, M::kNone, kPlatform},
    {"poplib", D, M::kNone, kNetwork},
    {"posix", D, M::kNone, kRunsCommands},
    {"profile", D, M::kNone, kProfile},
    {"pty", D, M::kNone, kPtyGadget},
    {"py_compile", D, M::kNone, kWritesFiles},
    {"pydoc", D, M::kNone, kPydocGadget},
    {"requests", D, M::kNone, kNetwork},
    {"runpy", D, M::kNone, kRunpyGadget},
    {"setuptools", D, M::kNone, kInstalls},
    {"shelve", D, M::kNone, kLoadsPickle},
    {"shutil", D, M::kNone, kWritesFiles},
    {"site", D, M::kNone, kSite},
    {"smtplib", D, M::kNone, kNetwork},
    {"socket", D, M::kNone, kNetwork},
    {"socketserver", D, M::kNone, kNetwork},
    {"sqlite3", D, M::kNone, kWritesFiles},
    {"ssl", D, M::kNone, kNetwork},
    {"subprocess", D, M::kNone, kRunsCommands},
    {"sys", D, M::kNone, kInterpreter},
    {"tarfile", D, M::kNone, kWritesFiles},
    {"telnetlib", D, M::kNone, kNetwork},
    {"tempfile", D, M::kNone, kWritesFiles},
    {"timeit", D, M::kNone, kTimeit},
    {"torch._dynamo", D, M::kNone, kDynamo},
    {"torch._inductor", D, M::kNone, kInductor},
    {"torch.fx.experimental.symbolic_shapes", D, M::kNone, kSymbolicShapes},
    {"torch.hub", D, M::kNone, kTorchHub},
    {"torch.jit", D, M::kNone, kTorchScript},
    {"torch.jit.unsupported_tensor_ops", D, M::kNone, kJitExecWrapper},
    {"torch.nn.modules", U, M::kNone, kTorchModule},
    {"torch.package", D, M::kNone, kTorchPackage},
    {"torch.serialization", D, M::kNone, kLoadsPickle},
    {"torch.utils._config_module", D, M::kNone, kConfigModule},
    {"torch.utils.bottleneck", D, M::kNone, kBottleneck},
    {"torch.utils.collect_env", D, M::kNone, kCollectEnv},
    {"torch.utils.cpp_extension", D, M::kNone, kCompilesNative},
    {"torch.utils.data.datapipes.utils.decoder", D, M::kNone, kDatapipeDecoder},
    {"trace", D, M::kNone, kTrace},
    {"types", D, M::kNone, kCodeObjects},
    {"urllib", D, M::kNone, kNetwork},
    {"urllib2", D, M::kNone, kNetwork},
    {"urllib3", D, M::kNone, kNetwork},
    {"venv", D, M::kNone, kVenvGadget},
    {"webbrowser", D, M::kNone, kBrowser},
    {"whichdb", D, M::kNone, kWritesFiles},
    {"xmlrpc", D, M::kNone, kNetwork},
    {"xmlrpclib", D, M::kNone, kNetwork},
    {"zipfile", D, M::kNone, kWritesFiles},
    {"zipimport", D, M::kNone, kImports},
};

// Top-level modules of the standard library: Python 3.11's sys.stdlib_module_names (less
// __main__, which is the user's program, and two jokes) plus the Python 2 names pickles still
// carry. Sorted, byte order; checked at compile time below.
constexpr std::string_view kStdlibModules[] = {
    "BaseHTTPServer", "CGIHTTPServer", "ConfigParser", "Cookie", "DocXMLRPCServer", "HTMLParser",
    "Queue", "SimpleHTTPServer", "SimpleXMLRPCServer", "SocketServer", "StringIO", "UserDict",
    "UserList", "UserString", "__builtin__", "__builtins__", "__future__", "_abc", "_aix_support",
    "_ast", "_asyncio", "_bisect", "_blake2", "_bootsubprocess", "_bz2", "_codecs", "_codecs_cn",
    "_codecs_hk", "_codecs_iso2022", "_codecs_jp", "_codecs_kr", "_codecs_tw", "_collections",
    "_collections_abc", "_compat_pickle", "_compression", "_contextvars", "_crypt", "_csv",
    "_ctypes", "_curses", "_curses_panel", "_datetime", "_dbm", "_decimal", "_elementtree",
    "_frozen_importlib", "_frozen_importlib_external", "_functools", "_gdbm", "_hashlib", "_heapq",
    "_imp", "_io", "_json", "_locale", "_lsprof", "_lzma", "_markupbase", "_md5", "_msi",
    "_multibytecodec", "_multiprocessing", "_opcode", "_operator", "_osx_support", "_overlapped",
    "_pickle", "_posixshmem", "_posixsubprocess", "_py_abc", "_pydecimal", "_pyio", "_queue",
    "_random", "_scproxy", "_sha1", "_sha256", "_sha3", "_sha512", "_signal", "_sitebuiltins",
    "_socket", "_sqlite3", "_sre", "_ssl", "_stat", "_statistics", "_string", "_strptime",
    "_struct", "_symtable", "_thread", "_threading_local", "_tkinter", "_tokenize", "_tracemalloc",
    "_typing", "_uuid", "_warnings", "_weakref", "_weakrefset", "_winapi", "_zoneinfo", "abc",
    "aifc", "anydbm", "argparse", "array", "ast", "asynchat", "asyncio", "asyncore", "atexit",
    "audioop", "base64", "bdb", "binascii", "bisect", "builtins", "bz2", "cPickle", "cProfile",
    "cStringIO", "calendar", "cgi", "cgitb", "chunk", "cmath", "cmd", "code", "codecs", "codeop",
    "collections", "colorsys", "commands", "compileall", "concurrent", "configparser", "contextlib",
    "contextvars", "cookielib", "copy", "copy_reg", "copyreg", "crypt", "csv", "ctypes", "curses",
    "dataclasses", "datetime", "dbhash", "dbm", "decimal", "difflib", "dis", "distutils", "doctest",
    "dumbdbm", "dummy_thread", "email", "encodings", "ensurepip", "enum", "errno", "exceptions",
    "faulthandler", "fcntl", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "gc", "gdbm", "genericpath", "getopt", "getpass", "gettext", "glob", "graphlib", "grp", "gzip",
    "hashlib", "heapq", "hmac", "html", "htmlentitydefs", "http", "httplib", "idlelib", "imaplib",
    "imghdr", "imp", "importlib", "inspect", "io", "ipaddress", "itertools", "json", "keyword",
    "lib2to3", "linecache", "locale", "logging", "lzma", "mailbox", "mailcap", "marshal", "math",
    "md5", "mimetypes", "mmap", "modulefinder", "msilib", "msvcrt", "multiprocessing", "netrc",
    "new", "nis", "nntplib", "nt", "ntpath", "nturl2path", "numbers", "opcode", "operator",
    "optparse", "os", "ossaudiodev", "pathlib", "pdb", "pickle", "pickletools", "pipes", "pkgutil",
    "platform", "plistlib", "popen2", "poplib", "posix", "posixpath", "pprint", "profile", "pstats",
    "pty", "pwd", "py_compile", "pyclbr", "pydoc", "pydoc_data", "pyexpat", "queue", "quopri",
    "random", "re", "readline", "repr", "reprlib", "resource", "rlcompleter", "runpy", "sched",
    "secrets", "select", "selectors", "sets", "sha", "shelve", "shlex", "shutil", "signal", "site",
    "smtpd", "smtplib", "sndhdr", "socket", "socketserver", "spwd", "sqlite3", "sre_compile",
    "sre_constants", "sre_parse", "ssl", "stat", "statistics", "string", "stringprep", "struct",
    "subprocess", "sunau", "symtable", "sys", "sysconfig", "syslog", "tabnanny", "tarfile",
    "telnetlib", "tempfile", "termios", "textwrap", "thread", "threading", "time", "timeit",
    "tkinter", "token", "tokenize", "tomllib", "trace", "traceback", "tracemalloc", "tty", "turtle",
    "turtledemo", "types", "typing", "unicodedata", "unittest", "urllib", "urllib2", "urlparse",
    "uu", "uuid", "venv", "warnings", "wave", "weakref", "webbrowser", "whichdb", "winreg",
    "winsound", "wsgiref", "xdrlib", "xml", "xmlrpc", "xmlrpclib", "zipapp", "zipfile", "zipimport",
    "zlib", "zoneinfo",
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
constexpr bool stdlib_sorted() {
  for (size_t i = 1; i < std::size(kStdlibModules); ++i)
    if (!(kStdlibModules[i - 1] < kStdlibModules[i])) return false;
  return true;
}
static_assert(stdlib_sorted(), "kStdlibModules must be sorted without duplicates");

/// Python 2 module names that Python 3's unpickler (fix_imports) turns into these.
std::string_view py3_module(std::string_view module) {
  if (module == "__builtin__" || module == "__builtins__" || module == "exceptions")
    return "builtins";
  if (module == "copy_reg") return "copyreg";
  return module;
}

const ExactRule* find_exact(std::string_view module, std::string_view name) {
  const ExactRule key{module, name, U, M::kNone, {}};
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

GlobalOrigin global_origin(std::string_view module) {
  module = py3_module(module);
  if (module == "torch" || module.starts_with("torch.")) return GlobalOrigin::kTorch;
  const std::string_view top = module.substr(0, module.find('.'));
  return std::binary_search(std::begin(kStdlibModules), std::end(kStdlibModules), top)
             ? GlobalOrigin::kStdlib
             : GlobalOrigin::kThirdParty;
}

GlobalClass classify_global(std::string_view module, std::string_view name, bool called) {
  module = py3_module(module);
  // Rule 2: exact rows, benign constructors among them (kUnknown even when called).
  if (const ExactRule* r = find_exact(module, name))
    return {r->category, r->meaning, r->dtype, r->reason};
  // Rule 3.
  if (name.find('.') != std::string_view::npos || name == "<non-string>")
    return {GlobalCategory::kDangerous, Meaning::kNone, DType::F32,
            name == "<non-string>" ? kNonStringR : kDotted};
  // Rule 4; the catch-all for builtins yields to rule 5.
  const ModuleRule* r = find_module(module);
  if (r && !(called && r->module == "builtins"))
    return {r->category, r->meaning, DType::F32, r->reason};
  // Rule 5.
  if (called) {
    if (r) return {GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kBuiltinCalled};
    switch (global_origin(module)) {
      case GlobalOrigin::kTorch:
        return {GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kTorchCalled};
      case GlobalOrigin::kStdlib:
        return {GlobalCategory::kDangerous, Meaning::kNone, DType::F32, kStdlibCalled};
      case GlobalOrigin::kThirdParty:
        break;
    }
  }
  // Rule 6.
  return {GlobalCategory::kUnknown, Meaning::kNone, DType::F32, kUnknownDefault};
}

}  // namespace ckptkit::pickle
