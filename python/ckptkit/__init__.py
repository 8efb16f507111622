"""ckptkit: safe, zero-copy loading of diffusion-model checkpoints (docs/python.md).

    import ckptkit
    sd = ckptkit.load("model.safetensors", framework="pt")      # or "np"
    sd = ckptkit.load("model.ckpt")                              # never runs the pickle
    with ckptkit.safe_open("model.safetensors", framework="pt") as f:
        w = f.get_slice("conv.weight")[:, :2]
    ckptkit.save_file(sd, "out.safetensors", metadata={"k": "v"})
    ckptkit.scan("model.ckpt")["verdict"]

Tensors view a private copy-on-write mapping of the file: loading costs no copy, writing to a
tensor never changes the file, and the mapping lives as long as any tensor of it does.
"""
import collections
import contextlib
import json
import os
import zlib

import numpy as np

from . import _native

__all__ = ["load", "safe_open", "save_file", "scan", "inspect", "hash", "verify", "convert",
           "split", "assemble", "swap", "prune", "merge", "meta", "sample", "lora_bake",
           "lora_extract", "lora_resize", "lora_convert", "library_index", "library_list",
           "library_dupes", "library_show", "library_loras", "Error", "FormatError",
           "DangerousPickleError"]


# --- errors ----------------------------------------------------------------------------------------

class Error(Exception):
    """Every error ckptkit raises for a file (besides FileNotFoundError and TypeError).

    code: the library's category ("corrupt", "unsupported", "io error", ...); path: the file;
    offset: the byte offset the problem is at, or None."""

    def __init__(self, message, code=None, path=None, offset=None):
        super().__init__(message)
        self.code, self.path, self.offset = code, path, offset


class FormatError(Error, ValueError):
    """The file breaks its format (truncated, hostile, not a checkpoint): .path and .offset say
    where."""


class DangerousPickleError(Error):
    """torch.load of this file would run code; .report is `scan`'s report (a dict). Pass
    allow_dangerous=True to take the tensors anyway: ckptkit never runs the file's code."""

    def __init__(self, message, report, path=None):
        super().__init__(message, "dangerous", path, None)
        self.report = report


_FORMAT_CODES = {"corrupt", "limit exceeded"}


@contextlib.contextmanager
def _translate():
    try:
        yield
    except _native.NativeError as e:
        code, message, path, offset, text, report = e.args
        if report is not None and code == "invalid argument":
            raise DangerousPickleError(text, json.loads(report), path) from None
        # "not found" also means "no tensors found in the file": only a missing path is
        # FileNotFoundError.
        if code == "not found" and (not path or not os.path.exists(path)):
            raise FileNotFoundError(2, text, path) from None
        cls = FormatError if code in _FORMAT_CODES else Error
        raise cls(text, code, path or None, offset) from None


def _check_path(path, param="path"):
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{param} must be a str or os.PathLike, not {type(path).__name__}")
    return os.fspath(path)


def _check_framework(framework):
    if not isinstance(framework, str):
        raise TypeError(f"framework must be a str, not {type(framework).__name__}")
    f = {"pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np"}.get(framework)
    if f is None:
        raise ValueError(f'framework must be "pt" or "np", not {framework!r}')
    return f


# --- dtypes ---------------------------------------------------------------------------------------

_NP_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
    "U32": np.uint32, "I32": np.int32, "U64": np.uint64, "I64": np.int64, "F16": np.float16,
    "F32": np.float32, "F64": np.float64, "C64": np.complex64,
}
_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "U32": 4, "I32": 4, "U64": 8,
          "I64": 8, "F16": 2, "BF16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
          "C64": 8}
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_FLOATS = {"F16", "BF16", "F32", "F64"}
# With raw=True, the types a framework has no dtype for come as their bit patterns.
_RAW_BITS = {"BF16": np.uint16, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}


def _np_dtype(name, tensor, path):
    dt = _NP_DTYPES.get(name)
    if dt is None:
        hint = (' Use framework="pt", or raw=True for its bits as '
                f'{_RAW_BITS[name].__name__}.' if name in _RAW_BITS else "")
        raise Error(f"{path}: tensor {tensor!r} is {name}, which NumPy has no dtype for.{hint}",
                    "unsupported", path)
    return np.dtype(dt)


def _torch():
    import torch  # imported only when framework="pt" is asked for
    return torch


def _torch_dtype(name, tensor, path):
    torch = _torch()
    table = {
        "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "I32": "int32",
        "I64": "int64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
        "F64": "float64", "C64": "complex64", "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32", "U64": "uint64",
    }
    dt = getattr(torch, table.get(name, "-"), None)
    if not isinstance(dt, torch.dtype):
        raise Error(f"{path}: tensor {tensor!r} is {name}, which this torch ({torch.__version__}) "
                    f"has no dtype for" + (' (framework="np" has it)' if name in _NP_DTYPES else ""),
                    "unsupported", path)
    return dt


# --- loading -----------------------------------------------------------------------------------------

