"""Generators of PyTorch checkpoints for the tests (test_torch_read.py, test_scan.py) and for the
fuzz corpora: real torch.save files (zip and legacy formats, every dtype, views, nested state
dicts, a Lightning-style checkpoint, SD1.5 names, a big-endian archive), broken files, and a
corpus of malicious pickles whose payloads only create canary files.

Used as a module by the tests; as a script:

    torch_fixtures.py OUTDIR                    write every fixture into OUTDIR
    torch_fixtures.py --verify-payloads OUTDIR  write the malicious corpus into OUTDIR and prove,
                                                one throwaway subprocess per file, that plain
                                                pickle / torch.load WOULD run each payload (each
                                                payload creates OUTDIR/CANARY-<name>, nothing else)

Nothing here unpickles a malicious file except `verify_payloads`, which the tests never call.

Every pickle in the malicious corpus is either written opcode by opcode (PickleWriter; the
dangerous modules are never imported) or produced by pickling an object whose __reduce__ names
the dangerous callable (pickling never calls it). Expected global offsets are computed
independently of the writer, with pickletools.genops (`file_globals`).
"""
import collections
import io
import math
import os
import pickle
import pickletools
import shlex
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from ckpt_testlib import layout_table

HERE = os.path.dirname(os.path.abspath(__file__))

# torch.save's legacy (pre-1.6) magic number, the first pickle of a legacy file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

ST_NAME = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]
STORAGE_CLASS = {
    torch.float64: "DoubleStorage", torch.float32: "FloatStorage", torch.float16: "HalfStorage",
    torch.bfloat16: "BFloat16Storage", torch.int64: "LongStorage", torch.int32: "IntStorage",
    torch.int16: "ShortStorage", torch.int8: "CharStorage", torch.uint8: "ByteStorage",
    torch.bool: "BoolStorage",
}


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# --- bytes of tensors ------------------------------------------------------------------------------

def tensor_bytes(t):
    """The bytes of t laid out contiguously in C order, little-endian (what a safetensors file
    holds for it)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def storage_bytes(t):
    """The raw bytes of t's whole storage (what torch.save writes for it)."""
    s = t.storage()
    base = torch.empty(0, dtype=t.dtype).set_(s, 0, (s.size(),), (1,))
    return tensor_bytes(base)


def cast_like_torch(t, st_dtype):
    """What convert --dtype st_dtype must produce for t: floats cast with .to, others unchanged."""
    target = {"keep": None, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}[st_dtype]
    if target is None or not t.is_floating_point():
        return t.contiguous()
    return t.contiguous().to(target)


# --- saving -------------------------------------------------------------------------------------------

def save(obj, path, fmt="zip", protocol=2):
    """torch.save in the zip (>= 1.6) or legacy format with the given pickle protocol."""
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"), pickle_protocol=protocol)
    return path


# --- zip archives -------------------------------------------------------------------------------------

def zip_entries(path):
    """[(name, bytes)] in archive order."""
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def zip_prefix(path):
    """The archive's top folder ('archive' in recent torch, the file's stem in torch 1.13)."""
    with zipfile.ZipFile(path) as z:
        return z.infolist()[0].filename.split("/")[0]


def write_zip(path, entries, align=64):
    """Writes a stored (uncompressed) zip like torch's writer: each entry's data starts at a
    multiple of `align`, padded with an 'FB' extra field in the local header."""
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_STORED
            start = f.tell() + 30 + len(name.encode("utf-8")) + 4
            pad = (-start) % align if align else 0
            zi.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            z.writestr(zi, data)
    return path


def rewrite_zip(src, dst, replace=None, drop=(), add=(), add_after=None):
    """Copies the zip src to dst: `replace` {name: bytes}, `drop` names, `add` [(name, bytes)]
    inserted after the entry named add_after (at the end when None)."""
    replace = replace or {}
    out = []
    for name, data in zip_entries(src):
        if name in drop:
            continue
        out.append((name, replace.get(name, data)))
        if add_after == name:
            out.extend(add)
    if add_after is None:
        out.extend(add)
    return write_zip(dst, out)


def entry_data_offset(path, name):
    """Absolute offset of entry `name`'s data, from its local file header (whose extra field may
    differ from the central directory's)."""
    with zipfile.ZipFile(path) as z:
        zi = z.getinfo(name)
    with open(path, "rb") as f:
        f.seek(zi.header_offset)
        h = f.read(30)
    sig, _, _, method, _, _, _, _, _, n, m = struct.unpack("<IHHHHHIIIHH", h)
    assert sig == 0x04034B50, f"{path}: no local header for {name}"
    assert method == 0, f"{path}: {name} is compressed"
    return zi.header_offset + 30 + n + m


# --- a pickle writer, opcode by opcode ---------------------------------------------------------------

