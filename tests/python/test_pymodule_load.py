"""ckptkit.load (the Python module) against torch.load and an independent safetensors reader:
every tensor equal, views and shared storages as torch builds them, zero-copy into a private
mapping, the mapping's lifetime, and errors for malformed and malicious files.

Run by ctest with pytest (PYTHONPATH names the build's python/ folder)."""
import collections
import gc
import hashlib
import os
import struct
import sys
import zipfile

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_testlib as tl  # noqa: E402
import torch_fixtures as tf  # noqa: E402

import ckptkit  # noqa: E402
from ckptkit import _native  # noqa: E402


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return str(tmp_path_factory.mktemp("pymodule_load"))


def raw(t):
    return tf.tensor_bytes(t)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def mapped_ranges(path):
    """[(start, end)] of this process's mappings of `path` (/proc/self/maps)."""
    real = os.path.realpath(path)
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip() == real:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    return out


def storage_classes(sd):
    """{name: index of its storage's equivalence class} (which tensors share a storage)."""
    ids, out = {}, {}
    for k, t in sd.items():
        if t.storage().size() == 0:
            continue  # empty storages have no address to compare (torch.load's are all null)
        ptr = t.storage().data_ptr()
        out[k] = ids.setdefault(ptr, len(ids))
    return out


def assert_same_as_torch(ours, ref):
    assert list(ours) == list(ref)
    for k, r in ref.items():
        t = ours[k]
        assert isinstance(t, torch.Tensor), k
        assert t.dtype == r.dtype, k
        assert t.shape == r.shape, k
        assert t.stride() == r.stride(), k
        assert t.storage_offset() == r.storage_offset(), k
        assert raw(t) == raw(r), k


# --- .ckpt fixtures against torch.load ---------------------------------------------------------------

CKPT_CASES = [(kind, fmt, proto) for kind in ("dtypes", "views") for fmt in ("zip", "legacy")
              for proto in (2, 4)]


@pytest.mark.parametrize("kind,fmt,proto", CKPT_CASES)
def test_ckpt_equals_torch_load(tmp, kind, fmt, proto):
    sd = tf.dtype_zoo() if kind == "dtypes" else tf.view_zoo()
    path = tf.save(sd, os.path.join(tmp, f"{kind}-{fmt}-p{proto}.ckpt"), fmt, proto)
    ref = torch.load(path)
    ours = ckptkit.load(path, framework="pt")
    assert_same_as_torch(ours, ref)
    # Shared storages: the same tensors share one storage as in torch.load's result.
    assert storage_classes(ours) == storage_classes(ref)


def test_views_share_memory_like_torch(tmp):
    path = tf.save(tf.view_zoo(), os.path.join(tmp, "views-shared.ckpt"))
    sd = ckptkit.load(path, framework="pt")
    sd["shared_base"][5] = 1234.5  # element 0 of shared_offset in the same storage
    assert sd["shared_offset"][0].item() == 1234.5
    # A stride-0 expansion is a view too, not a copy.
    assert sd["expanded"].stride() == (1, 0)
    # One storage object per saved storage, as torch.load gives: torch.save of the result
    # writes each storage once, like re-saving torch.load's result.
    again, ref_again = os.path.join(tmp, "views-again.ckpt"), os.path.join(tmp, "views-ref.ckpt")
    torch.save(sd, again)
    torch.save(torch.load(path), ref_again)
    def storages(p):
        return sorted(n for n in zipfile.ZipFile(p).namelist() if "/data/" in n)
    assert len(storages(again)) == len(storages(ref_again)) < len(sd)


@pytest.mark.parametrize("key", tf.NESTED_WRAPPERS)
def test_wrapped_state_dicts(tmp, key):
    path = tf.save({key: tf.small_state_dict()}, os.path.join(tmp, f"wrapped-{key}.ckpt"))
    assert_same_as_torch(ckptkit.load(path, framework="pt"), torch.load(path)[key])


def test_nested_and_sd15(tmp):
    ckpt, flat, _ = tf.nested_checkpoint()
    path = tf.save(ckpt, os.path.join(tmp, "nested.ckpt"))
    ours = ckptkit.load(path, framework="pt")
    assert sorted(ours) == sorted(flat)
    for k, v in flat.items():
        assert raw(ours[k]) == raw(v)
    path = tf.save({"state_dict": tf.sd15_subset(), "global_step": 1}, os.path.join(tmp, "sd15.ckpt"))
    assert_same_as_torch(ckptkit.load(path, framework="pt"), torch.load(path)["state_dict"])