class _Opened:
    """A file's table and its mapping, and the arrays built over it."""

    def __init__(self, path, allow_dangerous, dtype=None, raw=False):
        path = _check_path(path)
        if not isinstance(allow_dangerous, bool):
            raise TypeError(f"allow_dangerous must be a bool, not {type(allow_dangerous).__name__}")
        if not isinstance(raw, bool):
            raise TypeError(f"raw must be a bool, not {type(raw).__name__}")
        if dtype is not None:
            if not isinstance(dtype, str):
                raise TypeError(f"dtype must be a str or None, not {type(dtype).__name__}")
            if dtype.upper() not in ("F32", "F16", "BF16"):
                raise ValueError(f'dtype must be "f32", "f16" or "bf16", not {dtype!r}')
            dtype = dtype.upper()
        with _translate():
            info = _native.open_file(path, allow_dangerous)
        if info["format"] != "gguf" and dtype is not None:
            raise ValueError("dtype= chooses what GGUF blocks are dequantized to; this file is "
                             f"{info['format']} (ckptkit.convert casts other files)")
        self.gguf_dtype, self.raw = dtype, raw
        self.block_types = info["block_types"]
        self.path = path
        self.format = info["format"]
        self.mapping = info["mapping"]
        self.meta = info["metadata"]
        self.verdict = info["verdict"]
        self.tensors = collections.OrderedDict((t[0], t) for t in info["tensors"])
        self.storages = info["storages"]
        self._storage_u8 = {}  # storage index -> uint8 array of its bytes

    def _u8(self, offset, nbytes):
        return np.frombuffer(self.mapping, np.uint8, count=nbytes, offset=offset)

    def storage_u8(self, index):
        a = self._storage_u8.get(index)
        if a is None:
            offset, nbytes, _, deflated, compressed_size, crc = self.storages[index]
            if deflated:  # re-zipped archives: inflated once into private memory
                try:
                    data = zlib.decompressobj(-15).decompress(
                        bytes(self._u8(offset, compressed_size)), nbytes + 1)
                except zlib.error:
                    data = None
                if data is None or len(data) != nbytes or zlib.crc32(data) != crc:
                    raise FormatError(f"{self.path}: a deflated storage at {offset:#x} does not "
                                      "inflate to its recorded size and CRC", "corrupt", self.path,
                                      offset)
                a = np.frombuffer(bytearray(data), np.uint8)
            else:
                a = self._u8(offset, nbytes)
            self._storage_u8[index] = a
        return a

    def element_bytes(self, name):
        """(uint8 array of the storage or tensor bytes, byte offset of element 0 in it,
        element strides or None, big_endian)."""
        _, dtype, shape, begin, nbytes, strides, storage, big = self.tensors[name]
        if storage < 0:
            return self._u8(begin, nbytes), 0, None, False
        st_offset = self.storages[storage][0]
        return self.storage_u8(storage), begin - st_offset, strides, big

    def numpy(self, name):
        _, dtype, shape, begin, nbytes, strides, storage, big = self.tensors[name]
        if self.raw and dtype in _RAW_BITS:
            dt = np.dtype(_RAW_BITS[dtype])
        else:
            dt = _np_dtype(dtype, name, self.path)
        buf, off, strides, big = self.element_bytes(name)
        if big:
            dt = dt.newbyteorder(">")
        byte_strides = None if strides is None else tuple(s * dt.itemsize for s in strides)
        if off % dt.itemsize:
            raise FormatError(f"{self.path}: tensor {name!r} starts inside an element",
                              "corrupt", self.path, begin)
        a = np.ndarray(tuple(shape), dt, buffer=buf, offset=off, strides=byte_strides)
        if big:  # big-endian archives: materialized, byte-swapped to native order
            a = a.astype(dt.newbyteorder("="))
        return a

    def torch(self, name):
        torch = _torch()
        _, dtype, shape, begin, nbytes, strides, storage, big = self.tensors[name]
        if self.raw and dtype in ("F8_E4M3", "F8_E5M2") and not hasattr(
                torch, {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}[dtype]):
            dt = torch.uint8  # this torch has no FP8: the bits, as asked
        else:
            dt = _torch_dtype(dtype, name, self.path)
        size = _SIZES[dtype]
        buf, off, strides, big = self.element_bytes(name)
        if big:
            # Big-endian archives: the elements are byte-swapped into a new (native) tensor.
            raw = np.ndarray(tuple(shape), np.dtype(_UINT[size]).newbyteorder(">"), buffer=buf,
                             offset=off,
                             strides=None if strides is None else tuple(s * size for s in strides))
            return torch.from_numpy(raw.astype(_UINT[size]).view(_signed(size))).view(dt)
        if off % size or len(buf) % size:
            raise FormatError(f"{self.path}: tensor {name!r} is not aligned to its elements",
                              "corrupt", self.path, begin)
        if storage < 0:  # safetensors: a C-contiguous run
            flat = torch.from_numpy(buf.view(_signed(size))).view(dt)
            return flat.view(tuple(shape))
        base = self._torch_storage(storage, size, dt)
        if strides is None:
            strides = _contiguous_strides(shape)
        return base.as_strided(tuple(shape), tuple(strides), off // size)

    def _torch_storage(self, index, size, dt):
        # One tensor per storage, so that views of one storage share it as torch.load's do.
        cache = self.__dict__.setdefault("_torch_storages", {})
        key = (index, dt)
        t = cache.get(key)
        if t is None:
            u8 = self.storage_u8(index)
            t = _torch().from_numpy(u8[: len(u8) - len(u8) % size].view(_signed(size))).view(dt)
            cache[key] = t
        return t

    def get(self, name, framework):
        if self.format == "gguf":
            dtype = self.tensors[name][1]
            if dtype in self.block_types or (self.gguf_dtype not in (None, dtype)
                                             and dtype in _FLOATS):
                return self.gguf(name, framework)
        return self.torch(name) if framework == "pt" else self.numpy(name)

    def gguf(self, name, framework):
        """A GGUF tensor decoded: block types dequantized exactly as ggml does (to F32, or the
        dtype asked for), plain floats cast; with raw, blocks as a 1-D uint8 view."""
        _, dtype, shape, begin, nbytes, _, _, _ = self.tensors[name]
        if self.raw and dtype in self.block_types:
            a = self._u8(begin, nbytes)
            return _torch().from_numpy(a) if framework == "pt" else a
        to = self.gguf_dtype or "F32"
        if framework == "np" and to == "BF16":
            raise Error(f'{self.path}: NumPy has no BF16: use framework="pt", or dtype="f32" '
                        'or "f16"', "unsupported", self.path)
        numel = 1
        for d in shape:
            numel *= d
        out = np.empty(numel, {"F32": np.float32, "F16": np.float16, "BF16": np.int16}[to])
        with _translate():
            _native.decode_gguf(self.mapping, begin, nbytes, dtype, numel, to, out)
        out = out.reshape(tuple(shape))
        if framework == "np":
            return out
        t = _torch().from_numpy(out)
        return t.view(_torch().bfloat16) if to == "BF16" else t


def _signed(size):
    return {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}[size]


def _contiguous_strides(shape):
    # torch's rule: an empty dimension counts as 1 (torch.empty(2, 0).stride() == (1, 1)).
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    return list(reversed(strides))


def load(path, framework="np", allow_dangerous=False, dtype=None, raw=False):
    """Loads every tensor of a checkpoint into a dict {name: array}, without copying.

    path: a .safetensors file or a PyTorch .ckpt/.pt/.pth/.bin file (zip or legacy format),
      recognized by its content. For PyTorch files the pickle is read by ckptkit's passive
      machine (nothing is imported or run) and the state dict is found where training code puts
      it (the top level, `state_dict`, `model`, ...).
    framework: "np" (NumPy arrays) or "pt" (torch tensors). NumPy has no BF16 or FP8: such
      tensors raise ckptkit.Error naming framework="pt".
    allow_dangerous: a PyTorch file that `scan` calls dangerous (torch.load would run code)
      raises DangerousPickleError unless this is True.
    dtype (GGUF files only): block-quantized tensors (Q8_0, Q4_K, ...) are dequantized, bit
      for bit as ggml's dequantize_row_<type>, to dtype: "f32" (the default), "f16" or "bf16"
      (framework="pt"); the file's float tensors are cast to it too (kept as they are,
      zero-copy, when dtype is None).
    raw: True gives what the framework has no dtype for as its bits, zero-copy: GGUF blocks as
      1-D uint8 arrays of their bytes (for code that dequantizes itself), BF16 as uint16 and
      FP8 as uint8 in NumPy (and FP8 in a torch without float8 types).

    The arrays view a private copy-on-write mapping of the file (writing to them never changes
    the file), which stays mapped as long as any of them lives. Views and shared storages of a
    .ckpt are built as torch.load builds them; big-endian archives and deflated (re-zipped)
    storages are copied.

    Raises FileNotFoundError, FormatError (a malformed or hostile file: .path, .offset),
    DangerousPickleError (.report), Error, TypeError (a wrong argument type, named).
    """
    framework = _check_framework(framework)
    f = _Opened(path, allow_dangerous, dtype, raw)
    return {name: f.get(name, framework) for name in f.tensors}


# --- safe_open ----------------------------------------------------------------------------------------

class safe_open:
    """Like safetensors.safe_open: a context manager over one file, tensors read on demand.

        with ckptkit.safe_open("model.safetensors", framework="pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
            part = f.get_slice("w")[:, 1:3]
            f.metadata()

    Works for .safetensors, PyTorch files (which are scanned first: see load's
    allow_dangerous) and GGUF files (dtype and raw as in load). device must be "cpu".
    """

    def __init__(self, path, framework="pt", device="cpu", allow_dangerous=False, dtype=None,
                 raw=False):
        self._framework = _check_framework(framework)
        if device != "cpu":
            raise ValueError(f'device must be "cpu", not {device!r}')
        self._f = _Opened(path, allow_dangerous, dtype, raw)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f = None  # tensors already returned keep the mapping alive
        return False

    def _open(self):
        if self._f is None:
            raise Error("the file is closed (safe_open's block has ended)")
        return self._f

    def keys(self):
        """The tensor names, sorted (as safetensors.safe_open gives them)."""
        return sorted(self._open().tensors)

    def metadata(self):
        """The file's string metadata (`__metadata__`), or None when it has none."""
        m = self._open().meta
        return dict(m) if m else None

    def get_tensor(self, name):
        f = self._open()
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if name not in f.tensors:
            raise KeyError(name)
        return f.get(name, self._framework)

    def get_slice(self, name):
        """A lazy view of one tensor: get_shape(), get_dtype(), and [...] with integers, slices
        with positive steps and Ellipsis."""
        return _Slice(self.get_tensor(name), self._open().tensors[name])


class _Slice:
    def __init__(self, tensor, row):
        self._t, self._row = tensor, row

    def get_shape(self):
        return list(self._row[2])

    def get_dtype(self):
        return self._row[1]

    def __getitem__(self, key):
        items = key if isinstance(key, tuple) else (key,)
        if sum(1 for k in items if k is not Ellipsis) > len(self._row[2]):
            raise IndexError("too many indices for a tensor of rank "
                             f"{len(self._row[2])}")
        for k in items:
            if isinstance(k, slice):
                if k.step is not None and k.step <= 0:
                    raise ValueError("negative or zero slice steps are not supported")
            elif k is not Ellipsis and not isinstance(k, (int, np.integer)):
                raise TypeError(f"index must be int, slice or Ellipsis, not {type(k).__name__}")
        return self._t[key]


# --- saving -------------------------------------------------------------------------------------------

_NP_NAMES = {np.dtype(v): k for k, v in _NP_DTYPES.items()}


def _torch_name(t):
    torch = _torch()
    names = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
             torch.int32: "I32", torch.int64: "I64", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
             torch.complex64: "C64"}
    for attr, n in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):
        if hasattr(torch, attr):
            names[getattr(torch, attr)] = n
    return names.get(t.dtype)


