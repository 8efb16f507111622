"""GGUF through ckptkit.load / safe_open: every block type dequantized bit for bit as ggml's own
dequantize_row_<type> (libggml-base.so through ctypes, tests/python/ggml_oracle.py), casts to
F16/BF16 as torch casts the F32 values, raw block bytes zero-copy, errors."""
import ctypes
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggml_oracle  # noqa: E402
from test_gguf_format import GT_BY_NAME, write_gguf  # noqa: E402

import ckptkit  # noqa: E402

BLOCK_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
               "IQ4_NL", "IQ4_XS"]
BLOCK = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
         "Q8_0": (32, 34), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
         "Q5_K": (256, 176), "Q6_K": (256, 210), "IQ4_NL": (32, 18), "IQ4_XS": (256, 136)}
ROWS, COLS = 3, 512  # torch shape; ne = [COLS, ROWS]


def random_blocks(rng, name, numel):
    """Random block bytes whose F16 scales are finite (NaN scales make NaN payloads that say
    nothing about the dequantizer)."""
    block, size = BLOCK[name]
    raw = rng.integers(0, 256, numel // block * size, dtype=np.uint8)
    # Any 16-bit field may be a scale: clear the top exponent bit of every odd byte, which keeps
    # every F16 field below 2.0 (and the quants random).
    raw[1::2] &= 0x3F
    return raw.tobytes()


def ggml_dequantize(name, data, numel):
    lib = ggml_oracle.lib()
    out = np.empty(numel, np.float32)
    src = ctypes.create_string_buffer(data, len(data))
    getattr(lib, f"dequantize_row_{ggml_oracle_type(name)}")(
        ctypes.cast(src, ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), numel)
    return out


def ggml_oracle_type(name):
    return name.lower().replace("_k", "_K")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    rng = np.random.default_rng(16)
    path = str(tmp_path_factory.mktemp("pymodule_gguf") / "model.gguf")
    numel = ROWS * COLS
    tensors, raw = [], {}
    for name in BLOCK_TYPES:
        data = random_blocks(rng, name, numel)
        raw[name] = data
        tensors.append(dict(name=f"w.{name}", type=GT_BY_NAME[name], ne=[COLS, ROWS], data=data))
    f16 = rng.standard_normal((ROWS, COLS)).astype(np.float16)
    f32 = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    tensors.append(dict(name="plain.f16", type=GT_BY_NAME["F16"], ne=[COLS, ROWS],
                        data=f16.tobytes()))
    tensors.append(dict(name="plain.f32", type=GT_BY_NAME["F32"], ne=[COLS, ROWS],
                        data=f32.tobytes()))
    write_gguf(path, [("general.architecture", "str", "flux")], tensors)
    return path, raw, {"plain.f16": f16, "plain.f32": f32}


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_dequantized_to_f32_equals_ggml(gguf, framework):
    path, raw, plain = gguf
    sd = ckptkit.load(path, framework=framework)
    for name, data in raw.items():
        got = sd[f"w.{name}"]
        got = got.numpy() if framework == "pt" else got
        assert got.dtype == np.float32 and got.shape == (ROWS, COLS), name
        ref = ggml_dequantize(name, data, ROWS * COLS).reshape(ROWS, COLS)
        assert np.array_equal(bits(got), bits(ref)), name
    # Plain tensors keep their dtype and view the file (dtype=None).
    for name, ref in plain.items():
        got = sd[name].numpy() if framework == "pt" else sd[name]
        assert got.dtype == ref.dtype and np.array_equal(got, ref)


@pytest.mark.parametrize("dtype,tdtype", [("f16", torch.float16), ("bf16", torch.bfloat16)])
def test_dequantized_to_16_bits_as_torch_casts(gguf, dtype, tdtype):
    path, raw, plain = gguf
    sd = ckptkit.load(path, framework="pt", dtype=dtype)
    for name, data in raw.items():
        ref = torch.from_numpy(ggml_dequantize(name, data, ROWS * COLS).reshape(ROWS, COLS))
        got = sd[f"w.{name}"]
        assert got.dtype == tdtype
        assert torch.equal(got.view(torch.int16), ref.to(tdtype).view(torch.int16)), name
    for name, ref in plain.items():  # the file's float tensors are cast too
        got = sd[name]
        assert got.dtype == tdtype
        want = torch.from_numpy(ref).to(tdtype)
        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), name


def test_numpy_bf16_names_framework_pt(gguf):
    with pytest.raises(ckptkit.Error, match='framework="pt"'):
        ckptkit.load(gguf[0], framework="np", dtype="bf16")


def test_raw_blocks_are_zero_copy_views(gguf):
    path, raw, _ = gguf
    sd = ckptkit.load(path, raw=True)
    maps = open("/proc/self/maps").read()
    for name, data in raw.items():
        a = sd[f"w.{name}"]
        assert a.dtype == np.uint8 and a.ndim == 1 and a.tobytes() == data
        addr = a.__array_interface__["data"][0]
        assert any(int(lo, 16) <= addr < int(hi, 16) and line.rstrip().endswith(path)
                   for line in maps.splitlines()
                   for lo, hi in [line.split()[0].split("-")]), name
    t = ckptkit.load(path, framework="pt", raw=True)["w.Q8_0"]
    assert t.dtype == torch.uint8 and bytes(t.numpy()) == raw["Q8_0"]


def test_safe_open_gguf(gguf):
    path, raw, _ = gguf
    with ckptkit.safe_open(path, framework="np", dtype="f16") as f:
        assert set(f.keys()) == {f"w.{n}" for n in raw} | {"plain.f16", "plain.f32"}
        q = f.get_tensor("w.Q4_K")
        ref = ggml_dequantize("Q4_K", raw["Q4_K"], ROWS * COLS).reshape(ROWS, COLS)
        assert q.dtype == np.float16
        assert np.array_equal(bits(q), bits(torch.from_numpy(ref).half().numpy()))
        assert f.get_slice("w.Q8_0")[1:, :8].shape == (2, 8)


def test_dtype_and_raw_are_for_gguf_only(tmp_path):
    import ckpt_testlib as tl
    st = str(tmp_path / "x.safetensors")
    tl.write_safetensors(st, [("x", "F32", [2], np.zeros(2, np.float32).tobytes())])
    with pytest.raises(ValueError, match="GGUF"):
        ckptkit.load(st, dtype="f16")
    with pytest.raises(TypeError, match="dtype"):
        ckptkit.load(st, dtype=16)
    with pytest.raises(TypeError, match="raw"):
        ckptkit.load(st, raw=1)
    with pytest.raises(ValueError, match="dtype"):
        ckptkit.load(st, dtype="q4_0")


def test_truncated_gguf_is_format_error(gguf, tmp_path):
    data = open(gguf[0], "rb").read()
    bad = str(tmp_path / "bad.gguf")
    with open(bad, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ckptkit.FormatError) as e:
        ckptkit.load(bad)
    assert e.value.path == bad and isinstance(e.value.offset, int)
