"""ckptkit.safe_open, save_file and scan (the Python module) against the safetensors
documentation's behaviour, an independent reader, and the CLI's --json output.

Run by ctest with pytest (PYTHONPATH names the build's python/ folder)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_testlib as tl  # noqa: E402
import torch_fixtures as tf  # noqa: E402

import ckptkit  # noqa: E402


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return str(tmp_path_factory.mktemp("pymodule_api"))


@pytest.fixture(scope="module")
def st(tmp):
    path = os.path.join(tmp, "st.safetensors")
    w = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    b = np.arange(10, dtype=np.int64) - 3
    tl.write_safetensors(path, [("zeta.w", "F32", w.shape, w.tobytes()),
                                ("alpha.b", "I64", b.shape, b.tobytes())], {"k": "v"})
    return path, {"zeta.w": w, "alpha.b": b}


def test_safe_open_keys_metadata_tensors(st):
    path, ref = st
    with ckptkit.safe_open(path, framework="np") as f:
        assert f.keys() == ["alpha.b", "zeta.w"]
        assert f.metadata() == {"k": "v"}
        for k, v in ref.items():
            assert np.array_equal(f.get_tensor(k), v)
        with pytest.raises(KeyError):
            f.get_tensor("missing")
    with pytest.raises(ckptkit.Error, match="closed"):
        f.keys()
    with ckptkit.safe_open(path, framework="pt") as f:
        t = f.get_tensor("zeta.w")
        assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(ref["zeta.w"]))


def test_safe_open_no_metadata(tmp):
    path = os.path.join(tmp, "nometa.safetensors")
    tl.write_safetensors(path, [("x", "U8", [2], b"\1\2")])
    with ckptkit.safe_open(path, framework="np") as f:
        assert f.metadata() is None


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_get_slice(st, framework):
    path, ref = st
    w = ref["zeta.w"]
    with ckptkit.safe_open(path, framework=framework) as f:
        s = f.get_slice("zeta.w")
        assert s.get_shape() == [4, 6, 5]
        assert s.get_dtype() == "F32"
        for key in [np.s_[1:3], np.s_[:, 2:5], np.s_[..., 1:4], np.s_[0], np.s_[:, ::2, 1],
                    np.s_[-2:], np.s_[1:3, -4:-1, ...]]:
            got = s[key]
            got = got.numpy() if framework == "pt" else got
            assert np.array_equal(got, w[key]), key
        with pytest.raises(ValueError):
            s[::-1]
        with pytest.raises(IndexError):
            s[0, 0, 0, 0]


def test_save_file_round_trip_and_order(tmp):
    g = torch.Generator().manual_seed(3)
    sd = {"b.weight": torch.randn(3, 4, generator=g), "a.half": torch.randn(5, generator=g).half(),
          "c.bf16": torch.randn(2, 2, generator=g).bfloat16(), "d.i64": torch.arange(3),
          "e.bool": torch.tensor([True, False]), "f.scalar": torch.tensor(2.5),
          "g.empty": torch.empty(0, 3)}
    path = os.path.join(tmp, "saved.safetensors")
    ckptkit.save_file(sd, path, metadata={"format": "pt"})
    meta, got, _ = tl.read_safetensors(path)
    assert meta == {"format": "pt"}
    for k, v in sd.items():
        dtype, shape, data = got[k]
        assert dtype == tf.ST_NAME[v.dtype] and shape == list(v.shape), k
        assert data == tf.tensor_bytes(v), k
    # The reference writer's order: data offsets sorted by (dtype size desc, name).
    h = tl.read_safetensors_header(path)
    by_offset = [e[0] for e in sorted(h["entries"], key=lambda e: e[3][0])]
    # The reference's Dtype enum order (safetensors/src/tensor.rs), sorted descending.
    rank = {n: i for i, n in enumerate(["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16",
                                        "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"])}
    want = sorted(sd, key=lambda k: (-rank[tf.ST_NAME[sd[k].dtype]], k))
    assert by_offset == want
    # The binary CLI's verify agrees the file is canonical, and load gives the tensors back.
    back = ckptkit.load(path, framework="pt")
    for k, v in sd.items():
        assert torch.equal(back[k], v), k
    npd = {"x": np.arange(6, dtype=np.int32).reshape(2, 3).T, "y": np.float64(1.5) * np.ones(2)}
    ckptkit.save_file(npd, os.path.join(tmp, "np.safetensors"))
    back = ckptkit.load(os.path.join(tmp, "np.safetensors"))
    assert np.array_equal(back["x"], npd["x"]) and np.array_equal(back["y"], npd["y"])


def test_save_file_refuses_shared_and_bad_arguments(tmp):
    path = os.path.join(tmp, "shared.safetensors")
    base = torch.arange(10.0)
    with pytest.raises(ValueError, match="share memory"):
        ckptkit.save_file({"a": base[:5], "b": base[5:]}, path)
    a = np.arange(10.0)
    with pytest.raises(ValueError, match="share memory"):
        ckptkit.save_file({"a": a[:6], "b": a[4:]}, path)
    with pytest.raises(ValueError, match="contiguous"):
        ckptkit.save_file({"t": torch.randn(3, 4).t()}, path)
    assert not os.path.exists(path), "nothing is written on failure"
    with pytest.raises(TypeError, match="tensors"):
        ckptkit.save_file([1, 2], path)
    with pytest.raises(TypeError, match="metadata"):
        ckptkit.save_file({}, path, metadata={"a": 1})
    with pytest.raises(TypeError, match="path"):
        ckptkit.save_file({}, 3.5)
    with pytest.raises(TypeError, match="tensors"):
        ckptkit.save_file({"x": [1, 2]}, path)
    assert not os.path.exists(path)


def test_save_file_atomic_replaces(tmp):
    path = os.path.join(tmp, "replace.safetensors")
    ckptkit.save_file({"x": np.zeros(3, np.float32)}, path)
    old = ckptkit.load(path)  # a mapping of the old file
    ckptkit.save_file({"x": np.ones(3, np.float32)}, path)
    assert np.array_equal(ckptkit.load(path)["x"], np.ones(3, np.float32))
    assert np.array_equal(old["x"], np.zeros(3, np.float32)), "the old mapping is untouched"
    leftovers = [n for n in os.listdir(tmp) if "ckptkit-tmp" in n]
    assert leftovers == []


def test_scan_matches_cli_json(tmp):
    cases = tf.malicious_corpus(os.path.join(tmp, "mal"))
    safe = tf.save(tf.small_state_dict(), os.path.join(tmp, "safe.ckpt"))
    paths = [safe] + [c.path for c in cases[:6]]
    for p in paths:
        cli = subprocess.run([tl.BIN, "scan", "--json", p], capture_output=True, text=True)
        want = json.loads(cli.stdout)["files"][0]
        assert ckptkit.scan(p) == want, p
    assert ckptkit.scan(safe)["verdict"] == "safe"
    with pytest.raises(FileNotFoundError):
        ckptkit.scan(os.path.join(tmp, "absent.ckpt"))


def test_inspect_matches_cli_json(tmp, st):
    ck = tf.save({"state_dict": tf.sd15_subset(), "epoch": 1}, os.path.join(tmp, "sd15.ckpt"))
    for p in (st[0], ck):
        for flags in ([], ["--tensors"]):
            cli = subprocess.run([tl.BIN, "inspect", "--json", *flags, p], capture_output=True,
                                 text=True, check=True)
            assert ckptkit.inspect(p, tensors=bool(flags)) == json.loads(cli.stdout), (p, flags)
    assert ckptkit.inspect(ck)["state_dict_key"] == "state_dict"
    with pytest.raises(FileNotFoundError):
        ckptkit.inspect(os.path.join(tmp, "absent.safetensors"))
    with pytest.raises(TypeError, match="tensors"):
        ckptkit.inspect(ck, tensors="yes")


def test_safe_open_ckpt(tmp):
    path = tf.save({"state_dict": tf.view_zoo()}, os.path.join(tmp, "views.ckpt"))
    ref = torch.load(path)["state_dict"]
    with ckptkit.safe_open(path, framework="pt") as f:
        assert f.keys() == sorted(ref)
        for k, v in ref.items():
            t = f.get_tensor(k)
            assert t.stride() == v.stride() and torch.equal(t, v), k
        assert torch.equal(f.get_slice("transposed")[1:, ::2], ref["transposed"][1:, ::2])
        assert f.get_slice("half_view").get_dtype() == "F16"
