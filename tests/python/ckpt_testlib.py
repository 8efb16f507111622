"""Shared helpers for the Python tests: run the ckptkit binary, temp dirs, and an independent
safetensors reader/writer written from the format specification (not from ckptkit's code)."""
import json
import os
import struct
import subprocess
import tempfile
import unittest

BIN = os.environ.get("CKPTKIT_BIN", "ckptkit")
# The published layouts (copies of ../shared/arch/*.tsv): every tensor's name, dtype, shape.
LAYOUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "data", "layouts")


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def layout_table(layout):
    """[(name, dtype, shape)] of a published layout (data/layouts/LAYOUT.tsv), in file order."""
    rows = []
    with open(os.path.join(LAYOUTS, layout + ".tsv"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                name, dtype, dims = line.split("\t")
                rows.append((name, dtype, [int(d) for d in dims.split(",")] if dims else []))
    return rows

# safetensors dtype name -> (numpy dtype string, itemsize); F8 types as raw uint8.
NP_DTYPES = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1),
    "U64": ("<u8", 8), "U32": ("<u4", 4), "U16": ("<u2", 2), "U8": ("u1", 1),
    "BOOL": ("u1", 1), "F8_E4M3": ("u1", 1), "F8_E5M2": ("u1", 1),
}


def run(*args, check=True, env=None):
    """Runs ckptkit with args; returns CompletedProcess (text). Raises if check and rc != 0."""
    p = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"ckptkit {' '.join(map(str, args))} -> {p.returncode}\n{p.stderr}")
    return p


def read_safetensors(path):
    """Independent reader: returns (metadata dict, {name: (dtype, shape, raw bytes)}, header)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        tensors[name] = (info["dtype"], list(info["shape"]), data[base + b: base + e])
    return meta, tensors, data[8:8 + n]


def write_safetensors(path, tensors, metadata=None):
    """Independent writer: tensors is a list of (name, dtype, shape, raw bytes), written in the
    given order."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    off = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, raw in tensors:
            f.write(raw)


class TempDirTest(unittest.TestCase):
    def setUp(self):
        root = os.environ.get("CKPTKIT_TEST_TMP")
        if root:
            os.makedirs(root, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(dir=root)
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp, name)


def read_safetensors_header(path):
    """Reads only the header (for sparse or very large files). Returns a dict with
    "n" (header length), "raw" (the N header bytes), "metadata" (dict), "entries" (list of
    (name, dtype, shape, [begin, end]) in the order the header lists them) and "file_size"."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
    pairs = json.loads(raw.decode("utf-8"), object_pairs_hook=list)
    meta, entries = {}, []
    for key, value in pairs:
        if key == "__metadata__":
            meta = dict(value)
            continue
        info = dict(value)
        entries.append((key, info["dtype"], list(info["shape"]), list(info["data_offsets"])))
    return {"n": n, "raw": raw, "metadata": meta, "entries": entries,
            "file_size": os.path.getsize(path)}


def write_safetensors_custom(path, tensors, metadata=None, pad=True, ensure_ascii=True,
                             separators=(",", ":"), metadata_last=False):
    """Like write_safetensors, with knobs for the JSON a foreign writer might produce: no space
    padding, raw UTF-8 instead of \\u escapes, whitespace between tokens, __metadata__ placed
    after the tensors instead of first."""
    header = {}
    if metadata is not None and not metadata_last:
        header["__metadata__"] = metadata
    off = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    if metadata is not None and metadata_last:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=separators, ensure_ascii=ensure_ascii).encode("utf-8")
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, raw in tensors:
            f.write(raw)


def write_sparse_safetensors(path, rows, data, metadata=None):
    """A safetensors file of `rows` [(name, dtype, shape)], laid out in that order, whose data
    section is a hole except `data` {name: bytes}, written at the start of each named tensor (a
    prefix of it, or all of it). Written by hand from the format specification."""
    header, off, where = {}, 0, {}
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape in rows:
        size = numel(shape) * NP_DTYPES[dtype][1]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + size]}
        where[name] = off
        off += size
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        f.truncate(8 + len(h) + off)
        for name, raw in data.items():
            f.seek(8 + len(h) + where[name])
            f.write(raw)
    return path