class PickleWriter:
    """Emits pickle opcodes; each method returns the position of the opcode it wrote."""

    def __init__(self, proto=2):
        self.buf = bytearray()
        self.proto = proto
        if proto >= 2:
            self.raw(b"\x80" + bytes([proto]))

    def raw(self, b):
        p = len(self.buf)
        self.buf += b
        return p

    def getvalue(self):
        return bytes(self.buf)

    # structure
    def mark(self): return self.raw(b"(")
    def stop(self): return self.raw(b".")
    def pop(self): return self.raw(b"0")
    def tuple(self): return self.raw(b"t")
    def tuple1(self): return self.raw(b"\x85")
    def tuple2(self): return self.raw(b"\x86")
    def tuple3(self): return self.raw(b"\x87")
    def empty_tuple(self): return self.raw(b")")
    def list(self): return self.raw(b"l")
    def empty_list(self): return self.raw(b"]")
    def append(self): return self.raw(b"a")
    def empty_dict(self): return self.raw(b"}")
    def setitem(self): return self.raw(b"s")
    def setitems(self): return self.raw(b"u")
    def none(self): return self.raw(b"N")
    def true(self): return self.raw(b"\x88")
    def false(self): return self.raw(b"\x89")
    def memoize(self): return self.raw(b"\x94")
    def binpersid(self): return self.raw(b"Q")

    # calls and globals
    def global_(self, module, name):
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def inst(self, module, name):
        return self.raw(b"i" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self): return self.raw(b"\x93")
    def reduce(self): return self.raw(b"R")
    def build(self): return self.raw(b"b")
    def obj(self): return self.raw(b"o")
    def newobj(self): return self.raw(b"\x81")
    def newobj_ex(self): return self.raw(b"\x92")
    def ext1(self, code): return self.raw(b"\x82" + struct.pack("<B", code))
    def ext2(self, code): return self.raw(b"\x83" + struct.pack("<H", code))
    def ext4(self, code): return self.raw(b"\x84" + struct.pack("<i", code))

    # memo
    def put(self, i):
        return self.raw(b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i))

    def get(self, i):
        return self.raw(b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i))

    # values
    def int_(self, n):
        if self.proto == 0:
            return self.raw(b"I" + str(n).encode() + b"\n")
        if 0 <= n < 256:
            return self.raw(b"K" + bytes([n]))
        if 0 <= n < 65536:
            return self.raw(b"M" + struct.pack("<H", n))
        if -2**31 <= n < 2**31:
            return self.raw(b"J" + struct.pack("<i", n))
        enc = pickle.encode_long(n)
        return self.raw(b"\x8a" + bytes([len(enc)]) + enc)

    def str_(self, s):
        if self.proto == 0:
            esc = (s.replace("\\", "\\u005c").replace("\0", "\\u0000").replace("\n", "\\u000a")
                   .replace("\r", "\\u000d").replace("\x1a", "\\u001a"))
            return self.raw(b"V" + esc.encode("raw-unicode-escape") + b"\n")
        b = s.encode("utf-8")
        return self.raw(b"X" + struct.pack("<I", len(b)) + b)

    def short_str(self, s):
        b = s.encode("utf-8")
        return self.raw(b"\x8c" + bytes([len(b)]) + b)

    def bytes_(self, b):
        if len(b) < 256:
            return self.raw(b"C" + bytes([len(b)]) + b)
        return self.raw(b"B" + struct.pack("<I", len(b)) + b)

    def int_tuple(self, vals):
        self.mark()
        for v in vals:
            self.int_(v)
        return self.tuple()

    def tensor(self, key, dtype, storage_numel, offset, size, stride):
        """torch._utils._rebuild_tensor_v2(persistent_load(('storage', torch.XStorage, key, 'cpu',
        numel)), offset, size, stride, False, OrderedDict()), as torch.save writes it."""
        p = self.global_("torch._utils", "_rebuild_tensor_v2")
        self.mark()
        self.mark()
        self.str_("storage")
        self.global_("torch", STORAGE_CLASS[dtype])
        self.str_(key)
        self.str_("cpu")
        self.int_(storage_numel)
        self.tuple()
        self.binpersid()
        self.int_(offset)
        self.int_tuple(size)
        self.int_tuple(stride)
        self.false()
        self.global_("collections", "OrderedDict")
        self.empty_tuple()
        self.reduce()
        self.tuple()
        self.reduce()
        return p


def handmade_torch_zip(path, pickle_bytes, storages, prefix="archive"):
    """A torch zip archive with our own data.pkl: storages is {key: raw bytes}."""
    entries = [(f"{prefix}/data.pkl", pickle_bytes)]
    entries += [(f"{prefix}/data/{k}", v) for k, v in storages.items()]
    entries.append((f"{prefix}/version", b"3\n"))
    return write_zip(path, entries)


# --- finding globals independently (pickletools) -------------------------------------------------------

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
               "BINSTRING", "SHORT_BINSTRING"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_NO_PUSH = {"PROTO", "FRAME", "MARK", "STOP", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}


def pickle_globals(data, base=0):
    """Every global reference in one pickle: [(absolute offset, opcode, module, name)], opcode
    one of GLOBAL, INST, STACK_GLOBAL, EXT (module None, name = the code). STACK_GLOBAL's names
    are resolved when its two operands were pushed just before it (strings or memo gets of
    strings, which is how Python's pickler writes it); else they are None. Reading stops
    quietly at a malformed opcode."""
    out, memo, tail = [], {}, []
    try:
        for op, arg, pos in pickletools.genops(data):
            n = op.name
            if n in ("GLOBAL", "INST"):
                module, name = arg.split(" ", 1)
                out.append((base + pos, n, module, name))
                tail.append(None)
            elif n == "STACK_GLOBAL":
                m = tail[-2] if len(tail) >= 2 else None
                nm = tail[-1] if tail else None
                ok = isinstance(m, str) and isinstance(nm, str)
                out.append((base + pos, n, m if ok else None, nm if ok else None))
                del tail[-2:]
                tail.append(None)
            elif n in ("EXT1", "EXT2", "EXT4"):
                out.append((base + pos, "EXT", None, str(arg)))
                tail.append(None)
            elif n in _STRING_OPS:
                tail.append(arg)
            elif n in _PUT_OPS:
                memo[arg] = tail[-1] if tail else None
            elif n == "MEMOIZE":
                memo[len(memo)] = tail[-1] if tail else None
            elif n in _GET_OPS:
                tail.append(memo.get(arg))
            elif n == "POP":
                if tail:
                    tail.pop()
            elif n not in _NO_PUSH:
                tail.append(None)
    except Exception:  # malformed tail: keep what was found before it
        pass
    return out


def pickle_end(data, start=0):
    """One past the STOP of the pickle starting at data[start]; raises on a malformed pickle."""
    for op, arg, pos in pickletools.genops(io.BytesIO(data[start:])):
        if op.name == "STOP":
            return start + pos + 1
    raise ValueError("no STOP")


def _is_legacy(data):
    try:
        end = pickle_end(data, 0)
    except Exception:
        return False
    return any(op.name in ("LONG1", "LONG4") and arg == LEGACY_MAGIC
               for op, arg, _ in pickletools.genops(data[:end]))