def save_file(tensors, path, metadata=None):
    """Writes {name: tensor} as a .safetensors file, like safetensors' save_file.

    Tensors may be torch tensors (CPU, contiguous) or NumPy arrays. The file is written in the
    reference writer's order (dtype size descending, then name) and appears atomically: whole at
    `path` or not at all (an existing file is replaced). Tensors that share storage (torch) or
    memory (NumPy) are refused with ValueError, as safetensors refuses them.
    """
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors must be a dict, not {type(tensors).__name__}")
    path = _check_path(path)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("metadata must be a dict of str to str, or None")
    rows, spans, storages = [], [], {}
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensors' keys must be str, not {type(name).__name__}")
        if isinstance(t, np.ndarray):
            dt = t.dtype.newbyteorder("=") if t.dtype.byteorder == ">" else t.dtype
            st = _NP_NAMES.get(np.dtype(dt))
            if st is None:
                raise ValueError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name")
            if t.nbytes:
                lo, hi = np.byte_bounds(t)
                spans.append((lo, hi, name))
            data = np.ascontiguousarray(t, dtype=np.dtype(dt).newbyteorder("<"))
            rows.append((name, st, list(t.shape), data.reshape(-1).view(np.uint8)))
            continue
        torch = _torch() if type(t).__module__.startswith("torch") else None
        if torch is None or not isinstance(t, torch.Tensor):
            raise TypeError(f"tensors[{name!r}] must be a torch.Tensor or numpy.ndarray, "
                            f"not {type(t).__name__}")
        st = _torch_name(t)
        if st is None:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name")
        if t.device.type != "cpu":
            raise ValueError(f"tensor {name!r} is on {t.device}; move it to the CPU first")
        if not t.is_contiguous():
            raise ValueError(f"tensor {name!r} is not contiguous; call .contiguous() first")
        if t.numel():
            key = t.storage().data_ptr()
            if key in storages:
                raise ValueError(f"tensors {storages[key]!r} and {name!r} share memory; "
                                 "clone one of them first (as safetensors requires)")
            storages[key] = name
        size = t.element_size()
        data = t.detach().reshape(-1).view({1: torch.uint8, 2: torch.int16, 4: torch.int32,
                                            8: torch.int64}[size]).numpy()
        rows.append((name, st, list(t.shape), data.view(np.uint8)))
    spans.sort()
    for (lo1, hi1, n1), (lo2, hi2, n2) in zip(spans, spans[1:]):
        if lo2 < hi1:
            raise ValueError(f"tensors {n1!r} and {n2!r} share memory; copy one of them first")
    with _translate():
        _native.write_safetensors(path, rows, dict(metadata or {}))


