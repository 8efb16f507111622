#!/usr/bin/python3
"""Python loaders timed by bench/run section q (issue 16). Each mode loads every tensor of a
file and then touches it: one 8-byte word of every 4 KiB page of its bytes is summed (a strided
view), so every page is faulted in or read, whoever maps or reads it.

  py_load.py ckptkit PATH [np|pt]   ckptkit.load(PATH, framework=...)
  py_load.py safe_open PATH         ckptkit.safe_open(PATH, framework="np") + get_tensor(k)
  py_load.py torch PATH             torch.load(PATH, map_location="cpu") (a .ckpt)
  py_load.py memmap PATH            a NumPy loader written from the safetensors specification:
                                    8-byte header length, JSON header, one np.memmap per tensor

Prints the tensors, the bytes and the pages touched, and two times inside the process: importing
the loader's library (torch, ckptkit; NumPy is imported before either clock starts) and the load
with its touches. With PYLOAD_TIMES set, also appends `mode<TAB>path<TAB>import_s<TAB>load_s` to
that file (bench/run's in-process rows).
"""
import json
import os
import struct
import sys
import time

import numpy as np

PAGE = 4096
ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
             "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
             "F8_E4M3": "u1", "F8_E5M2": "u1"}


def touch(a):
    """Sums one word of every page of array `a`'s bytes; returns (bytes, pages)."""
    b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    if b.size == 0:
        return 0, 0
    picked = b[::PAGE]
    int(np.add.reduce(picked, dtype=np.uint64))
    return b.size, picked.size


def as_numpy(t):
    import torch
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy()


def main():
    mode, path = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    n = nbytes = pages = 0
    if mode in ("ckptkit", "safe_open"):
        import ckptkit
    elif mode == "torch":
        import torch
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    if mode == "ckptkit":
        framework = sys.argv[3] if len(sys.argv) > 3 else "np"
        sd = ckptkit.load(path, framework=framework)
        for t in sd.values():
            b, p = touch(as_numpy(t) if framework == "pt" else t)
            n, nbytes, pages = n + 1, nbytes + b, pages + p
    elif mode == "safe_open":
        with ckptkit.safe_open(path, framework="np") as f:
            for k in f.keys():
                b, p = touch(f.get_tensor(k))
                n, nbytes, pages = n + 1, nbytes + b, pages + p
    elif mode == "torch":
        obj = torch.load(path, map_location="cpu")
        sd = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
        for t in sd.values():
            if torch.is_tensor(t):
                b, p = touch(as_numpy(t))
                n, nbytes, pages = n + 1, nbytes + b, pages + p
    elif mode == "memmap":
        with open(path, "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(hlen))
        base = 8 + hlen
        sd = {}  # kept, as a loader returns them (their mappings stay, as ckptkit.load's do)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            dt = np.dtype(ST_DTYPES[info["dtype"]])
            count = (end - begin) // dt.itemsize
            if count == 0:
                continue
            a = np.memmap(path, dtype=dt, mode="r", offset=base + begin, shape=(count,))
            sd[name] = a.reshape(info["shape"])
            b, p = touch(sd[name])
            n, nbytes, pages = n + 1, nbytes + b, pages + p
    else:
        raise SystemExit(f"unknown mode {mode}")
    t_load = time.perf_counter() - t0
    print(f"{mode}: {n} tensors, {nbytes} bytes, {pages} pages touched in {t_load:.4f} s "
          f"(import {t_import:.4f} s before it)")
    if os.environ.get("PYLOAD_TIMES"):
        with open(os.environ["PYLOAD_TIMES"], "a") as f:
            f.write(f"{mode}\t{path}\t{t_import:.6f}\t{t_load:.6f}\n")


if __name__ == "__main__":
    main()