def file_pickles(path):
    """[(zip entry name or None, absolute offset, pickle bytes)] of every pickle in a file:
    each *.pkl entry of a zip; the five pickles of a legacy torch file; else the whole file as
    one (possibly malformed) pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [i.filename for i in z.infolist() if i.filename.endswith(".pkl")]
            return [(n, entry_data_offset(path, n), z.read(n)) for n in names]
    with open(path, "rb") as f:
        data = f.read()
    if _is_legacy(data):
        out, pos = [], 0
        for _ in range(5):
            end = pickle_end(data, pos)
            out.append((None, pos, data[pos:end]))
            pos = end
        return out
    return [(None, 0, data)]


def file_globals(path):
    """[(entry, absolute offset, opcode, module, name)] for every global in every pickle."""
    out = []
    for entry, base, data in file_pickles(path):
        out += [(entry, *g) for g in pickle_globals(data, base)]
    return out


# --- benign fixtures ----------------------------------------------------------------------------------

def float_specials(dtype):
    fi = torch.finfo(dtype)
    return [0.0, -0.0, 1.0, -1.5, math.inf, -math.inf, math.nan, -math.nan, fi.tiny, -fi.tiny,
            fi.tiny / 4, -fi.tiny * 0.75, fi.max, -fi.max, fi.eps, 1e-3, -7.25]


def _bits(rng, shape, itemsize):
    dt = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}[itemsize]
    info = np.iinfo(dt)
    a = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    return torch.from_numpy(a.copy())


def dtype_zoo(seed=0):
    """One state dict with every dtype torch and safetensors share: random values (negative,
    subnormal, inf, nan, random bit patterns including signaling NaNs for floats; the full range
    for integers), a 0-d scalar and an empty tensor of each."""
    rng = np.random.default_rng(seed)
    sd = collections.OrderedDict()
    for dt in FLOAT_DTYPES:
        n = ST_NAME[dt].lower()
        base = torch.from_numpy(rng.standard_normal((6, 5)) * 3)
        sp = torch.tensor(float_specials(dt), dtype=torch.float64)
        base.view(-1)[:len(sp)] = sp
        sd[f"{n}.values"] = base.to(dt)
        itemsize = torch.empty(0, dtype=dt).element_size()
        sd[f"{n}.bits"] = _bits(rng, (3, 7), itemsize).view(dt)
        sd[f"{n}.scalar"] = torch.tensor(-2.5, dtype=dt)
        sd[f"{n}.empty"] = torch.empty(0, 3, dtype=dt)
    for dt in INT_DTYPES:
        n = ST_NAME[dt].lower()
        if dt == torch.bool:
            vals = torch.from_numpy(rng.integers(0, 2, size=(2, 3, 4)).astype(np.bool_))
            scalar = torch.tensor(True)
        elif dt == torch.uint8:
            vals = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 4), dtype=np.uint8))
            scalar = torch.tensor(200, dtype=dt)
        else:
            itemsize = torch.empty(0, dtype=dt).element_size()
            vals = _bits(rng, (2, 3, 4), itemsize)
            info = torch.iinfo(dt)
            vals.view(-1)[:3] = torch.tensor([info.min, info.max, -1], dtype=dt)
            scalar = torch.tensor(-3, dtype=dt)
        sd[f"{n}.values"] = vals
        sd[f"{n}.scalar"] = scalar
        sd[f"{n}.empty"] = torch.empty(2, 0, dtype=dt)
    return sd


def view_zoo(seed=1):
    """Tensors that are views: storage offsets, transposes, steps, stride-0 expansion, a 4-D
    permute, and several views of one shared storage (saved once by torch.save)."""
    g = torch.Generator().manual_seed(seed)
    big = torch.randn(64, generator=g)
    m = torch.randn(5, 7, generator=g)
    x = torch.randn(9, 3, generator=g)
    p = torch.randn(2, 3, 4, 5, generator=g)
    base = torch.arange(100, dtype=torch.float32) * 0.5 - 7
    h = torch.randn(40, generator=g).half()
    ints = torch.arange(20, dtype=torch.int64) * 3 - 11
    return collections.OrderedDict(
        slice=big[10:20],
        transposed=m.t(),
        strided=x[::2],
        expanded=torch.tensor([[1.0], [2.0], [3.0]]).expand(3, 4),
        permuted=p.permute(3, 1, 0, 2),
        block=m[1:4, 2:6],
        shared_base=base,
        shared_offset=base[5:15],
        shared_column=base.view(10, 10)[:, 3],
        shared_tail_t=base[50:].view(5, 10).t(),
        shared_scalar=base[7],
        shared_expand=base[90:93].view(3, 1).expand(3, 2),
        half_view=h[3:33].view(5, 6).t(),
        int_step=ints[1::3],
    )


NESTED_WRAPPERS = ["state_dict", "model", "module", "params_ema"]


def small_state_dict(seed=2):
    g = torch.Generator().manual_seed(seed)
    return collections.OrderedDict([
        ("conv.weight", torch.randn(4, 3, 3, 3, generator=g)),
        ("conv.bias", torch.randn(4, generator=g)),
        ("norm.weight", torch.randn(4, generator=g).half()),
        ("embed.position_ids", torch.arange(7).view(1, 7)),
    ])


def nested_checkpoint(seed=3):
    """{"state_dict": {x, unet: {w, sub: {b}}}, epoch, global_step, history, name}; returns
    (checkpoint, {dotted name: tensor}, other entry names)."""
    g = torch.Generator().manual_seed(seed)
    x, w, b = torch.randn(3, 2, generator=g), torch.randn(2, 2, generator=g), torch.randn(5, generator=g)
    ckpt = {
        "epoch": 5,
        "state_dict": collections.OrderedDict(x=x, unet={"w": w, "sub": {"b": b}}),
        "global_step": 1000,
        "history": [1, 2.5, "three"],
        "name": "run-7",
    }
    return ckpt, {"x": x, "unet.w": w, "unet.sub.b": b}, ["epoch", "global_step", "history", "name"]


layout_rows = layout_table


def sd15_subset(every=20, clamp=8, seed=4):
    """Every `every`-th tensor of the SD1.5 LDM layout (plus every non-F32 one), each dim
    clamped to `clamp`: real names and ranks, tiny data."""
    g = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict()
    for i, (name, dtype, shape) in enumerate(layout_rows("sd15-ldm")):
        if i % every and dtype == "F32":
            continue
        shape = [min(d, clamp) for d in shape]
        if dtype == "F32":
            sd[name] = torch.randn(*shape, generator=g) if shape else torch.tensor(0.125)
        elif dtype in ("I64", "I32"):
            tdt = torch.int64 if dtype == "I64" else torch.int32
            sd[name] = torch.arange(math.prod(shape), dtype=tdt).view(shape) + 1000
        else:
            raise ValueError(f"unexpected dtype {dtype} in sd15-ldm")
    return sd


def big_endian_zip(path, seed=5):
    """A torch zip whose `byteorder` entry says "big", every storage byte-swapped. Returns the
    original (little-endian) tensors."""
    g = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict(
        w=torch.randn(2, 3, generator=g),
        h=torch.randn(5, generator=g).half(),
        d=torch.randn(2, 2, generator=g).double(),
        i=torch.tensor([1, -2, 1 << 40], dtype=torch.int64),
        u=torch.tensor([1, 2, 250], dtype=torch.uint8),
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = save(sd, os.path.join(tmp, "archive.ckpt"))
        prefix = zip_prefix(src)
        # torch.save numbers storages in the order it meets them: the dict's order here.
        swapped = {}
        for key, t in enumerate(sd.values()):
            name = f"{prefix}/data/{key}"
            raw = dict(zip_entries(src))[name]
            assert raw == storage_bytes(t), name
            size = t.element_size()
            swapped[name] = np.frombuffer(raw, dtype=f"<u{size}").byteswap().tobytes() if size > 1 else raw
        entries = zip_entries(src)
        entries = [(n, swapped.get(n, d)) for n, d in entries if not n.endswith("/byteorder")]
        entries.insert(1, (f"{prefix}/byteorder", b"big"))
        write_zip(path, entries)
    return sd


# --- a Lightning-style checkpoint --------------------------------------------------------------------

FAKE_LIGHTNING = {
    "pytorch_lightning/__init__.py": '__version__ = "1.9.0"\n',
    "pytorch_lightning/callbacks/__init__.py": "",
    "pytorch_lightning/callbacks/model_checkpoint.py": textwrap.dedent("""\
        class ModelCheckpoint:
            def __init__(self, monitor=None, save_top_k=1):
                self.monitor = monitor
                self.save_top_k = save_top_k
        """),
    "pytorch_lightning/utilities/__init__.py": "",
    "pytorch_lightning/utilities/parsing.py": "class AttributeDict(dict):\n    pass\n",
}
LIGHTNING_UNKNOWN = [("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
                     ("pytorch_lightning.utilities.parsing", "AttributeDict")]
LIGHTNING_OTHER = ["callbacks", "epoch", "global_step", "hyper_parameters", "lr_schedulers",
                   "optimizer_states", "pytorch-lightning_version"]


def lightning_state_dict(seed=6):
    """The state dict inside the Lightning fixture (deterministic: the tests rebuild it)."""
    g = torch.Generator().manual_seed(seed)
    return collections.OrderedDict([
        ("model.diffusion_model.input_blocks.0.0.weight", torch.randn(8, 4, 3, 3, generator=g)),
        ("model.diffusion_model.input_blocks.0.0.bias", torch.randn(8, generator=g)),
        ("model_ema.decay", torch.tensor(0.9999)),
        ("model_ema.num_updates", torch.tensor(1234, dtype=torch.int32)),
        ("first_stage_model.decoder.conv_out.weight", torch.randn(3, 4, 3, 3, generator=g).half()),
        ("cond_stage_model.transformer.text_model.embeddings.position_ids",
         torch.arange(77, dtype=torch.int64).view(1, 77)),
        ("cond_stage_model.transformer.text_model.final_layer_norm.weight",
         torch.randn(6, generator=g).to(torch.bfloat16)),
    ])


def _lightning_child(path):
    """Runs in a subprocess with the fake pytorch_lightning on sys.path."""
    from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint
    from pytorch_lightning.utilities.parsing import AttributeDict
    g = torch.Generator().manual_seed(7)
    sd = lightning_state_dict()
    ckpt = {
        "epoch": 5,
        "global_step": 1234,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": sd,
        "callbacks": {ModelCheckpoint(monitor="val/loss"): {
            "best_model_score": np.float64(1.5), "best_k": np.int64(3),
            "best_model_path": "/runs/epoch=5.ckpt", "monitor": "val/loss"}},
        "optimizer_states": [{
            "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.randn(4, 3, generator=g),
                          "exp_avg_sq": torch.rand(4, 3, generator=g)}},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 5, "base_lrs": [1e-4], "_step_count": 6}],
        "hyper_parameters": AttributeDict(lr=1e-4, scale=np.float64(0.18215), channels=4),
    }
    torch.save(ckpt, path)
    back = torch.load(path)  # the oracle: torch reads our own file back
    assert list(back["state_dict"]) == list(sd)
    for k, v in sd.items():
        assert back["state_dict"][k].dtype == v.dtype and torch.equal(back["state_dict"][k], v), k
    assert type(next(iter(back["callbacks"]))).__name__ == "ModelCheckpoint"


def lightning_checkpoint(path):
    """Writes the Lightning-style checkpoint to path (in a subprocess, with a fake
    pytorch_lightning package on its sys.path only). Returns its state dict."""
    with tempfile.TemporaryDirectory() as fake:
        for rel, text in FAKE_LIGHTNING.items():
            os.makedirs(os.path.join(fake, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(fake, rel), "w") as f:
                f.write(text)
        code = (f"import sys; sys.path[:0] = [{fake!r}, {HERE!r}]; import torch_fixtures; "
                f"torch_fixtures._lightning_child({os.path.abspath(path)!r})")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"lightning fixture generator failed:\n{p.stderr}")
    return lightning_state_dict()


# --- broken files -------------------------------------------------------------------------------------

def _small_zip(path, seed=8):
    g = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict((f"t{i}", torch.randn(64, generator=g)) for i in range(4))
    save(sd, path)
    return sd


def handmade_control(path):
    """A valid archive written with PickleWriter (the control for the broken hand-made ones):
    {"w": 2x2 view of a 4-float storage, "w_t": its transpose, "tail": storage[1:4]}. Returns
    the tensors torch.load gives."""
    base = torch.tensor([1.0, -2.0, 3.5, 1e-40])
    w = PickleWriter(2)
    w.empty_dict(); w.mark()
    w.str_("w"); w.tensor("0", torch.float32, 4, 0, (2, 2), (2, 1))
    w.str_("w_t"); w.tensor("0", torch.float32, 4, 0, (2, 2), (1, 2))
    w.str_("tail"); w.tensor("0", torch.float32, 4, 1, (3,), (1,))
    w.setitems(); w.stop()
    handmade_torch_zip(path, w.getvalue(), {"0": tensor_bytes(base)})
    return {"w": base.view(2, 2), "w_t": base.view(2, 2).t(), "tail": base[1:]}


def broken_files(outdir):
    """{name: path} of files ckptkit must refuse with exit status 2."""
    os.makedirs(outdir, exist_ok=True)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        good = os.path.join(tmp, "archive.ckpt")
        _small_zip(good)
        data = read_bytes(good)
        prefix = zip_prefix(good)
        pkl = dict(zip_entries(good))[f"{prefix}/data.pkl"]

        def put(name, content):
            path = os.path.join(outdir, name)
            with open(path, "wb") as f:
                f.write(content)
            out[name] = path

        put("truncated-half.ckpt", data[:len(data) // 2])
        put("truncated-tail10.ckpt", data[:-10])

        # data.pkl cut in the middle of the second GLOBAL's text.
        globs = [pos for op, _, pos in pickletools.genops(pkl) if op.name == "GLOBAL"]
        cut = os.path.join(outdir, "datapkl-cut.ckpt")
        rewrite_zip(good, cut, replace={f"{prefix}/data.pkl": pkl[:globs[1] + 6]})
        out["datapkl-cut.ckpt"] = cut

        missing = os.path.join(outdir, "missing-storage.ckpt")
        rewrite_zip(good, missing, drop={f"{prefix}/data/1"})
        out["missing-storage.ckpt"] = missing

        legacy = os.path.join(tmp, "legacy.pt")
        save(collections.OrderedDict(a=torch.randn(256), b=torch.randn(256)), legacy, "legacy")
        ldata = read_bytes(legacy)
        put("legacy-truncated.pt", ldata[:len(ldata) - 700])

    # Hand-made archives: one storage of 4 floats (16 bytes).
    four = np.float32([1, 2, 3, 4]).tobytes()

    def handmade(name, build, storages=None):
        w = PickleWriter(2)
        w.empty_dict()
        w.str_("w")
        build(w)
        w.setitem()
        w.stop()
        path = os.path.join(outdir, name)
        handmade_torch_zip(path, w.getvalue(), {"0": four} if storages is None else storages)
        out[name] = path

    handmade("size-past-storage.ckpt", lambda w: w.tensor("0", torch.float32, 4, 0, (10,), (1,)))
    handmade("stride-past-storage.ckpt", lambda w: w.tensor("0", torch.float32, 4, 0, (2, 2), (3, 1)))
    handmade("offset-past-storage.ckpt", lambda w: w.tensor("0", torch.float32, 4, 3, (2,), (1,)))
    handmade("storage-entry-short.ckpt", lambda w: w.tensor("0", torch.float32, 100, 0, (100,), (1,)))
    handmade("memo-get-out-of-range.ckpt", lambda w: w.get(200))
    put("text.ckpt", b"this is not a model, just some text\n" * 4)
    put("random.pt", np.random.default_rng(9).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    readme = os.path.join(outdir, "plain-zip.ckpt")
    write_zip(readme, [("readme.txt", b"hello\n"), ("notes/data.txt", b"1 2 3\n")])
    out["plain-zip.ckpt"] = readme
    return out


# --- the malicious corpus -----------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    path: str
    # (module, name) of each global that must be reported "dangerous"; ("EXT", code) for an
    # extension-registry opcode; ("STACK_GLOBAL", None) for a STACK_GLOBAL whose operands are
    # not plain strings (module and name unknowable without running the pickle).
    dangerous: list
    # How plain Python would run the payload: "pickle" (pickle.loads of the file), "torch"
    # (torch.load), "entry:<zip entry>" (pickle.loads of that entry), or None (it would not).
    trigger: str = None
    setup: str = ""            # Python run before the trigger (registering an EXT code, ...)
    tensors: dict = None       # the benign tensors a --allow-dangerous convert must give
    verdict: str = "dangerous"  # or "not-safe" (suspicious or dangerous both acceptable)
    malformed: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)


class _Reduce:
    """Pickles as `fn(*args)`; pickling it never calls fn."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def canary_path(canary_dir, name):
    return os.path.join(os.path.abspath(canary_dir), "CANARY-" + name)