# --- reports ------------------------------------------------------------------------------------------

def scan(path):
    """Would torch.load of this file run code? The same fields as one file of
    `ckptkit scan --json`: path, format, verdict ("safe", "suspicious", "dangerous", or None when
    unreadable), summary, globals, findings, error."""
    path = _check_path(path)
    with _translate():
        return json.loads(_native.scan(path))


def inspect(path, tensors=False):
    """What the file is: the fields of `ckptkit inspect --json` (with tensors=True, those of
    `--json --tensors`): path, format, sizes, dtypes, metadata, architecture and components,
    for PyTorch files the state dict's place and the scan report."""
    path = _check_path(path)
    if not isinstance(tensors, bool):
        raise TypeError(f"tensors must be a bool, not {type(tensors).__name__}")
    with _translate():
        return json.loads(_native.inspect(path, tensors))


# --- every command as a function ------------------------------------------------------------------
#
# Each function runs the command itself in this process (ckptkit._native.run_command: the
# command's own flags, checks, scan gate and --json report, so a function and the command cannot
# disagree) on a worker thread with the GIL released. Keyword arguments are the command's flags
# with dashes as underscores; the result is the command's --json document, parsed.

class _Argv:
    """Builds a command line from keyword arguments, checking each one's type by name."""

    def __init__(self, func, *words):
        self.func, self.opts, self.pos = func, list(words), []

    def _type_error(self, name, what, value):
        raise TypeError(f"{self.func}(): {name} must be {what}, not {type(value).__name__}")

    def path(self, name, value, must_exist=True):
        if isinstance(value, bytes):
            value = os.fsdecode(value)
        if not isinstance(value, (str, os.PathLike)):
            self._type_error(name, "a str or os.PathLike", value)
        value = os.fspath(value)
        if must_exist and not os.path.exists(value):
            raise FileNotFoundError(2, f"{self.func}(): {name}: no such file or folder", value)
        return value

    def input(self, name, value):
        self.pos.append(self.path(name, value))

    def inputs(self, name, value):
        """One path or a list of them; returns whether a single path was given."""
        if isinstance(value, (str, bytes, os.PathLike)):
            self.input(name, value)
            return True
        if not isinstance(value, (list, tuple)) or not value:
            self._type_error(name, "a path or a non-empty list of paths", value)
        for v in value:
            self.input(name, v)
        return False

    def output(self, flag, name, value):
        if value is not None:
            self.opts += [flag, self.path(name, value, must_exist=False)]

    def existing(self, flag, name, value):
        if value is not None:
            self.opts += [flag, self.path(name, value)]

    def str(self, flag, name, value):
        if value is None:
            return
        if not isinstance(value, str):
            self._type_error(name, "a str", value)
        self.opts += [flag, value]

    def int(self, flag, name, value):
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            self._type_error(name, "an int", value)
        self.opts += [flag, str(value)]

    def float(self, flag, name, value):
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._type_error(name, "a float", value)
        self.opts += [flag, repr(float(value))]

    def flag(self, flag, name, value):
        if not isinstance(value, bool):
            self._type_error(name, "a bool", value)
        if value:
            self.opts.append(flag)

    def pairs(self, flag, name, value):
        """A dict {key: value} or a list of "KEY=VALUE" strings, one flag each."""
        if value is None:
            return
        if isinstance(value, dict):
            items = []
            for k, v in value.items():
                if not isinstance(k, str) or isinstance(v, bool) or not isinstance(
                        v, (str, int, float)):
                    self._type_error(name, "a dict of str to str or number", value)
                items.append(f"{k}={v}")
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = list(value)
        else:
            self._type_error(name, 'a dict or a list of "KEY=VALUE" strings', value)
        for item in items:
            self.opts += [flag, item]

    def strs(self, flag, name, value):
        if value is None:
            return
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            self._type_error(name, "a str or a list of str", value)
        for v in value:
            self.opts += [flag, v]

    def write(self, threads, max_memory, force, no_sync, **safety):
        self.int("--threads", "threads", threads)
        if max_memory is not None and not isinstance(max_memory, str):
            if isinstance(max_memory, bool) or not isinstance(max_memory, int):
                self._type_error("max_memory", 'an int (bytes) or a str such as "256M"',
                                 max_memory)
            max_memory = str(max_memory)
        self.str("--max-memory", "max_memory", max_memory)
        self.flag("--force", "force", force)
        self.flag("--no-sync", "no_sync", no_sync)
        for name, value in safety.items():
            self.flag("--" + name.replace("_", "-"), name, value)

    def run(self, progress):
        if progress is not None and not callable(progress):
            self._type_error("progress", "a callable(done_bytes, total_bytes) or None", progress)
        argv = self.opts + ["--json", "--"] + self.pos
        with _translate():
            _, out = _native.run_command(argv, progress)
        return json.loads(out) if out.strip() else None


