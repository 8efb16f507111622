"""ckptkit's GGUF reader and writer against real ggml (gguf_init_from_file) and an independent
GGUF writer written here from the format specification (ggml docs/gguf.md).

* files written by ckptkit (ckptkit_gguf_tool write) open in ggml with the same names, types,
  ne, offsets, data offset, key-value pairs and tensor bytes;
* files written by the writer below read identically in ckptkit (ckptkit_gguf_tool dump);
* corrupt files that ggml refuses, ckptkit refuses too (exit 2, a message naming the offset).

The oracle is ggml's libggml-base.so (CKPTKIT_GGML_LIB) through ctypes; the tool is in
CKPTKIT_TOOLS. A missing oracle is a failure, not a skip.
"""
import ctypes
import json
import os
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggml_oracle
from ckpt_testlib import TempDirTest  # noqa: E402

TOOLS = os.environ.get("CKPTKIT_TOOLS", "")

# GGUF value types: name -> (id, struct format)
VT = {"u8": (0, "<B"), "i8": (1, "<b"), "u16": (2, "<H"), "i16": (3, "<h"), "u32": (4, "<I"),
      "i32": (5, "<i"), "f32": (6, "<f"), "bool": (7, "<?"), "str": (8, None), "arr": (9, None),
      "u64": (10, "<Q"), "i64": (11, "<q"), "f64": (12, "<d")}
VT_NAME = {v[0]: k for k, v in VT.items()}
# ggml type id -> (name as ckptkit spells it, block elements, block bytes)
GT = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 2: ("Q4_0", 32, 18),
      3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
      10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
      13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 20: ("IQ4_NL", 32, 18),
      23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4),
      27: ("I64", 1, 8), 28: ("F64", 1, 8)}
GT_BY_NAME = {v[0]: k for k, v in GT.items()}


def nbytes_of(type_id, ne):
    _, block, size = GT[type_id]
    n = 1
    for d in ne:
        n *= d
    return n // block * size


def pad(n, a):
    return (n + a - 1) // a * a


# --- an independent GGUF writer ---------------------------------------------------------------

def g_str(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def g_value(typ, v):
    if typ == "str":
        return g_str(v)
    return struct.pack(VT[typ][1], v)


def kv_bytes(key, typ, value, elem=None):
    out = g_str(key) + struct.pack("<I", VT[typ][0])
    if typ == "arr":
        out += struct.pack("<IQ", VT[elem][0], len(value))
        for v in value:
            out += g_value(elem, v)
    else:
        out += g_value(typ, value)
    return out


def write_gguf(path, kvs, tensors, alignment=32, version=3, magic=b"GGUF", raw_kvs=(),
               n_tensors=None, n_kv=None, truncate=None, endian="<"):
    """kvs: [(key, type, value[, elem])]; tensors: [dict(name, type, ne, data[, offset,
    n_dims])]. Data packed in order, each padded to the alignment, unless a tensor gives its
    offset. Returns the tensors' offsets and the data section's start."""
    body = b"".join(kv_bytes(*kv) for kv in kvs) + b"".join(raw_kvs)
    infos = b""
    offsets = []
    cur = 0
    for t in tensors:
        off = t.get("offset", cur)
        offsets.append(off)
        cur = pad(max(cur, off + len(t["data"])), alignment)
        ne = t["ne"]
        infos += g_str(t["name"]) + struct.pack("<I", t.get("n_dims", len(ne)))
        infos += b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", t["type"], off)
    head = magic + struct.pack(endian + "I", version)
    head += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors,
                        len(kvs) + len(raw_kvs) if n_kv is None else n_kv)
    header = head + body + infos
    data_start = pad(len(header), alignment) if tensors else len(header)
    out = bytearray(header + b"\0" * (data_start - len(header)))
    size = data_start + (max(o + pad(len(t["data"]), alignment)
                             for o, t in zip(offsets, tensors)) if tensors else 0)
    out += b"\0" * (size - len(out))
    for o, t in zip(offsets, tensors):
        out[data_start + o:data_start + o + len(t["data"])] = t["data"]
    if truncate is not None:
        out = out[:truncate]
    with open(path, "wb") as f:
        f.write(out)
    return offsets, data_start