def test_big_endian_and_handmade(tmp):
    path = os.path.join(tmp, "big-endian.ckpt")
    # torch 1.13's torch.load ignores the archive's `byteorder` (it returns the swapped bytes),
    # so the oracle is the fixture's own little-endian tensors.
    ref = tf.big_endian_zip(path)
    ours = ckptkit.load(path, framework="pt")
    assert list(ours) == list(ref)
    for k in ref:
        assert ours[k].dtype == ref[k].dtype and ours[k].shape == ref[k].shape
        assert raw(ours[k]) == raw(ref[k]), k
    npd = ckptkit.load(path, framework="np")
    for k in ref:
        if ref[k].dtype != torch.bfloat16:
            assert npd[k].dtype.isnative, k  # swapped to this machine's order
            assert np.array_equal(npd[k], ref[k].numpy(), equal_nan=ref[k].is_floating_point()), k
    path = os.path.join(tmp, "handmade.ckpt")
    want = tf.handmade_control(path)
    ours = ckptkit.load(path, framework="pt")
    assert_same_as_torch(ours, torch.load(path))
    assert {k: raw(v) for k, v in ours.items()} == {k: raw(v) for k, v in want.items()}


def test_deflated_storages(tmp):
    """Re-zipped archives (deflated entries): inflated, equal to torch.load; a damaged stream
    is a FormatError."""
    g = torch.Generator().manual_seed(7)
    big = torch.randn(64, 48, generator=g)
    sd = collections.OrderedDict(w=torch.randn(300, 70, generator=g), zeros=torch.zeros(5000),
                                 b=torch.randn(33, generator=g).bfloat16(), view=big[3:9],
                                 t=big.t())
    src, dst = os.path.join(tmp, "stored.ckpt"), os.path.join(tmp, "deflated.ckpt")
    torch.save(sd, src)
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for name in z.namelist():
            out.writestr(name, z.read(name))
    ours = ckptkit.load(dst, framework="pt")
    assert_same_as_torch(ours, torch.load(dst))
    assert storage_classes(ours) == storage_classes(torch.load(dst))
    with zipfile.ZipFile(dst) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(open(dst, "rb").read())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(start + 20, start + 60):
        data[k] ^= 0x5A
    bad = os.path.join(tmp, "bad-deflate.ckpt")
    with open(bad, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(ckptkit.FormatError) as e:
        ckptkit.load(bad, framework="pt")
    assert e.value.path == bad and e.value.offset == start


def test_numpy_framework_ckpt(tmp):
    sd = tf.dtype_zoo()
    path = tf.save(sd, os.path.join(tmp, "dtypes-np.ckpt"))
    with pytest.raises(ckptkit.Error, match='framework="pt"'):
        ckptkit.load(path, framework="np")  # it holds BF16
    del sd["bf16.values"], sd["bf16.bits"], sd["bf16.scalar"], sd["bf16.empty"]
    path = tf.save(sd, os.path.join(tmp, "dtypes-np2.ckpt"))
    ours = ckptkit.load(path, framework="np")
    assert list(ours) == list(sd)
    for k, v in sd.items():
        assert ours[k].dtype == v.numpy().dtype, k
        assert ours[k].shape == tuple(v.shape), k
        assert ours[k].tobytes() == raw(v), k
    views = tf.view_zoo()
    path = tf.save(views, os.path.join(tmp, "views-np.ckpt"))
    ours = ckptkit.load(path, framework="np")
    for k, v in views.items():
        assert ours[k].strides == tuple(s * v.element_size() for s in v.stride()), k
        assert np.array_equal(ours[k], v.numpy()), k
    assert np.shares_memory(ours["shared_base"], ours["shared_column"])


# --- safetensors against an independent reader ----------------------------------------------------

def st_fixture(path):
    rng = np.random.default_rng(7)
    rows = []
    for name, (npdt, size) in sorted(tl.NP_DTYPES.items()):
        data = rng.integers(0, 256, size=3 * 5 * size, dtype=np.uint8).tobytes()
        if name == "BOOL":
            data = bytes(b & 1 for b in data)
        rows.append((f"t.{name}", name, [3, 5], data))
        rows.append((f"s.{name}", name, [], data[:size]))
        rows.append((f"e.{name}", name, [0, 4], b""))
    tl.write_safetensors(path, rows, {"format": "pt", "note": "ünïcode"})
    return rows


def test_safetensors_equals_independent_reader(tmp):
    path = os.path.join(tmp, "zoo.safetensors")
    st_fixture(path)
    meta, ref, _ = tl.read_safetensors(path)
    pt = ckptkit.safe_open(path, framework="pt")
    assert pt.keys() == sorted(ref)
    for k, (dtype, shape, data) in ref.items():
        if dtype in ("U16", "U32", "U64", "F8_E4M3", "F8_E5M2"):
            continue  # torch 1.13 has no such dtypes (checked below)
        t = pt.get_tensor(k)
        assert list(t.shape) == shape, k
        assert raw(t) == data, k
    assert pt.get_tensor("t.BF16").dtype == torch.bfloat16
    # load() takes every tensor: this file's FP8 tensors are refused with this torch, and with
    # the FP8 rows left out the dict holds every other tensor.
    rows = [r for r in st_fixture(os.path.join(tmp, "zoo2.safetensors"))
            if r[1] not in ("U16", "U32", "U64", "F8_E4M3", "F8_E5M2")]
    tl.write_safetensors(os.path.join(tmp, "zoo2.safetensors"), rows)
    whole = ckptkit.load(os.path.join(tmp, "zoo2.safetensors"), framework="pt")
    assert {k: raw(v) for k, v in whole.items()} == {r[0]: r[3] for r in rows}
    if not hasattr(torch, "float8_e4m3fn"):  # torch 1.13: no FP8 dtype to give
        with pytest.raises(ckptkit.Error, match="F8_E4M3"):
            ckptkit.safe_open(path, framework="pt").get_tensor("t.F8_E4M3")
    f = ckptkit.safe_open(path, framework="np")
    for k, (dtype, shape, data) in ref.items():
        if dtype in ("BF16", "F8_E4M3", "F8_E5M2"):
            with pytest.raises(ckptkit.Error, match='framework="pt"'):
                f.get_tensor(k)
            continue
        a = f.get_tensor(k)
        assert list(a.shape) == shape, k
        assert a.dtype == np.dtype(tl.NP_DTYPES[dtype][0]) or dtype == "BOOL", k
        assert a.tobytes() == data, k
    assert f.metadata() == meta


# --- zero copy and lifetime -----------------------------------------------------------------------

def big_st(path):
    a = np.arange(1 << 16, dtype=np.float32)
    tl.write_safetensors(path, [("a", "F32", [256, 256], a.tobytes()),
                                ("b", "F16", [8], np.ones(8, np.float16).tobytes())])
    return a


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_zero_copy_private_mapping(tmp, framework):
    path = os.path.join(tmp, f"zc-{framework}.safetensors")
    big_st(path)
    before = sha(path)
    sd = ckptkit.load(path, framework=framework)
    ranges = mapped_ranges(path)
    assert ranges, "the file is not mapped"
    for k, t in sd.items():
        ptr = t.data_ptr() if framework == "pt" else t.__array_interface__["data"][0]
        assert any(lo <= ptr < hi for lo, hi in ranges), k
    sd["a"][0, 0] = -1  # copy-on-write: the process sees it, the file does not
    sd["a"][255, 255] = 7
    assert float(sd["a"][0, 0]) == -1
    assert sha(path) == before
    ck = os.path.join(tmp, f"zc-{framework}.ckpt")
    tf.save(tf.view_zoo(), ck)
    before = sha(ck)
    sd = ckptkit.load(ck, framework=framework)
    ranges = mapped_ranges(ck)
    t = sd["shared_tail_t"]
    ptr = t.data_ptr() if framework == "pt" else t.__array_interface__["data"][0]
    assert any(lo <= ptr < hi for lo, hi in ranges)
    sd["shared_base"][:] = 0
    assert sha(ck) == before


def test_mapping_released_with_last_array(tmp):
    path = os.path.join(tmp, "life.safetensors")
    big_st(path)
    gc.collect()
    base = _native.live_mappings()
    sd = ckptkit.load(path, framework="pt")
    keep = sd["b"]
    del sd
    gc.collect()
    assert _native.live_mappings() == base + 1
    assert mapped_ranges(path)
    assert float(keep.sum()) == 8.0  # still readable
    view = keep[2:]
    del keep
    gc.collect()
    assert mapped_ranges(path), "a view still lives"
    del view
    gc.collect()
    assert _native.live_mappings() == base
    assert not mapped_ranges(path)
    with ckptkit.safe_open(path, framework="np") as f:
        a = f.get_tensor("a")
    gc.collect()
    assert mapped_ranges(path) and a[1, 1] == 257
    del a, f
    gc.collect()
    assert not mapped_ranges(path)


# --- errors ---------------------------------------------------------------------------------------

def test_broken_files_raise_format_error(tmp):
    broken = tf.broken_files(os.path.join(tmp, "broken"))
    assert broken
    for name, path in broken.items():
        with pytest.raises(ckptkit.FormatError) as e:
            ckptkit.load(path)
        assert isinstance(e.value, ValueError) and isinstance(e.value, ckptkit.Error)
        assert e.value.path == path, name
        assert isinstance(e.value.offset, int), name


def test_malformed_safetensors(tmp):
    path = os.path.join(tmp, "ok.safetensors")
    big_st(path)
    with open(path, "rb") as f:
        data = f.read()
    cases = {
        "truncated": data[:-5],
        "short-prefix": data[:5],
        "huge-header": (1 << 60).to_bytes(8, "little") + data[8:],
        "bad-json": data[:8] + b"[" + data[9:],
        "extra-bytes": data + b"\0" * 8,
    }
    for name, content in cases.items():
        p = os.path.join(tmp, name + ".safetensors")
        with open(p, "wb") as f:
            f.write(content)
        with pytest.raises(ckptkit.FormatError) as e:
            ckptkit.load(p)
        assert e.value.path == p and isinstance(e.value.offset, int), name


def test_malicious_corpus(tmp):
    canaries = os.path.join(tmp, "canaries")
    os.makedirs(canaries, exist_ok=True)
    cases = tf.malicious_corpus(os.path.join(tmp, "malicious"), canaries)
    dangerous = 0
    for c in cases:
        if c.verdict == "dangerous" and not c.malformed:
            dangerous += 1
            with pytest.raises(ckptkit.DangerousPickleError) as e:
                ckptkit.load(c.path, framework="pt")
            assert e.value.report["verdict"] == "dangerous", c.name
            assert any(g["category"] == "dangerous" for g in e.value.report["globals"]), c.name
        try:
            sd = ckptkit.load(c.path, framework="pt", allow_dangerous=True)
        except ckptkit.Error:
            continue  # malformed on purpose, or no state dict: refused, never run
        if c.tensors is not None:
            assert sorted(sd) == sorted(c.tensors), c.name
            for k, v in c.tensors.items():
                assert raw(sd[k]) == raw(v), (c.name, k)
    assert dangerous > 5
    assert os.listdir(canaries) == [], "a payload ran"


def test_missing_and_wrong_types(tmp):
    with pytest.raises(FileNotFoundError):
        ckptkit.load(os.path.join(tmp, "nope.safetensors"))
    with pytest.raises(TypeError, match="path"):
        ckptkit.load(123)
    with pytest.raises(TypeError, match="allow_dangerous"):
        ckptkit.load(os.path.join(tmp, "nope.safetensors"), allow_dangerous="yes")
    with pytest.raises(TypeError, match="framework"):
        ckptkit.load(os.path.join(tmp, "nope.safetensors"), framework=1)
    with pytest.raises(ValueError, match="framework"):
        ckptkit.load(os.path.join(tmp, "nope.safetensors"), framework="tf")


def test_numpy_raw_bits_of_bf16_and_fp8(tmp):
    """NumPy has no BF16/FP8: the error names framework="pt" and raw=True; raw=True gives the
    bit patterns as uint16/uint8 views of the file, zero-copy."""
    rng = np.random.default_rng(3)
    bf16 = rng.integers(0, 1 << 16, (5, 7), dtype=np.uint16)
    f8 = rng.integers(0, 256, (9,), dtype=np.uint8)
    f32 = rng.standard_normal(4).astype(np.float32)
    path = os.path.join(tmp, "raw-bits.safetensors")
    tl.write_safetensors(path, [("bf", "BF16", bf16.shape, bf16.tobytes()),
                                ("e4", "F8_E4M3", f8.shape, f8.tobytes()),
                                ("e5", "F8_E5M2", f8.shape, f8.tobytes()),
                                ("f", "F32", f32.shape, f32.tobytes())])
    with pytest.raises(ckptkit.Error, match=r'framework="pt", or raw=True .*uint16'):
        ckptkit.load(path, framework="np")
    sd = ckptkit.load(path, framework="np", raw=True)
    assert sd["bf"].dtype == np.uint16 and np.array_equal(sd["bf"], bf16)
    assert sd["e4"].dtype == np.uint8 and np.array_equal(sd["e4"], f8)
    assert np.array_equal(sd["e5"], f8) and np.array_equal(sd["f"], f32)
    sd["bf"][0, 0] ^= 1  # a private page: the file is unchanged
    assert np.array_equal(ckptkit.load(path, framework="np", raw=True)["bf"], bf16)
    with ckptkit.safe_open(path, framework="np", raw=True) as f:
        assert np.array_equal(f.get_tensor("bf"), bf16)
    # torch has BF16: raw changes nothing there; FP8 comes as bits where torch lacks it.
    t = ckptkit.load(path, framework="pt", raw=True)
    assert t["bf"].dtype == torch.bfloat16
    if not hasattr(torch, "float8_e4m3fn"):
        assert t["e4"].dtype == torch.uint8 and np.array_equal(t["e4"].numpy(), f8)