_WRITE_DOC = """
    Every writing function also takes threads (int), max_memory (bytes, or "256M"), force
    (replace an existing output), no_sync (skip the fsyncs) and progress: a callable
    progress(done_bytes, total_bytes), called on the calling thread a few times a second while
    the work runs (with the GIL released) and once at the end. An exception it raises, or
    KeyboardInterrupt (Ctrl-C), stops the work and is raised; the output is then not written
    (outputs appear whole or not at all)."""


def _doc(f):
    f.__doc__ = (f.__doc__ or "") + _WRITE_DOC
    return f


def hash(path, *, algo="sha256", jobs=None, progress=None):
    """Identity hashes of one file or a list of files, each from one read: the fields of
    `ckptkit hash --json` (path, size, hashes {name: hex}, not_defined, embedded: the hashes
    recorded in the metadata and whether they match). algo: comma-separated sha256, autov1,
    autov2, autov3, crc32, blake3 or "all". A single path gives one dict, a list a list.
    progress(done_bytes, total_bytes) and Ctrl-C as for convert."""
    a = _Argv("hash", "hash")
    single = a.inputs("path", path)
    a.str("--algo", "algo", algo)
    a.int("--jobs", "jobs", jobs)
    r = a.run(progress)
    return r[0] if single else r


def verify(path, *, structure_only=False, max_abs=None, threads=None, progress=None):
    """Is the file intact and sound? The fields of `ckptkit verify --json` for one file (a dict)
    or a list of files (a list): structure, lint, anatomy defects and, unless structure_only,
    NaN/Inf/zero counts of every value. Problems are reported in the result, not raised.
    progress(done_bytes, total_bytes) follows the value pass; Ctrl-C stops it."""
    a = _Argv("verify", "verify")
    single = a.inputs("path", path)
    a.flag("--structure-only", "structure_only", structure_only)
    a.float("--max-abs", "max_abs", max_abs)
    a.int("--threads", "threads", threads)
    r = a.run(progress)
    return r[0] if single else r


@_doc
def convert(input, output, *, dtype=None, quant=None, target=None, to=None, prediction_type=None,
            tokenizers_from=None, max_shard_size=None, clip_l=None, clip_g=None, t5xxl=None,
            vae=None, max_header_size=None, allow_dangerous=False, threads=None,
            max_memory=None, force=False, no_sync=False, progress=None):
    """`ckptkit convert`: rewrites a checkpoint as safetensors (dtype: "f16", "bf16", "f32",
    "f8_e4m3", "f8_e5m2" or "keep"), as GGUF (output NAME.gguf, quant "q8_0", "q4_k_m", ...,
    target "comfyui" or "sdcpp"), as a diffusers folder (to="diffusers", prediction_type,
    tokenizers_from, max_shard_size "10GB"; a FLUX/SD3 transformer given alone takes its parts
    from clip_l, clip_g, t5xxl, vae) or from a diffusers folder (input a folder). Returns the --json report:
    for a file output, tensors/tensors_converted/tensors_copied/kept_not_float/output_bytes/
    verdict/gguf...; for a folder either way, architecture/family/outputs/dropped/notes."""
    a = _Argv("convert", "convert")
    a.input("input", input)
    a.output("--output", "output", output)
    a.str("--dtype", "dtype", dtype)
    a.str("--quant", "quant", quant)
    a.str("--target", "target", target)
    a.str("--to", "to", to)
    a.str("--prediction-type", "prediction_type", prediction_type)
    a.existing("--tokenizers-from", "tokenizers_from", tokenizers_from)
    a.str("--max-shard-size", "max_shard_size", max_shard_size)
    _parts(a, clip_l, clip_g, None, t5xxl, vae)
    a.int("--max-header-size", "max_header_size", max_header_size)
    a.write(threads, max_memory, force, no_sync, allow_dangerous=allow_dangerous)
    return a.run(progress)