# --- ggml through ctypes ----------------------------------------------------------------------

InitParams = ggml_oracle.GgufInitParams


def ggml():
    return ggml_oracle.lib()


def ggml_read(path):
    """Everything ggml sees in a file (loading the data too), or None when it refuses it."""
    lib = ggml()
    mem = ctypes.c_void_p()
    ctx = lib.gguf_init_from_file(path.encode(), InitParams(False, ctypes.pointer(mem)))
    if not ctx:
        return None
    try:
        out = {"version": lib.gguf_get_version(ctx), "alignment": lib.gguf_get_alignment(ctx),
               "data_offset": lib.gguf_get_data_offset(ctx), "kv": [], "tensors": []}
        for i in range(lib.gguf_get_n_kv(ctx)):
            key = lib.gguf_get_key(ctx, i).decode()
            typ = VT_NAME[lib.gguf_get_kv_type(ctx, i)]
            if typ == "arr":
                elem = VT_NAME[lib.gguf_get_arr_type(ctx, i)]
                n = lib.gguf_get_arr_n(ctx, i)
                if elem == "str":
                    value = [lib.gguf_get_arr_str(ctx, i, j).decode() for j in range(n)]
                else:
                    fmt = VT[elem][1]
                    size = struct.calcsize(fmt)
                    raw = ctypes.string_at(lib.gguf_get_arr_data(ctx, i), n * size) if n else b""
                    value = [struct.unpack_from(fmt, raw, j * size)[0] for j in range(n)]
            elif typ == "str":
                elem, value = "str", lib.gguf_get_val_str(ctx, i).decode()
            else:
                elem = typ
                fmt = VT[typ][1]
                raw = ctypes.string_at(lib.gguf_get_val_data(ctx, i), struct.calcsize(fmt))
                value = struct.unpack(fmt, raw)[0]
            out["kv"].append({"key": key, "type": typ, "elem": elem, "value": value})
        for i in range(lib.gguf_get_n_tensors(ctx)):
            name = lib.gguf_get_tensor_name(ctx, i)
            t = lib.ggml_get_tensor(mem, name)
            # struct ggml_tensor starts {enum ggml_type type; ggml_backend_buffer* buffer;
            # int64_t ne[4]; ...}
            ne = list(struct.unpack_from("<4q", ctypes.string_at(t + 16, 32)))
            nb = lib.ggml_nbytes(t)
            out["tensors"].append({
                "name": name.decode(), "type": lib.gguf_get_tensor_type(ctx, i), "ne": ne,
                "offset": lib.gguf_get_tensor_offset(ctx, i),
                "size": lib.gguf_get_tensor_size(ctx, i),
                "data": ctypes.string_at(lib.ggml_get_data(t), nb)})
        return out
    finally:
        lib.gguf_free(ctx)
        if mem:
            lib.ggml_free(mem)


