"""Files ckptkit writes, read back by an independent reader and by PyTorch, checked against
the published layout tables (data/layouts/*.tsv); files others write, read by ckptkit."""
import hashlib
import json
import os
import struct
import unittest

import numpy as np
import torch

from ckpt_testlib import TempDirTest, read_safetensors, run, write_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAYOUTS = os.path.join(ROOT, "data", "layouts")
# The reference writer's dtype enum, in increasing order; it sorts by it descending, then name.
RANK = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
        "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]


def layout_table(name):
    rows = {}
    with open(os.path.join(LAYOUTS, name + ".tsv")) as f:
        for line in f:
            if not line.strip():
                continue
            tname, dtype, dims = line.rstrip("\n").split("\t")
            rows[tname] = (dtype, [int(d) for d in dims.split(",")] if dims else [])
    return rows


def header_order(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        text = f.read(n)
    pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
    return [(k, dict(v)) for k, v in pairs if k != "__metadata__"], text, n


class WrittenByCkptkit(TempDirTest):
    def check_structure(self, path, table, dtype_override=None):
        """Header-only checks (the big layouts are sparse files of many GB)."""
        order, text, n = header_order(path)
        entries = dict(order)
        self.assertEqual(set(entries), set(table), "names differ from the layout table")
        for name, (dtype, shape) in table.items():
            want = dtype_override if dtype_override and dtype.startswith(("F", "BF")) else dtype
            self.assertEqual(entries[name]["dtype"], want, name)
            self.assertEqual(entries[name]["shape"], shape, name)
        self.assertEqual(n % 8, 0)
        self.assertEqual(text.rstrip(b" "), text.rstrip())  # only space padding
        offsets = [e["data_offsets"] for _, e in order]
        self.assertEqual(offsets[0][0], 0)
        for (a, b), (c, _) in zip(offsets, offsets[1:]):
            self.assertEqual(b, c)
        self.assertEqual(8 + n + offsets[-1][1], os.path.getsize(path))
        keys = [(-RANK.index(e["dtype"]), k) for k, e in order]
        self.assertEqual(keys, sorted(keys), "not in the reference writer's order")
        return json.loads(text).get("__metadata__", {})

    def test_sample_matches_the_published_table(self):
        path = self.path("clip-l.st")
        run("sample", "--layout", "clip-l", "-o", path, "--no-sync", "-q", "--seed", "3")
        meta = self.check_structure(path, layout_table("clip-l"))
        self.assertEqual(read_safetensors(path)[0], meta)
        self.assertEqual(meta["ckptkit.sample.layout"], "clip-l")
        self.assertEqual(meta["ckptkit.sample.seed"], "3")

    def test_sparse_sample_of_every_big_layout(self):
        for name in ("sd15-ldm", "sdxl-sgm", "sd3-medium", "flux1-dev-comfy-fp8-aio"):
            with self.subTest(name):
                path = self.path(name + ".st")
                run("sample", "--layout", name, "-o", path, "--sparse", "--no-sync", "-q")
                self.check_structure(path, layout_table(name))
                self.assertLess(os.stat(path).st_blocks * 512, 4 << 20, "not sparse")
                os.remove(path)

    def test_dtype_override_and_torch_view_of_values(self):
        path = self.path("te.st")
        run("sample", "--layout", "sd15-diffusers-text_encoder", "-o", path, "--dtype", "f16",
            "--no-sync", "-q")
        self.check_structure(path, layout_table("sd15-diffusers-text_encoder"), "F16")
        _, tensors, _ = read_safetensors(path)
        dtype, shape, raw = tensors["text_model.embeddings.position_ids"]
        self.assertEqual(dtype, "I64")
        pos = torch.frombuffer(bytearray(raw), dtype=torch.int64).reshape(shape)
        self.assertTrue(torch.equal(pos, torch.arange(77).reshape(1, 77)))
        checked = 0
        for name, (dtype, shape, raw) in tensors.items():
            if dtype != "F16":
                continue
            t = torch.frombuffer(bytearray(raw), dtype=torch.float16).float().reshape(shape)
            self.assertTrue(torch.isfinite(t).all(), name)
            if len(shape) == 2:
                std, want = t.std().item(), 1 / (shape[1] ** 0.5)
                self.assertTrue(want / 3 < std < want * 3, (name, std, want))
                checked += 1
            elif name.endswith("layer_norm1.weight"):
                self.assertAlmostEqual(t.mean().item(), 1.0, delta=0.01)
        self.assertGreater(checked, 50)

    def test_determinism(self):
        def sample(name, *extra):
            path = self.path(name)
            run("sample", "--layout", "lora-kohya-sd15", "-o", path, "--no-sync", "-q", *extra)
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        a = sample("a", "--seed", "1")
        self.assertEqual(a, sample("b", "--seed", "1", "--threads", "1", "--max-memory", "4M"))
        self.assertEqual(a, sample("c", "--seed", "1", "--threads", "3"))
        self.assertNotEqual(a, sample("d", "--seed", "2"))


class WrittenByOthers(TempDirTest):
    def test_keep_round_trip_is_byte_identical_per_tensor(self):
        rng = np.random.default_rng(5)
        tensors = [
            ("z.last", "F16", [3, 4], rng.standard_normal(12).astype(np.float16).tobytes()),
            ("a.first", "F32", [5], rng.standard_normal(5).astype(np.float32).tobytes()),
            ("ids", "I64", [1, 7], np.arange(7, dtype=np.int64).tobytes()),
            ("m", "BF16", [2], b"\x80\x3f\x00\x40"),
            ("flags", "BOOL", [4], bytes([1, 0, 0, 1])),
            ("q", "F8_E4M3", [6], bytes(range(6))),
            ("packed", "F4", [4], b"\x12\x34"),
            ("scalar", "F64", [], struct.pack("<d", 0.25)),
            ("empty", "F32", [0, 8], b""),
        ]
        meta = {"title": "caf\u00e9 \u4e2d\u6587", "quote": 'say "hi"\\', "ctrl": "a\nb\tc\x01",
                "json": json.dumps({"a": [1, 2]})}
        src, out = self.path("in.st"), self.path("out.st")
        write_safetensors(src, tensors, meta)
        run("convert", src, "-o", out, "--no-sync", "-q")
        meta2, got, _ = read_safetensors(out)
        self.assertEqual(meta2, meta)
        self.assertEqual(set(got), {t[0] for t in tensors})
        for name, dtype, shape, raw in tensors:
            self.assertEqual(got[name], (dtype, shape, raw), name)
        p = run("inspect", src, "--json")
        doc = json.loads(p.stdout)
        self.assertFalse(doc["header"]["canonical_order"])
        self.assertTrue(json.loads(run("inspect", out, "--json").stdout)["header"]["canonical_order"])

    def test_torch_saved_values_convert_like_torch(self):
        """A state dict serialized by hand from torch tensors converts as torch.to would."""
        torch.manual_seed(0)
        sd = {"conv.weight": torch.randn(8, 4, 3, 3), "norm.bias": torch.randn(8) * 1e-3,
              "big": torch.randn(1000) * 7e4}
        src, out = self.path("sd.st"), self.path("sd-bf16.st")
        write_safetensors(src, [(k, "F32", list(v.shape), v.numpy().tobytes()) for k, v in sd.items()])
        run("convert", src, "-o", out, "--dtype", "bf16", "--no-sync", "-q")
        _, got, _ = read_safetensors(out)
        for k, v in sd.items():
            want = v.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
            self.assertEqual(got[k][2], want, k)


if __name__ == "__main__":
    unittest.main()