def _reshape_common(a, title, max_header_size, allow_dangerous, threads, max_memory, force,
                    no_sync):
    a.str("--title", "title", title)
    a.int("--max-header-size", "max_header_size", max_header_size)
    a.write(threads, max_memory, force, no_sync, allow_dangerous=allow_dangerous)


def _parts(a, clip_l, clip_g, clip_h, t5xxl, vae):
    for flag, name, value in (("--clip-l", "clip_l", clip_l), ("--clip-g", "clip_g", clip_g),
                              ("--clip-h", "clip_h", clip_h), ("--t5xxl", "t5xxl", t5xxl),
                              ("--vae", "vae", vae)):
        a.existing(flag, name, value)


@_doc
def split(input, output, *, name=None, quant=None, target=None, title=None, max_header_size=None,
          allow_dangerous=False, threads=None, max_memory=None, force=False, no_sync=False,
          progress=None):
    """`ckptkit split`: a monolithic file into ComfyUI parts under the folder `output`
    (diffusion_models/, text_encoders/, vae/; with quant, GGUF for the diffusion model and T5).
    Returns the --json report: architecture, family, outputs [{path, part, tensors, bytes}],
    dropped, notes, input_bytes, output_bytes, seconds."""
    a = _Argv("split", "split")
    a.input("input", input)
    a.output("--output", "output", output)
    a.str("--name", "name", name)
    a.str("--quant", "quant", quant)
    a.str("--target", "target", target)
    _reshape_common(a, title, max_header_size, allow_dangerous, threads, max_memory, force,
                    no_sync)
    return a.run(progress)


@_doc
def assemble(diffusion_model, output, *, clip_l=None, clip_g=None, clip_h=None, t5xxl=None,
             vae=None, allow_missing=False, title=None, max_header_size=None,
             allow_dangerous=False, threads=None, max_memory=None, force=False, no_sync=False,
             progress=None):
    """`ckptkit assemble`: parts into one file in the family's single-file layout (the
    architecture comes from diffusion_model). Returns the same report as split."""
    a = _Argv("assemble", "assemble")
    a.existing("--diffusion-model", "diffusion_model", diffusion_model)
    _parts(a, clip_l, clip_g, clip_h, t5xxl, vae)
    a.output("--output", "output", output)
    a.flag("--allow-missing", "allow_missing", allow_missing)
    _reshape_common(a, title, max_header_size, allow_dangerous, threads, max_memory, force,
                    no_sync)
    return a.run(progress)


@_doc
def swap(input, output, *, clip_l=None, clip_g=None, clip_h=None, t5xxl=None, vae=None,
         title=None, max_header_size=None, allow_dangerous=False, threads=None, max_memory=None,
         force=False, no_sync=False, progress=None):
    """`ckptkit swap`: replaces parts (vae, clip_l, ...) of a single-file model, with the checks
    of assemble. Returns the same report as split."""
    a = _Argv("swap", "swap")
    a.input("input", input)
    _parts(a, clip_l, clip_g, clip_h, t5xxl, vae)
    a.output("--output", "output", output)
    _reshape_common(a, title, max_header_size, allow_dangerous, threads, max_memory, force,
                    no_sync)
    return a.run(progress)


@_doc
def prune(input, output, *, ema=None, drop_training_extras=False, keep_training_extras=False,
          dtype=None, title=None, max_header_size=None, allow_dangerous=False, threads=None,
          max_memory=None, force=False, no_sync=False, progress=None):
    """`ckptkit prune`: drops the EMA copy (ema="drop", or "keep", or "use" its weights) and
    training buffers, optionally casting (dtype). Returns the same report as split."""
    a = _Argv("prune", "prune")
    a.input("input", input)
    a.output("--output", "output", output)
    a.str("--ema", "ema", ema)
    a.flag("--drop-training-extras", "drop_training_extras", drop_training_extras)
    a.flag("--keep-training-extras", "keep_training_extras", keep_training_extras)
    a.str("--dtype", "dtype", dtype)
    _reshape_common(a, title, max_header_size, allow_dangerous, threads, max_memory, force,
                    no_sync)
    return a.run(progress)


