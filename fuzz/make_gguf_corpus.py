#!/usr/bin/env python3
"""Writes the seed corpus of the GGUF fuzzer (fuzz/corpus/gguf): small valid files of several
shapes, types and key-value kinds, and one file per reader rule broken (include/ckptkit/gguf.h
lists the rules). Deterministic; run from anywhere:

    /usr/bin/python3 fuzz/make_gguf_corpus.py

Files are named valid-*, edge-* (legal but unusual), bad-* (one rule broken) and foreign-*.
Stale files with those prefixes are removed; found-* files (fuzzer findings) are left alone."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")
OWNED_PREFIXES = ("valid-", "edge-", "bad-", "foreign-")
VT = {"u8": (0, "<B"), "i8": (1, "<b"), "u16": (2, "<H"), "i16": (3, "<h"), "u32": (4, "<I"),
      "i32": (5, "<i"), "f32": (6, "<f"), "bool": (7, "<?"), "str": (8, None), "arr": (9, None),
      "u64": (10, "<Q"), "i64": (11, "<q"), "f64": (12, "<d")}
# ggml type id -> (block elements, block bytes)
GT = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
      8: (32, 34), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
      14: (256, 210), 20: (32, 18), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
      27: (1, 8), 28: (1, 8)}


def pad(n, a):
    return (n + a - 1) // a * a


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key, typ, value, elem=None):
    out = gstr(key) + struct.pack("<I", VT[typ][0])
    if typ == "arr":
        out += struct.pack("<IQ", VT[elem][0], len(value))
        for v in value:
            out += gstr(v) if elem == "str" else struct.pack(VT[elem][1], v)
    elif typ == "str":
        out += gstr(value)
    else:
        out += struct.pack(VT[typ][1], value)
    return out


def nbytes(t, ne):
    n = 1
    for d in ne:
        n *= d
    block, size = GT[t]
    return n // block * size


def tensor(name, t, ne, offset=None, n_dims=None):
    return {"name": name, "type": t, "ne": ne, "offset": offset, "n_dims": n_dims}


def gguf(kvs=(), tensors=(), alignment=32, version=3, magic=b"GGUF", n_tensors=None,
         n_kv=None, cut=None, data_len=None):
    """kvs: raw key-value bytes. Tensors packed in order (each padded) unless given an offset;
    the data section holds the packed ones (at most 4 KiB) or data_len bytes."""
    infos = b""
    offsets = []
    cur = 0
    for t in tensors:
        off = cur if t["offset"] is None else t["offset"]
        offsets.append(off)
        if t["offset"] is None:
            size = nbytes(t["type"], t["ne"]) if t["type"] in GT else 32
            cur = pad(cur + size, alignment)
        infos += gstr(t["name"]) + struct.pack(
            "<I", len(t["ne"]) if t["n_dims"] is None else t["n_dims"])
        infos += b"".join(struct.pack("<Q", d) for d in t["ne"])
        infos += struct.pack("<IQ", t["type"], off)
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    out = head + b"".join(kvs) + infos
    if tensors:
        out += b"\0" * (pad(len(out), alignment) - len(out))
    out += bytes(i % 251 for i in range(min(cur, 4096) if data_len is None else data_len))
    return out[:cut] if cut is not None else out


def files():
    arch = kv("general.architecture", "str", "flux")
    qv = kv("general.quantization_version", "u32", 2)
    yield "valid-empty", gguf()
    yield "valid-kv-only", gguf([arch, qv])
    yield "valid-f32", gguf([arch], [tensor("w", 0, [4, 2])])
    yield "valid-f16-conv", gguf([arch], [tensor("conv.weight", 1, [3, 3, 4, 8])])
    yield "valid-q8_0", gguf([arch, qv], [tensor("q", 8, [64, 2]), tensor("b", 0, [2])])
    yield "valid-k-quants", gguf([arch, qv], [tensor("q2", 10, [256]), tensor("q3", 11, [256]),
                                              tensor("q4", 12, [256, 2]),
                                              tensor("q5", 13, [256]), tensor("q6", 14, [256])])
    yield "valid-legacy-quants", gguf([qv], [tensor("a", 2, [32]), tensor("b", 3, [32]),
                                             tensor("c", 6, [32]), tensor("d", 7, [32]),
                                             tensor("e", 20, [32]), tensor("f", 23, [256])])
    yield "valid-ints", gguf([], [tensor("i8", 24, [3]), tensor("i16", 25, [3]),
                                  tensor("i32", 26, [3]), tensor("i64", 27, [3]),
                                  tensor("f64", 28, [3]), tensor("bf16", 30, [5, 1, 1, 1])])
    every = [kv("t.u8", "u8", 1), kv("t.i8", "i8", -1), kv("t.u16", "u16", 2),
             kv("t.i16", "i16", -2), kv("t.u32", "u32", 3), kv("t.i32", "i32", -3),
             kv("t.f32", "f32", 0.5), kv("t.bool", "bool", True), kv("t.str", "str", "s"),
             kv("t.u64", "u64", 2**64 - 1), kv("t.i64", "i64", -2**63),
             kv("t.f64", "f64", float("nan")),
             kv("t.arr_i32", "arr", [1, 2], "i32"), kv("t.arr_str", "arr", ["a", ""], "str"),
             kv("t.arr_empty", "arr", [], "f64"), kv("t.arr_bool", "arr", [True], "bool")]
    yield "valid-every-kv-type", gguf(every, [tensor("w", 0, [1])])
    yield "valid-v2", gguf([arch], [tensor("w", 0, [8])], version=2)
    yield "valid-align-64", gguf([kv("general.alignment", "u32", 64)],
                                 [tensor("a", 0, [3]), tensor("b", 0, [5])], alignment=64)
    yield "valid-align-1", gguf([kv("general.alignment", "u32", 1)],
                                [tensor("a", 24, [3]), tensor("b", 24, [5])], alignment=1)
    yield "valid-orig-shape", gguf([kv("comfy.gguf.orig_shape.conv", "arr", [4, 8, 3, 3], "i32")],
                                   [tensor("conv", 0, [32, 9])])
    yield "valid-orig-shape-i64", gguf([kv("comfy.gguf.orig_shape.w", "arr", [2, 16], "i64")],
                                       [tensor("w", 0, [32])])
    yield "edge-scalar", gguf([], [tensor("s", 0, [])])
    yield "edge-gaps-reversed", gguf([], [tensor("a", 0, [8], offset=64),
                                          tensor("b", 0, [8], offset=0)], data_len=96)
    yield "edge-no-final-padding", gguf([], [tensor("a", 0, [3])])[:-20]
    yield "edge-orig-shape-unused", gguf([kv("comfy.gguf.orig_shape.none", "arr", [1], "i32")],
                                         [tensor("w", 0, [1])])

    base_t = [tensor("a", 0, [32, 2]), tensor("b", 8, [64])]
    yield "bad-magic", gguf([arch], base_t, magic=b"GGML")
    yield "bad-version-0", gguf([arch], base_t, version=0)
    yield "bad-version-1", gguf([arch], base_t, version=1)
    yield "bad-version-4", gguf([arch], base_t, version=4)
    yield "bad-big-endian", gguf([arch], base_t, version=0x03000000)
    yield "bad-n-tensors", gguf([arch], base_t, n_tensors=2**40)
    yield "bad-n-kv", gguf([arch], base_t, n_kv=2**63)
    yield "bad-nested-array", gguf([gstr("n") + struct.pack("<IIQ", 9, 9, 0)], base_t)
    yield "bad-duplicate-key", gguf([arch, arch], base_t)
    yield "bad-empty-key", gguf([kv("", "u8", 1)], base_t)
    yield "bad-value-type", gguf([gstr("t") + struct.pack("<I", 13)], base_t)
    yield "bad-string-length", gguf([gstr("s") + struct.pack("<IQ", 8, 2**63)], base_t)
    yield "bad-array-count", gguf([gstr("a") + struct.pack("<IIQ", 9, 10, 2**61)], base_t)
    yield "bad-alignment-48", gguf([kv("general.alignment", "u32", 48)], base_t, alignment=48)
    yield "bad-alignment-0", gguf([kv("general.alignment", "u32", 0)], base_t)
    yield "bad-alignment-type", gguf([kv("general.alignment", "u64", 32)], base_t)
    yield "bad-misaligned", gguf([], [tensor("a", 0, [32, 2]), tensor("b", 8, [64], offset=260)],
                                 data_len=352)
    yield "bad-overlap", gguf([], [tensor("a", 0, [32, 2]), tensor("b", 8, [64], offset=224)],
                              data_len=352)
    yield "bad-out-of-range", gguf([], [tensor("a", 0, [32, 2]), tensor("b", 8, [64],
                                                                        offset=2**20)])
    yield "bad-offset-overflow", gguf([], [tensor("b", 8, [64], offset=2**64 - 32)])
    yield "bad-unknown-type", gguf([], [tensor("a", 200, [32])])
    yield "bad-unsupported-type", gguf([], [tensor("a", 16, [256])])
    yield "bad-five-dims", gguf([], [tensor("a", 0, [2, 1, 1, 1, 1])])
    yield "bad-dims-huge", gguf([], [tensor("a", 0, [2], n_dims=2**31)])
    yield "bad-ne-zero", gguf([], [tensor("a", 0, [4, 0])])
    yield "bad-ne-negative", gguf([], [tensor("a", 0, [4, 2**63])])
    yield "bad-numel-overflow", gguf([], [tensor("a", 0, [2**32, 2**32])])
    yield "bad-bytes-overflow", gguf([], [tensor("a", 28, [2**31, 2**31])])
    yield "bad-block", gguf([], [tensor("a", 12, [320, 2])])
    yield "bad-name-long", gguf([], [tensor("n" * 300, 0, [1])])
    yield "bad-name-nul", gguf([], [tensor("a\0b", 0, [1])])
    yield "bad-duplicate-name", gguf([], [tensor("a", 0, [1]), tensor("a", 0, [1])])
    yield "bad-truncated-data", gguf([], base_t)[:-100]
    yield "bad-truncated-header", gguf([arch], base_t, cut=60)
    yield "bad-truncated-infos", gguf([arch], base_t, cut=110)
    yield "bad-data-start", gguf([arch], base_t, cut=150)
    yield "bad-orig-shape-mismatch", gguf([kv("comfy.gguf.orig_shape.w", "arr", [3, 3], "i32")],
                                          [tensor("w", 0, [32])])
    yield "bad-orig-shape-type", gguf([kv("comfy.gguf.orig_shape.w", "str", "[32]")],
                                      [tensor("w", 0, [32])])
    yield "bad-orig-shape-negative", gguf([kv("comfy.gguf.orig_shape.w", "arr", [-4, -8],
                                              "i32")], [tensor("w", 0, [32])])
    yield "foreign-safetensors", struct.pack("<Q", 2) + b"{}"
    yield "foreign-html", b"<!DOCTYPE html><html><body>Not Found</body></html>"
    yield "foreign-lfs", b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"
    yield "foreign-short", b"GG"


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        if name.startswith(OWNED_PREFIXES):
            os.remove(os.path.join(OUT, name))
    n = 0
    for name, data in files():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        n += 1
    print(f"wrote {n} files to {OUT}")


if __name__ == "__main__":
    main()