def _call1(w, module, name, arg):
    """module.name(arg) via GLOBAL + REDUCE; returns the GLOBAL's position."""
    p = w.global_(module, name)
    w.str_(arg)
    w.tuple1()
    w.reduce()
    return p


def malicious_corpus(outdir, canary_dir=None):
    """Writes the corpus into outdir; every payload would create canary_dir/CANARY-<name>.
    Returns [Case]."""
    os.makedirs(outdir, exist_ok=True)
    canary_dir = canary_dir or outdir
    cases = []

    def sh(name):
        return "touch " + shlex.quote(canary_path(canary_dir, name))

    def py(name):
        return f"open({canary_path(canary_dir, name)!r}, 'w').close()"

    def bare(name, data, dangerous, trigger="pickle", ext=".pt", **kw):
        path = os.path.join(outdir, name + ext)
        with open(path, "wb") as f:
            f.write(data)
        cases.append(Case(name, path, dangerous, trigger, **kw))

    # os.system, protocol 0: c os\nsystem\n ( V cmd\n t R .
    n = "os-system-p0"
    w = PickleWriter(0)
    w.global_("os", "system"); w.mark(); w.str_(sh(n)); w.tuple(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("os", "system")])

    for n, module, setup in (("os-system-p2", "os", ""), ("posix-system", "posix", ""),
                             ("nt-system", "nt", "import types, os, sys; m = types.ModuleType('nt'); "
                              "m.system = os.system; sys.modules['nt'] = m")):
        w = PickleWriter(2)
        _call1(w, module, "system", sh(n))
        w.stop()
        bare(n, w.getvalue(), [(module, "system")], setup=setup,
             note="nt exists only on Windows: the verification fakes it" if module == "nt" else "")

    for n, fn in (("builtins-exec", "exec"), ("builtins-eval", "eval")):
        w = PickleWriter(2)
        _call1(w, "builtins", fn, py(n))
        w.stop()
        bare(n, w.getvalue(), [("builtins", fn)])

    # subprocess.Popen through STACK_GLOBAL with memoized strings.
    n = "subprocess-popen-stack-global"
    w = PickleWriter(4)
    w.short_str("subprocess"); w.put(1); w.pop()
    w.short_str("Popen"); w.put(2); w.pop()
    w.get(1); w.get(2); w.stack_global()
    w.mark(); w.short_str("touch"); w.short_str(canary_path(canary_dir, n)); w.list()
    w.tuple1(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("subprocess", "Popen")])

    # STACK_GLOBAL whose names are computed, not plain strings: only the allowlisted
    # _codecs.encode appears by name; _codecs.encode('bf', 'rot13') == 'os'.
    n = "stack-global-computed-names"
    w = PickleWriter(4)
    for text in ("bf", "flfgrz"):  # rot13 of "os", "system"
        w.global_("_codecs", "encode"); w.short_str(text); w.short_str("rot13"); w.tuple2(); w.reduce()
    w.stack_global()
    w.short_str(sh(n)); w.tuple1(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("STACK_GLOBAL", None)],
         note="the names are results of calls: whatever they are, the global is dangerous")

    n = "runpy-run-code"
    w = PickleWriter(2)
    w.global_("runpy", "_run_code"); w.str_(py(n)); w.empty_dict(); w.tuple2(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("runpy", "_run_code")])

    # builtins.getattr(importlib.import_module('os'), 'system')(cmd)
    n = "importlib-import-module"
    w = PickleWriter(2)
    w.global_("builtins", "getattr")
    _call1(w, "importlib", "import_module", "os")
    w.str_("system"); w.tuple2(); w.reduce()
    w.str_(sh(n)); w.tuple1(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("importlib", "import_module"), ("builtins", "getattr")])

    # builtins.getattr(builtins.__import__('os'), 'system')(cmd)
    n = "getattr-import-chain"
    w = PickleWriter(2)
    w.global_("builtins", "getattr")
    _call1(w, "builtins", "__import__", "os")
    w.str_("system"); w.tuple2(); w.reduce()
    w.str_(sh(n)); w.tuple1(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("builtins", "getattr"), ("builtins", "__import__")])

    # INST: ( V cmd\n i os\nsystem\n .   (protocol 0: look up and call in one opcode)
    n = "inst-os-system"
    w = PickleWriter(0)
    w.mark(); w.str_(sh(n)); w.inst("os", "system"); w.stop()
    bare(n, w.getvalue(), [("os", "system")])

    # OBJ: ( c os\nsystem\n X cmd o .
    n = "obj-os-system"
    w = PickleWriter(1)
    w.mark(); w.global_("os", "system"); w.str_(sh(n)); w.obj(); w.stop()
    bare(n, w.getvalue(), [("os", "system")],
         note="OBJ calls a class found by GLOBAL: the global is at the GLOBAL opcode")

    # EXT1/EXT2/EXT4: the callable comes from copyreg's extension registry (process state).
    for n, op, code in (("ext1", "ext1", 0xE1), ("ext2", "ext2", 0x1234), ("ext4", "ext4", 0x12345678)):
        w = PickleWriter(2)
        getattr(w, op)(code); w.str_(sh(n)); w.tuple1(); w.reduce(); w.stop()
        bare(n, w.getvalue(), [("EXT", str(code))],
             setup=f"import copyreg; copyreg.add_extension('posix', 'system', {code})",
             note="runs only where the registry maps the code to os.system")

    # NEWOBJ_EX: functools.partial.__new__(partial, os.system, cmd), then called by REDUCE.
    n = "newobj-ex-partial"
    w = PickleWriter(4)
    w.global_("functools", "partial")
    w.global_("os", "system"); w.str_(sh(n)); w.tuple2(); w.empty_dict(); w.newobj_ex()
    w.empty_tuple(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("os", "system")])

    def inner(name):
        iw = PickleWriter(2)
        _call1(iw, "os", "system", sh(name))
        iw.stop()
        return iw.getvalue()

    n = "nested-pickle-loads"
    w = PickleWriter(3)
    w.global_("pickle", "loads"); w.bytes_(inner(n)); w.tuple1(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("pickle", "loads")])

    # torch.load(io.BytesIO(inner)): a legacy load unpickles the magic number first -> runs inner.
    n = "nested-torch-load"
    w = PickleWriter(3)
    w.global_("torch", "load")
    w.global_("_io", "BytesIO"); w.bytes_(inner(n)); w.tuple1(); w.reduce()
    w.tuple1(); w.reduce(); w.stop()
    bare(n, w.getvalue(), [("torch", "load")])

    # A pickle inside bytes, only stored: nothing would load it, but scan should say so.
    n = "nested-pickle-bytes-stored"
    w = PickleWriter(4)
    w.empty_dict(); w.short_str("blob"); w.bytes_(inner(n)); w.setitem(); w.stop()
    bare(n, w.getvalue(), [], trigger=None, verdict="not-safe")

    # A dangerous GLOBAL, the call, then garbage (no STOP): pickle runs the call before failing.
    n = "malformed-after-reduce"
    w = PickleWriter(2)
    _call1(w, "os", "system", sh(n))
    w.raw(b"\xff\xfe\xfd garbage \x00\x01")
    bare(n, w.getvalue(), [("os", "system")], malformed=True)

    n = "malformed-after-global"
    w = PickleWriter(2)
    w.global_("os", "system")
    w.raw(b"\xff" * 7 + b"junk")
    bare(n, w.getvalue(), [("os", "system")], trigger=None, malformed=True)

    # --- real torch checkpoints with a payload ---
    g = torch.Generator().manual_seed(10)

    def benign():
        return collections.OrderedDict(
            [("model.w", torch.randn(4, 3, generator=g)), ("model.b", torch.randn(4, generator=g).half()),
             ("model.steps", torch.arange(5, dtype=torch.int64))])

    def torch_case(name, obj, tensors, dangerous, fmt="zip", protocol=2, ext=".ckpt", **kw):
        path = os.path.join(outdir, name + ext)
        save(obj, path, fmt, protocol)
        cases.append(Case(name, path, dangerous, kw.pop("trigger", "torch"), tensors=tensors, **kw))
        return path

    n = "torch-zip-system-after-tensors"
    sd = benign()
    torch_case(n, {**sd, "zz_callback": _Reduce(os.system, (sh(n),))}, sd, [("posix", "system")])

    n = "torch-zip-exec-before-tensors"
    sd = benign()
    obj = collections.OrderedDict([("callback", _Reduce(exec, (py(n),)))])
    obj.update(sd)
    # Protocol 2 spells builtins "__builtin__" (Python 2 names; the unpickler maps them back).
    torch_case(n, obj, sd, [("__builtin__", "exec")])

    n = "torch-zip-extra-entry-reduce"
    sd = benign()
    torch_case(n, {"state_dict": sd, "epoch": 3, "hook": _Reduce(os.system, (sh(n),))}, sd,
               [("posix", "system")])

    n = "torch-zip-p4-popen"
    sd = benign()
    torch_case(n, {**sd, "proc": _Reduce(subprocess.Popen, (["touch", canary_path(canary_dir, n)],))},
               sd, [("subprocess", "Popen")], protocol=4)

    n = "torch-legacy-system"
    sd = benign()
    torch_case(n, {**sd, "payload": _Reduce(os.system, (sh(n),))}, sd, [("posix", "system")],
               fmt="legacy", ext=".pt")

    n = "torch-zip-nested-bytes-p4"
    sd = benign()
    torch_case(n, {**sd, "blob": inner(n)}, sd, [], protocol=4, trigger=None, verdict="not-safe")

    n = "torch-zip-nested-bytes-p2"
    sd = benign()
    torch_case(n, {**sd, "blob": inner(n)}, sd, [], protocol=2, trigger=None, verdict="not-safe",
               note="protocol 2 stores bytes as _codecs.encode(str, 'latin1')")

    # A normal torch zip plus archive/extra.pkl running os.system (torch.load never reads it).
    n = "torch-zip-extra-pkl-entry"
    sd = benign()
    with tempfile.TemporaryDirectory() as tmp:
        src = save(sd, os.path.join(tmp, "archive.ckpt"))
        prefix = zip_prefix(src)
        path = os.path.join(outdir, n + ".ckpt")
        extra_name = f"{prefix}/extra.pkl"
        rewrite_zip(src, path, add=[(extra_name, inner(n))], add_after=f"{prefix}/data.pkl")
    cases.append(Case(n, path, [("os", "system")], "entry:" + extra_name, tensors=sd,
                      extra={"entry": extra_name}))

    # A torch zip whose data.pkl we wrote ourselves: the tensors, then builtins.eval.
    n = "torch-zip-handmade-eval"
    w_t = torch.randn(3, 4, generator=g)
    ids = torch.arange(5, dtype=torch.int64) - 2
    w = PickleWriter(2)
    w.empty_dict(); w.mark()
    w.str_("w"); w.tensor("0", torch.float32, 12, 0, (3, 4), (4, 1))
    w.str_("w_t"); w.tensor("0", torch.float32, 12, 0, (4, 3), (1, 4))
    w.str_("ids"); w.tensor("1", torch.int64, 5, 0, (5,), (1,))
    w.str_("ids_tail"); w.tensor("1", torch.int64, 5, 2, (3,), (1,))
    w.str_("payload"); _call1(w, "builtins", "eval", py(n))
    w.setitems(); w.stop()
    path = os.path.join(outdir, n + ".ckpt")
    handmade_torch_zip(path, w.getvalue(), {"0": tensor_bytes(w_t), "1": tensor_bytes(ids)})
    cases.append(Case(n, path, [("builtins", "eval")], "torch",
                      tensors={"w": w_t, "w_t": w_t.t(), "ids": ids, "ids_tail": ids[2:]}))

    # A real torch zip whose data.pkl is replaced by a bare os.system pickle.
    n = "torch-zip-datapkl-replaced"
    with tempfile.TemporaryDirectory() as tmp:
        src = save(benign(), os.path.join(tmp, "archive.ckpt"))
        prefix = zip_prefix(src)
        path = os.path.join(outdir, n + ".ckpt")
        rewrite_zip(src, path, replace={f"{prefix}/data.pkl": inner(n)})
    cases.append(Case(n, path, [("os", "system")], "torch"))
    return cases