@_doc
def merge(inputs=None, output=None, *, method=None, alpha=None, blocks=None, weights=None,
          normalize=False, allow_extrapolation=False, density=None, drop=None, seed=None,
          dtype=None, missing=None, vae_from=None, text_encoder_from=None, hash_inputs=False,
          title=None, recipe=None, list_blocks=None, dry_run=False, max_header_size=None,
          allow_dangerous=False, threads=None, max_memory=None, force=False, no_sync=False,
          progress=None):
    """`ckptkit merge`: mixes models A (the base), B, ... tensor by tensor. method:
    "weighted-sum", "add-difference", "train-difference", "slerp", "ties", "dare", "dare-ties";
    alpha: a number, or {group: number} / ["IN03=0.3", ...] per block group; weights: a list of
    numbers or a comma-separated str; recipe: a TOML file (docs/merge.md). Returns the --json
    report (with list_blocks=PATH, the model's alpha groups; with dry_run, the plan)."""
    a = _Argv("merge", "merge")
    if inputs is not None:
        a.inputs("inputs", inputs)
    a.output("--output", "output", output)
    a.str("--method", "method", method)
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        a.float("--alpha", "alpha", alpha)
    elif isinstance(alpha, str):
        a.strs("--alpha", "alpha", alpha)
    else:
        a.pairs("--alpha", "alpha", alpha)
    a.str("--blocks", "blocks", blocks)
    if isinstance(weights, (list, tuple)):
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
            a._type_error("weights", "a list of numbers or a str", weights)
        weights = ",".join(repr(float(w)) for w in weights)
    a.str("--weights", "weights", weights)
    a.flag("--normalize", "normalize", normalize)
    a.flag("--allow-extrapolation", "allow_extrapolation", allow_extrapolation)
    a.float("--density", "density", density)
    a.float("--drop", "drop", drop)
    a.int("--seed", "seed", seed)
    a.str("--dtype", "dtype", dtype)
    a.str("--missing", "missing", missing)
    a.str("--vae-from", "vae_from", vae_from)
    a.str("--text-encoder-from", "text_encoder_from", text_encoder_from)
    a.flag("--hash-inputs", "hash_inputs", hash_inputs)
    a.str("--title", "title", title)
    a.existing("--recipe", "recipe", recipe)
    a.existing("--list-blocks", "list_blocks", list_blocks)
    a.flag("--dry-run", "dry_run", dry_run)
    a.int("--max-header-size", "max_header_size", max_header_size)
    a.write(threads, max_memory, force, no_sync, allow_dangerous=allow_dangerous)
    return a.run(progress)


@_doc
def meta(path, *, set=None, delete=None, from_json=None, clear=False, output=None, threads=None,
         max_memory=None, force=False, no_sync=False, progress=None):
    """`ckptkit meta`: a safetensors file's metadata as a dict; with edits (set: {key: value},
    delete: keys, from_json: a JSON object file, clear) writes `output` with the new header and
    the same data section byte for byte, and returns its metadata."""
    a = _Argv("meta", "meta")
    a.input("path", path)
    a.pairs("--set", "set", set)
    a.strs("--delete", "delete", delete)
    a.existing("--from-json", "from_json", from_json)
    a.flag("--clear", "clear", clear)
    a.output("--output", "output", output)
    a.write(threads, max_memory, force, no_sync)
    return a.run(progress)


@_doc
def sample(layout=None, output=None, *, dtype=None, seed=None, sparse=False, list=False,
           threads=None, max_memory=None, force=False, no_sync=False, progress=None):
    """`ckptkit sample`: writes a synthetic checkpoint with a published layout's exact names,
    dtypes and shapes (sparse=True: header and tiny tensors only, the rest holes). Returns
    {output, layout, tensors, output_bytes, sparse, seconds}; with list=True, the layouts
    [{name, tensors, parameters, bytes, dtypes}]."""
    a = _Argv("sample", "sample")
    a.str("--layout", "layout", layout)
    a.output("--output", "output", output)
    a.str("--dtype", "dtype", dtype)
    a.int("--seed", "seed", seed)
    a.flag("--sparse", "sparse", sparse)
    a.flag("--list", "list", list)
    a.write(threads, max_memory, force, no_sync)
    return a.run(progress)


def _lora_inputs(a, loras):
    if isinstance(loras, (str, bytes, os.PathLike)) or (
            isinstance(loras, tuple) and len(loras) == 2 and isinstance(loras[1], (int, float))):
        loras = [loras]
    if not isinstance(loras, (type([]), tuple)) or not loras:
        a._type_error("loras", "a path, (path, strength) or a list of them", loras)
    for item in loras:
        if isinstance(item, tuple):
            if len(item) != 2 or isinstance(item[1], bool) or not isinstance(item[1], (int, float)):
                a._type_error("loras", "a path, (path, strength) or a list of them", item)
            a.pos.append(f"{a.path('loras', item[0])}:{float(item[1])!r}")
        else:
            a.input("loras", item)


@_doc
def lora_bake(base, loras, output, *, strength_te=None, dtype=None, fp8_rounding=None, seed=None,
              quant=None, target=None, block=None, block_weights=None, strict=False,
              allow_dangerous=False, threads=None, max_memory=None, force=False, no_sync=False,
              progress=None):
    """`ckptkit lora bake`: adds LoRAs to a base model's weights, streamed. loras: a path,
    (path, strength) or a list of them; block: {"IN04": 0.5, ...} or ["IN04=0.5"]; strict
    raises when a module lands on no tensor. Returns the --json report."""
    a = _Argv("lora_bake", "lora", "bake")
    a.input("base", base)
    _lora_inputs(a, loras)
    a.output("--output", "output", output)
    a.float("--strength-te", "strength_te", strength_te)
    a.str("--dtype", "dtype", dtype)
    a.str("--fp8-rounding", "fp8_rounding", fp8_rounding)
    a.int("--seed", "seed", seed)
    a.str("--quant", "quant", quant)
    a.str("--target", "target", target)
    a.pairs("--block", "block", block)
    a.str("--block-weights", "block_weights", block_weights)
    a.flag("--strict", "strict", strict)
    a.write(threads, max_memory, force, no_sync, allow_dangerous=allow_dangerous)
    return a.run(progress)


