#!/usr/bin/python3
"""The baseline for `ckptkit convert IN -o OUT --dtype f16`: the same job done the way a Python
tool does it with PyTorch.

Debian's python3-torch is 1.13, which has no safetensors loader (and the `safetensors` package
is not installed), so this script does what `safetensors.torch.load_file` + `.to()` +
`save_file` do, by hand:

  * parse the header (8-byte little-endian length + JSON) with struct/json;
  * map the file (mmap, as safetensors' safe_open does) and make each tensor with
    torch.frombuffer over the mapping — no copy until the cast;
  * `t.to(torch.float16)` for every floating-point tensor (integer/bool tensors kept, as
    ckptkit does), collected into a state dict like `{k: v.half() for k, v in sd.items()}`;
  * write a safetensors file: JSON header padded with spaces to a multiple of 8, then the
    tensors' bytes, to a temporary file beside OUT, then flush + os.fsync + os.replace — the
    same durability ckptkit gives its output by default.

--stream converts and writes one tensor at a time instead of building the whole converted
state dict first (less memory; not what most scripts do). --no-sync skips the fsync.
--compare OTHER checks, outside any timing, that OTHER (e.g. ckptkit's output) holds the same
tensors with the same bytes; exit status 3 when they differ.

Usage: torch_convert.py IN OUT [--dtype f16|bf16|f32] [--stream] [--no-sync]
       torch_convert.py --compare A B
"""
import argparse
import json
import mmap
import os
import struct
import sys
import warnings

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
TARGETS = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, 8 + n


def open_tensors(path):
    """Yields (name, tensor) in file order; tensors are views of a read-only mapping."""
    header, data_start = read_header(path)
    meta = header.pop("__metadata__", None)
    f = open(path, "rb")
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])

    def gen():
        with warnings.catch_warnings():
            # frombuffer warns that the mapping is read-only; nothing here writes to it.
            warnings.simplefilter("ignore", UserWarning)
            for name, e in entries:
                dt = DTYPES[e["dtype"]]
                begin, end = e["data_offsets"]
                shape = e["shape"]
                count = (end - begin) // torch.empty((), dtype=dt).element_size()
                if count == 0:
                    t = torch.empty(shape, dtype=dt)
                else:
                    t = torch.frombuffer(mm, dtype=dt, count=count,
                                         offset=data_start + begin).reshape(shape)
                yield name, t

    return meta, gen(), (f, mm)


def cast(t, target):
    return t.to(target) if t.is_floating_point() else t


def header_bytes(items, meta):
    """items: (name, dtype, shape) in data order."""
    h = {}
    if meta is not None:
        h["__metadata__"] = meta
    off = 0
    for name, dt, shape in items:
        n = 1
        for s in shape:
            n *= s
        size = n * torch.empty((), dtype=dt).element_size()
        h[name] = {"dtype": NAMES[dt], "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    js = json.dumps(h, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    return struct.pack("<Q", len(js)) + js


def write_tensor(f, t):
    if t.numel() == 0:
        return
    # Raw bytes without an extra copy: view as uint8 (bfloat16 has no NumPy type). A 0-dim
    # tensor cannot change element size in view(), so it is made 1-dim first.
    f.write(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))


def write_atomic(dst, sync, fill):
    """Writes dst through a temporary beside it: fill(f) writes the content, then flush, fsync
    (unless sync is false) and rename, the durability ckptkit gives its outputs."""
    tmp = dst + ".tmp-torch"
    try:
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_state_dict(f, sd, meta):
    """A safetensors file of the tensors of sd (name -> tensor), in sd's order."""
    f.write(header_bytes([(k, v.dtype, v.shape) for k, v in sd.items()], meta))
    for v in sd.values():
        write_tensor(f, v)


def convert(src, dst, target, stream, sync):
    meta, tensors, keep = open_tensors(src)

    def fill(f):
        if stream:
            hdr, _ = read_header(src)
            hdr.pop("__metadata__", None)
            plan = sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0])
            items = []
            for name, e in plan:
                dt = DTYPES[e["dtype"]]
                out_dt = target if dt.is_floating_point else dt
                items.append((name, out_dt, e["shape"]))
            f.write(header_bytes(items, meta))
            for _, t in tensors:
                write_tensor(f, cast(t, target))
        else:
            write_state_dict(f, {name: cast(t, target) for name, t in tensors}, meta)

    try:
        write_atomic(dst, sync, fill)
    finally:
        keep[1].close()
        keep[0].close()


def compare(a, b):
    _, ta, ka = open_tensors(a)
    _, tb, kb = open_tensors(b)
    da, db = dict(ta), dict(tb)
    bad = []
    if da.keys() != db.keys():
        bad.append(f"tensor names differ: {sorted(da.keys() ^ db.keys())[:5]}")
    for k in sorted(da.keys() & db.keys()):
        x, y = da[k], db[k]
        if x.dtype != y.dtype or tuple(x.shape) != tuple(y.shape):
            bad.append(f"{k}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}")
        elif x.numel() and not torch.equal(x.contiguous().reshape(-1).view(torch.uint8),
                                           y.contiguous().reshape(-1).view(torch.uint8)):
            bad.append(f"{k}: bytes differ")
    for m in (ka, kb):
        m[1].close()
        m[0].close()
    if bad:
        print(f"DIFFER: {len(bad)} tensors, e.g. " + "; ".join(bad[:3]), file=sys.stderr)
        return 3
    print(f"identical: {len(da)} tensors, same dtypes, shapes and bytes")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inp", metavar="IN")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--dtype", default="f16", choices=sorted(TARGETS))
    p.add_argument("--stream", action="store_true")
    p.add_argument("--no-sync", action="store_true")
    p.add_argument("--compare", action="store_true", help="compare IN and OUT instead")
    a = p.parse_args()
    if a.compare:
        return compare(a.inp, a.out)
    convert(a.inp, a.out, TARGETS[a.dtype], a.stream, not a.no_sync)
    return 0


if __name__ == "__main__":
    sys.exit(main())