def tool(*args, check=True):
    exe = os.path.join(TOOLS, "ckptkit_gguf_tool")
    if not os.path.isfile(exe):
        raise AssertionError(f"ckptkit_gguf_tool not found in CKPTKIT_TOOLS={TOOLS!r}")
    p = subprocess.run([exe, *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"ckptkit_gguf_tool {args} -> {p.returncode}\n{p.stderr}")
    return p


def ck_dump(path):
    return json.loads(tool("dump", path).stdout)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same_value(elem, a, b):
    if elem in ("f32", "f64") and a != a:  # nan
        return b != b or b == "nan"
    return a == b


# A spread of key-value pairs: every scalar type, strings, arrays of each kind.
KVS = [
    ("general.architecture", "str", "flux"),
    ("t.u8", "u8", 250), ("t.i8", "i8", -7), ("t.u16", "u16", 65535), ("t.i16", "i16", -32768),
    ("t.u32", "u32", 4294967295), ("t.i32", "i32", -123456789), ("t.f32", "f32", f32(0.1)),
    ("t.bool", "bool", True), ("t.u64", "u64", 2**64 - 1), ("t.i64", "i64", -2**63),
    ("t.f64", "f64", 1e-300), ("t.str_utf8", "str", "Größe ✓"),
    ("t.arr_i32", "arr", [3, -1, 2**31 - 1], "i32"),
    ("t.arr_str", "arr", ["a", "", "q\"uote"], "str"),
    ("t.arr_f32", "arr", [f32(1.5), f32(-2.25)], "f32"),
    ("t.arr_bool", "arr", [True, False, True], "bool"),
    ("t.arr_u64", "arr", [0, 2**63], "u64"),
    ("t.arr_empty", "arr", [], "u8"),
]

# (name, ggml type name, torch shape)
TENSORS = [
    ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", "F16", [320, 320, 3, 3]),
    ("double_blocks.0.img_attn.qkv.weight", "Q8_0", [96, 64]),
    ("lin.q4k", "Q4_K", [3, 512]),
    ("lin.q6k", "Q6_K", [2, 256]),
    ("lin.q4_0", "Q4_0", [5, 32]),
    ("lin.q5_1", "Q5_1", [64]),
    ("iq4nl", "IQ4_NL", [1, 1, 64]),
    ("iq4xs", "IQ4_XS", [256]),
    ("bias", "F32", [320]),
    ("bf16", "BF16", [7, 3]),
    ("ids", "I32", [1, 77]),
    ("f64", "F64", [2, 2, 2, 2]),
    ("logit_scale", "F32", []),  # a 0-d torch scalar: n_dims 0, which ggml accepts
]


def spec_kv(kv):
    d = {"key": kv[0], "type": kv[1], "value": kv[2]}
    if kv[1] == "arr":
        d["elem"] = kv[3]
    return d


class GgufAgainstGgml(TempDirTest):
    def write_with_ckptkit(self, alignment, tensors=TENSORS, kvs=KVS, name="ck.gguf"):
        spec = {"alignment": alignment, "kv": [spec_kv(k) for k in kvs], "tensors": []}
        datas = []
        for i, (n, t, shape) in enumerate(tensors):
            ne = shape[::-1]
            nbytes = nbytes_of(GT_BY_NAME[t], ne)
            data = bytes((i * 31 + j * 7) & 0xFF for j in range(nbytes))
            datas.append(data)
            spec["tensors"].append({"name": n, "dtype": t, "shape": shape, "data_hex": data.hex()})
        spec_path = self.path("spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        out = self.path(name)
        tool("write", spec_path, out)
        return out, datas

    def test_ckptkit_files_open_in_ggml(self):
        for alignment in (32, 64, 8):
            with self.subTest(alignment=alignment):
                path, datas = self.write_with_ckptkit(alignment)
                g = ggml_read(path)
                self.assertIsNotNone(g, "ggml refused a file ckptkit wrote")
                c = ck_dump(path)
                self.assertEqual(g["version"], 3)
                self.assertEqual(g["alignment"], alignment)
                self.assertEqual(g["data_offset"], c["data_offset"])
                self.assertEqual(g["data_offset"] % alignment, 0)
                want_kv = list(KVS) + ([("general.alignment", "u32", alignment)]
                                       if alignment != 32 else [])
                self.assertEqual([k["key"] for k in g["kv"]], [k[0] for k in want_kv])
                for got, kv in zip(g["kv"], want_kv):
                    self.assertEqual(got["type"], kv[1], kv[0])
                    if kv[1] == "arr":
                        self.assertEqual(got["elem"], kv[3], kv[0])
                    self.assertEqual(got["value"], kv[2], kv[0])
                self.assertEqual(len(g["tensors"]), len(TENSORS))
                for gt, ct, (name, t, shape), data in zip(g["tensors"], c["tensors"], TENSORS,
                                                          datas):
                    self.assertEqual(gt["name"], name)
                    self.assertEqual(gt["type"], GT_BY_NAME[t])
                    self.assertEqual(gt["ne"], shape[::-1] + [1] * (4 - len(shape)))
                    self.assertEqual(gt["offset"], ct["offset"])
                    self.assertEqual(gt["size"], ct["nbytes"])
                    self.assertEqual(gt["data"], data, name)
                    self.assertEqual(ct["shape"], shape)
                    self.assertEqual(ct["n_dims"], len(shape))

    def test_reshaped_tensor_with_orig_shape(self):
        # ComfyUI's SD1/SDXL trick: a [320, 4, 3, 3] conv stored as rows of 256 (ne [256, 45]).
        spec = {"kv": [{"key": "comfy.gguf.orig_shape.conv", "type": "arr", "elem": "i32",
                        "value": [320, 4, 3, 3]}],
                "tensors": [{"name": "conv", "dtype": "Q4_K", "shape": [320, 4, 3, 3],
                             "ne": [256, 45]}]}
        spec_path = self.path("spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        path = self.path("r.gguf")
        tool("write", spec_path, path)
        g = ggml_read(path)
        self.assertIsNotNone(g)
        self.assertEqual(g["tensors"][0]["ne"], [256, 45, 1, 1])
        c = ck_dump(path)
        self.assertEqual(c["tensors"][0]["shape"], [320, 4, 3, 3])
        self.assertEqual(c["tensors"][0]["ne"], [256, 45, 1, 1])
        self.assertTrue(c["tensors"][0]["orig_shape"])

    def test_independent_writer_files_read_identically(self):
        for alignment, version in ((32, 3), (16, 2), (256, 3)):
            with self.subTest(alignment=alignment, version=version):
                kvs = list(KVS)
                if alignment != 32:
                    kvs.append(("general.alignment", "u32", alignment))
                tensors = []
                for i, (name, t, shape) in enumerate(TENSORS):
                    ne = shape[::-1]
                    nb = nbytes_of(GT_BY_NAME[t], ne)
                    tensors.append({"name": name, "type": GT_BY_NAME[t], "ne": ne,
                                    "data": bytes((i + j) & 0xFF for j in range(nb))})
                path = self.path(f"py{alignment}.gguf")
                offsets, data_start = write_gguf(path, kvs, tensors, alignment, version)
                g = ggml_read(path)
                self.assertIsNotNone(g, "ggml refused the independent writer's file")
                c = ck_dump(path)
                self.assertEqual(c["version"], version)
                self.assertEqual(c["alignment"], alignment)
                self.assertEqual(c["data_offset"], data_start)
                self.assertEqual(c["data_offset"], g["data_offset"])
                self.assertTrue(c["ggml_packed"])
                self.assertEqual([k["key"] for k in c["kv"]], [k[0] for k in kvs])
                for got, kv in zip(c["kv"], kvs):
                    self.assertEqual(got["type"], kv[1], kv[0])
                    want = kv[2]
                    if kv[1] == "arr":
                        self.assertEqual(got["elem"], kv[3])
                        self.assertEqual(len(got["value"]), len(want))
                        for a, b in zip(got["value"], want):
                            self.assertTrue(same_value(kv[3], a, b), kv[0])
                    else:
                        self.assertTrue(same_value(kv[1], got["value"], want), kv[0])
                self.assertEqual(c["metadata"]["t.arr_i32"], "[3, -1, 2147483647]")
                self.assertEqual(c["metadata"]["t.bool"], "true")
                self.assertEqual(c["metadata"]["t.f32"], "0.1")
                for ct, t, off, gt in zip(c["tensors"], tensors, offsets, g["tensors"]):
                    self.assertEqual(ct["name"], t["name"])
                    self.assertEqual(ct["ggml_type"], t["type"])
                    self.assertEqual(ct["ne"], t["ne"] + [1] * (4 - len(t["ne"])))
                    self.assertEqual(ct["shape"], t["ne"][::-1])
                    self.assertEqual(ct["offset"], off)
                    self.assertEqual(ct["offset"], gt["offset"])
                    self.assertEqual(ct["nbytes"], len(t["data"]))
                    self.assertEqual(gt["data"], t["data"])

    def test_lenient_where_the_format_allows(self):
        # gguf-py writes whatever order and gaps it is given; ggml's reader insists on packed
        # data. ckptkit reads it and says it is not ggml-packed.
        data = bytes(range(64)) * 2
        tensors = [{"name": "a", "type": 0, "ne": [32], "data": data, "offset": 256},
                   {"name": "b", "type": 0, "ne": [32], "data": data, "offset": 0}]
        path = self.path("gaps.gguf")
        write_gguf(path, [], tensors)
        self.assertIsNone(ggml_read(path))
        c = ck_dump(path)
        self.assertFalse(c["ggml_packed"])
        self.assertEqual([t["offset"] for t in c["tensors"]], [256, 0])
        # A 100-byte name: stock ggml (GGML_MAX_NAME 64) refuses it, ComfyUI's and sd.cpp's
        # builds take it, and so does ckptkit (up to 256 bytes).
        path = self.path("long.gguf")
        write_gguf(path, [], [{"name": "n" * 100, "type": 0, "ne": [8], "data": b"\0" * 32}])
        self.assertIsNone(ggml_read(path))
        self.assertEqual(ck_dump(path)["tensors"][0]["name"], "n" * 100)

    def test_files_ggml_refuses_ckptkit_refuses(self):
        good_t = lambda **kw: dict({"name": "w", "type": 8, "ne": [64, 2], "data": b"\1" * 136},
                                   **kw)
        cases = {
            "bad_magic": dict(magic=b"GGML"),
            "version_1": dict(version=1),
            "version_4": dict(version=4),
            "big_endian": dict(version=3, endian=">"),
            "absurd_n_tensors": dict(n_tensors=2**40),
            "absurd_n_kv": dict(n_kv=2**62),
            "nested_array": dict(raw_kvs=[g_str("x") + struct.pack("<IIQ", 9, 9, 0)]),
            "duplicate_key": dict(kvs=[("k", "u8", 1), ("k", "u8", 2)]),
            "alignment_48": dict(kvs=[("general.alignment", "u32", 48)], alignment=48),
            "misaligned_offset": dict(tensors=[good_t(), good_t(name="v", offset=140)]),
            "overlap": dict(tensors=[good_t(), good_t(name="v", offset=128)]),
            "out_of_range": dict(tensors=[good_t(offset=4096)], truncate=4096),
            "unknown_type": dict(tensors=[good_t(type=200)]),
            "five_dims": dict(tensors=[good_t(ne=[64, 2, 1, 1, 1])]),
            "ne0_not_block": dict(tensors=[good_t(ne=[48, 2], data=b"\0" * 102)]),
            "duplicate_name": dict(tensors=[good_t(), good_t(offset=160)]),
            "name_300_bytes": dict(tensors=[good_t(name="x" * 300)]),
            "truncated_data": dict(truncate=-40),
            "truncated_header": dict(truncate=50),
            "string_past_end": dict(raw_kvs=[g_str("s") + struct.pack("<IQ", 8, 2**40)]),
            "array_past_end": dict(raw_kvs=[g_str("a") + struct.pack("<IIQ", 9, 4, 2**40)]),
            "unknown_value_type": dict(raw_kvs=[g_str("u") + struct.pack("<I", 77)]),
        }
        for name, kw in cases.items():
            with self.subTest(case=name):
                kw = dict(kw)
                kvs = kw.pop("kvs", [("general.architecture", "str", "sd1")])
                tensors = kw.pop("tensors", [good_t()])
                path = self.path(name + ".gguf")
                trunc = kw.pop("truncate", None)
                write_gguf(path, kvs, tensors, **kw)
                if trunc is not None:
                    with open(path, "rb") as f:
                        b = f.read()
                    with open(path, "wb") as f:
                        f.write(b[:trunc])
                self.assertIsNone(ggml_read(path), "ggml accepts this file: not a corrupt case")
                p = tool("dump", path, check=False)
                self.assertEqual(p.returncode, 2, p.stdout)
                self.assertIn(path, p.stderr)
                self.assertRegex(p.stderr, r":0x[0-9a-f]+: (corrupt|unsupported|limit)")


if __name__ == "__main__":
    unittest.main()