def safe_controls(outdir, seed=11):
    """{name: (path, tensors)} of files scan must call safe."""
    os.makedirs(outdir, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    out = {}
    sd = collections.OrderedDict(a=torch.randn(3, 4, generator=g), b=torch.arange(6).view(2, 3),
                                 c=torch.randn(5, generator=g).to(torch.bfloat16), d=torch.tensor(True))
    out["safe-zip"] = (save(sd, os.path.join(outdir, "safe-zip.ckpt")), sd)
    out["safe-zip-p4"] = (save(sd, os.path.join(outdir, "safe-zip-p4.ckpt"), protocol=4), sd)
    out["safe-legacy"] = (save(sd, os.path.join(outdir, "safe-legacy.pt"), "legacy"), sd)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    osd = net.state_dict()  # an OrderedDict carrying a _metadata attribute
    out["safe-ordereddict"] = (save(osd, os.path.join(outdir, "safe-ordereddict.pt")), dict(osd))
    params = {"p": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
              "frozen": torch.nn.Parameter(torch.randn(3, generator=g), requires_grad=False)}
    out["safe-parameter"] = (save(params, os.path.join(outdir, "safe-parameter.pt")),
                             {k: v.detach() for k, v in params.items()})
    plain = {"state_dict": sd, "epoch": 3, "lr": 0.1, "name": "run", "list": [1, 2.0, "x"],
             "tuple": (1, "a"), "none": None, "flag": True, "big": 1 << 70}
    out["safe-plain-values"] = (save(plain, os.path.join(outdir, "safe-plain-values.ckpt")), sd)
    return out


# --- manual use ---------------------------------------------------------------------------------------

def verify_payloads(outdir, timeout=30):
    """Proves that each malicious file WOULD run its payload under plain Python: one
    subprocess per file (cwd a throwaway temp dir) loads it the way its `trigger` says and the
    canary must appear. Files whose trigger is None must NOT create their canary. Returns
    [(name, ok, detail)]."""
    cases = malicious_corpus(outdir)
    results = []
    for c in cases:
        canary = canary_path(outdir, c.name)
        if os.path.exists(canary):
            os.remove(canary)
        if c.trigger is None and zipfile.is_zipfile(c.path):
            code = ("import torch\ntry:\n    torch.load(%r)\n"
                    "except Exception as e:\n    print('load failed:', e)\n" % c.path)
        elif c.trigger is None:
            code = ("import pickle\ntry:\n    pickle.loads(open(%r, 'rb').read())\n"
                    "except Exception as e:\n    print('load failed:', e)\n" % c.path)
        elif c.trigger == "pickle":
            code = ("import pickle\ntry:\n    pickle.loads(open(%r, 'rb').read())\n"
                    "except Exception as e:\n    print('load failed after payload?', e)\n" % c.path)
        elif c.trigger == "torch":
            code = ("import torch\ntry:\n    torch.load(%r)\n"
                    "except Exception as e:\n    print('load failed after payload?', e)\n" % c.path)
        else:
            entry = c.trigger.split(":", 1)[1]
            code = ("import pickle, zipfile\npickle.loads(zipfile.ZipFile(%r).read(%r))\n"
                    % (c.path, entry))
        code = (c.setup + "\n" if c.setup else "") + code
        with tempfile.TemporaryDirectory() as cwd:
            p = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                               text=True, timeout=timeout)
            deadline = time.time() + 5  # Popen payloads run asynchronously
            while c.trigger is not None and not os.path.exists(canary) and time.time() < deadline:
                time.sleep(0.05)
            stray = os.listdir(cwd)
        ran = os.path.exists(canary)
        ok = ran == (c.trigger is not None) and not stray
        results.append((c.name, ok, f"trigger={c.trigger} ran={ran} stray={stray} "
                                    f"{(p.stdout + p.stderr).strip()[-200:]}"))
        if ran:
            os.remove(canary)
    return results