@_doc
def lora_extract(tuned, base, output, *, rank, conv_rank=None, text_encoders=False, min_diff=None,
                 alpha=None, clamp_quantile=None, no_clamp=False, exact=False, format=None,
                 dtype=None, allow_dangerous=False, threads=None, max_memory=None, force=False,
                 no_sync=False, progress=None):
    """`ckptkit lora extract`: a LoRA of rank `rank` from the difference tuned - base
    (randomized SVD, or exact=True), in kohya/diffusers/peft names (format). Returns the --json
    report (modules, share of ||dW|| kept, ...)."""
    a = _Argv("lora_extract", "lora", "extract")
    a.input("tuned", tuned)
    a.input("base", base)
    a.output("--output", "output", output)
    a.int("--rank", "rank", rank)
    a.int("--conv-rank", "conv_rank", conv_rank)
    a.flag("--text-encoders", "text_encoders", text_encoders)
    a.float("--min-diff", "min_diff", min_diff)
    a.float("--alpha", "alpha", alpha)
    a.float("--clamp-quantile", "clamp_quantile", clamp_quantile)
    a.flag("--no-clamp", "no_clamp", no_clamp)
    a.flag("--exact", "exact", exact)
    a.str("--format", "format", format)
    a.str("--dtype", "dtype", dtype)
    a.write(threads, max_memory, force, no_sync, allow_dangerous=allow_dangerous)
    return a.run(progress)


@_doc
def lora_resize(lora, output, *, rank, conv_rank=None, dynamic=None, dtype=None,
                allow_dangerous=False, threads=None, max_memory=None, force=False, no_sync=False,
                progress=None):
    """`ckptkit lora resize`: cuts a LoRA's modules to rank `rank` (dynamic: "sv_ratio=X",
    "sv_fro=X" or "sv_cumulative=X", kohya's rules). Returns the --json report (every
    module's new rank and the norm it keeps)."""
    a = _Argv("lora_resize", "lora", "resize")
    a.input("lora", lora)
    a.output("--output", "output", output)
    a.int("--rank", "rank", rank)
    a.int("--conv-rank", "conv_rank", conv_rank)
    a.str("--dynamic", "dynamic", dynamic)
    a.str("--dtype", "dtype", dtype)
    a.write(threads, max_memory, force, no_sync, allow_dangerous=allow_dangerous)
    return a.run(progress)


@_doc
def lora_convert(input, output, *, to, base=None, allow_dangerous=False, threads=None,
                 max_memory=None, force=False, no_sync=False, progress=None):
    """`ckptkit lora convert`: a LoRA's key names to "kohya", "diffusers" or "peft" (base: a
    model of its family to name modules against). Returns the --json report."""
    a = _Argv("lora_convert", "lora", "convert")
    a.input("input", input)
    a.output("--output", "output", output)
    a.str("--to", "to", to)
    a.existing("--base", "base", base)
    a.write(threads, max_memory, force, no_sync, allow_dangerous=allow_dangerous)
    return a.run(progress)


# --- the model library (`ckptkit library`, docs/library.md) ------------------------------------
# db: the library's SQLite file; None means the command's default
# ($XDG_CACHE_HOME/ckptkit/library.sqlite or ~/.cache/ckptkit/library.sqlite). `library serve`
# has no function: it runs until stopped; start it as a command.

def library_index(folders, *, db=None, deep=False, no_hash=False, threads=None):
    """`ckptkit library index`: records the model files under one folder or a list of folders
    (incremental: unchanged files are not read again; files that are gone leave the index).
    deep also fingerprints every component (for library_dupes); no_hash skips the hash phase.
    Returns the --json summary (found, read, unchanged, moved, removed, hashed, errors,
    error_messages). Files that cannot be read are recorded, not raised. Ctrl-C stops it
    (KeyboardInterrupt); what was indexed before is kept."""
    a = _Argv("library_index", "library", "index")
    a.inputs("folders", folders)
    a.output("--db", "db", db)
    a.flag("--deep", "deep", deep)
    a.flag("--no-hash", "no_hash", no_hash)
    a.int("--threads", "threads", threads)
    return a.run(None)


def library_list(*, db=None, kind=None, arch=None, family=None, format=None, unsafe=False,
                 defects=False, errors=False, search=None, sort=None, desc=False):
    """`ckptkit library list`: the indexed models, filtered (kind "checkpoint", "LoRA", "VAE",
    ...; arch; family; format; unsafe, defects, errors: only those files; search: text in the
    path, title, trigger words or architecture) and sorted (sort "path", "size", ...; desc).
    Returns {"total", "count", "models": [one dict per file]}."""
    a = _Argv("library_list", "library", "list")
    a.output("--db", "db", db)
    a.str("--kind", "kind", kind)
    a.str("--arch", "arch", arch)
    a.str("--family", "family", family)
    a.str("--format", "format", format)
    a.flag("--unsafe", "unsafe", unsafe)
    a.flag("--defects", "defects", defects)
    a.flag("--errors", "errors", errors)
    a.str("--search", "search", search)
    a.str("--sort", "sort", sort)
    a.flag("--desc", "desc", desc)
    return a.run(None)


def library_dupes(*, db=None):
    """`ckptkit library dupes`: identical files and (after library_index(deep=True)) identical
    components inside different files, with the bytes keeping one copy would save."""
    a = _Argv("library_dupes", "library", "dupes")
    a.output("--db", "db", db)
    return a.run(None)


def library_show(path, *, db=None):
    """`ckptkit library show`: everything the library knows of one indexed file or diffusers
    folder (components, hashes, metadata, inspect's report). A file not in the library raises
    Error (code "not found")."""
    a = _Argv("library_show", "library", "show")
    a.input("path", path)
    a.output("--db", "db", db)
    return a.run(None)


def library_loras(model, *, db=None):
    """`ckptkit library loras --for MODEL`: the indexed LoRAs made for the model's family (the
    model indexed or not). Returns {"model", "architecture", "family", "loras": [...]}."""
    a = _Argv("library_loras", "library", "loras")
    a.existing("--for", "model", model)
    a.output("--db", "db", db)
    return a.run(None)