def write_all(outdir):
    """Every fixture into outdir (sub-folders benign/, broken/, malicious/)."""
    benign = os.path.join(outdir, "benign")
    os.makedirs(benign, exist_ok=True)
    written = []
    zoo = dtype_zoo()
    for fmt in ("zip", "legacy"):
        for proto in (2, 4):
            written.append(save(zoo, os.path.join(benign, f"dtypes-{fmt}-p{proto}.ckpt"), fmt, proto))
            written.append(save(view_zoo(), os.path.join(benign, f"views-{fmt}-p{proto}.ckpt"), fmt, proto))
    for key in NESTED_WRAPPERS:
        written.append(save({key: small_state_dict()}, os.path.join(benign, f"wrapped-{key}.ckpt")))
    written.append(save(nested_checkpoint()[0], os.path.join(benign, "nested.ckpt")))
    written.append(save({"state_dict": sd15_subset(), "global_step": 470000},
                        os.path.join(benign, "sd15-subset.ckpt")))
    big = os.path.join(benign, "big-endian.ckpt")
    big_endian_zip(big)
    written.append(big)
    light = os.path.join(benign, "lightning.ckpt")
    lightning_checkpoint(light)
    written.append(light)
    written += [p for p, _ in safe_controls(benign).values()]
    ctl = os.path.join(benign, "handmade-control.ckpt")
    handmade_control(ctl)
    written.append(ctl)
    written += list(broken_files(os.path.join(outdir, "broken")).values())
    written += [c.path for c in malicious_corpus(os.path.join(outdir, "malicious"))]
    return written


def main(argv):
    if len(argv) == 3 and argv[1] == "--verify-payloads":
        results = verify_payloads(argv[2])
        for name, ok, detail in results:
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return 0 if all(ok for _, ok, _ in results) else 1
    if len(argv) != 2 or argv[1].startswith("-"):
        print(__doc__)
        return 2
    for path in write_all(argv[1]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
