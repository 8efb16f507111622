"""PyTorch checkpoints (.ckpt/.pt: torch.save zip archives and the legacy pre-1.6 format) read
by ckptkit without running them, with torch as the oracle: `inspect` describes exactly the
tensors torch.load finds, and `convert` writes each one's bytes as torch's `.contiguous()` (or
`.to(dtype)`) gives them. Fixtures come from torch_fixtures.py; none of them is malicious (the
malicious corpus is test_scan.py's)."""
import json
import os
import tempfile
import unittest

import torch

import torch_fixtures as tf
from ckpt_testlib import TempDirTest, read_safetensors, read_safetensors_header, run

FORMAT = {"zip": "torch-zip", "legacy": "torch-legacy"}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U8": 1, "BOOL": 1}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first differing byte at {i}: {x:#04x} != {y:#04x}"
    return f"lengths {len(a)} != {len(b)}"


class TorchReadTest(TempDirTest):
    def inspect(self, path, tensors=True):
        args = ["inspect", path, "--json"] + (["--tensors"] if tensors else [])
        p = run(*args, check=False)
        self.assertEqual(p.returncode, 0, f"ckptkit {' '.join(args)} -> {p.returncode}\n{p.stderr}")
        try:
            doc = json.loads(p.stdout)
        except ValueError as e:
            doc = e
        if isinstance(doc, Exception):
            self.fail(f"inspect --json printed invalid JSON ({doc}):\n{p.stdout[:2000]}")
        return doc

    def convert(self, path, dtype="keep", *extra):
        out = self.path(f"{os.path.basename(path)}-{dtype}.safetensors")
        args = ["convert", path, "-o", out, "--dtype", dtype, "--no-sync", "--progress", "never",
                "--force", *extra]
        p = run(*args, check=False)
        self.assertEqual(p.returncode, 0, f"ckptkit {' '.join(args)} -> {p.returncode}\n{p.stderr}")
        self.assertTrue(os.path.exists(out), f"convert exited 0 but wrote no {out}")
        return out, p

    def check_inspect(self, doc, path, expected, fmt, key="", other=(), exact_bytes=True,
                      verdict="safe"):
        """doc is inspect --json --tensors of path; expected {name: tensor as torch.load gives
        it}."""
        label = os.path.basename(path)
        self.assertEqual(doc.get("path"), path, label)
        self.assertEqual(doc.get("format"), fmt, label)
        self.assertEqual(doc.get("file_size"), os.path.getsize(path), label)
        self.assertEqual(doc.get("tensors"), len(expected), f"{label}: tensor count")
        self.assertEqual(doc.get("parameters"), sum(t.numel() for t in expected.values()),
                         f"{label}: parameters (sum of numel)")
        self.assertEqual(doc.get("metadata"), {}, f"{label}: torch files have no metadata")
        self.assertEqual(doc.get("state_dict_key"), key, f"{label}: state_dict_key")
        self.assertEqual(sorted(doc.get("other_entries", [None])), sorted(other),
                         f"{label}: other_entries")
        self.assertEqual(doc.get("scan", {}).get("verdict"), verdict, f"{label}: scan verdict")
        hist = {}
        for t in expected.values():
            h = hist.setdefault(tf.ST_NAME[t.dtype], {"tensors": 0, "parameters": 0, "bytes": 0})
            h["tensors"] += 1
            h["parameters"] += t.numel()
            h["bytes"] += t.numel() * t.element_size()
        got = doc.get("dtypes", {})
        if not exact_bytes:  # views of larger storages: "bytes" may count either; not checked
            got = {k: {kk: vv for kk, vv in v.items() if kk != "bytes"} for k, v in got.items()}
            hist = {k: {kk: vv for kk, vv in v.items() if kk != "bytes"} for k, v in hist.items()}
        self.assertEqual(got, hist, f"{label}: dtypes histogram")
        listed = {t["name"]: t for t in doc.get("tensor_list", [])}
        self.assertEqual(sorted(listed), sorted(expected), f"{label}: tensor_list names")
        self.assertEqual(len(doc["tensor_list"]), len(expected), f"{label}: duplicate names")
        for name, t in expected.items():
            self.assertEqual(listed[name]["dtype"], tf.ST_NAME[t.dtype], f"{label}: {name} dtype")
            self.assertEqual(listed[name]["shape"], list(t.shape), f"{label}: {name} shape")

    def check_converted(self, out, expected, dtype="keep", label=""):
        """The safetensors file out holds exactly `expected`, each cast like torch's .to for
        --dtype `dtype`, contiguous, little-endian."""
        _, tensors, _ = read_safetensors(out)
        self.assertEqual(sorted(tensors), sorted(expected), f"{label}: tensor names in {out}")
        for name, t in expected.items():
            want = tf.cast_like_torch(t, dtype)
            st_dtype, shape, raw = tensors[name]
            self.assertEqual(st_dtype, tf.ST_NAME[want.dtype], f"{label}: {name} dtype")
            self.assertEqual(shape, list(t.shape), f"{label}: {name} shape")
            wb = tf.tensor_bytes(want)
            if raw != wb:
                self.fail(f"{label}: {name} ({st_dtype} {shape}, --dtype {dtype}): bytes differ from "
                          f"torch's: {first_difference(raw, wb)}")
        # Every tensor is its own copy: ranges are disjoint and exactly numel * itemsize long.
        spans = sorted((b, e, name, dt, shape)
                       for name, dt, shape, (b, e) in read_safetensors_header(out)["entries"])
        for (b0, e0, n0, _, _), (b1, _, n1, _, _) in zip(spans, spans[1:]):
            self.assertLessEqual(e0, b1, f"{label}: {n0} and {n1} share bytes")
        for b, e, name, dt, shape in spans:
            self.assertEqual(e - b, numel(shape) * ITEMSIZE[dt], f"{label}: {name} byte count")

    def round_trip(self, path, expected, fmt, key="", other=(), exact_bytes=True, verdict="safe"):
        self.check_inspect(self.inspect(path), path, expected, fmt, key, other, exact_bytes, verdict)
        out, p = self.convert(path)
        self.check_converted(out, expected, "keep", os.path.basename(path))
        return out, p


class Dtypes(TorchReadTest):
    def test_every_dtype_zip_and_legacy_protocols_2_and_4(self):
        zoo = tf.dtype_zoo()
        for fmt in ("zip", "legacy"):
            for proto in (2, 4):
                with self.subTest(fmt=fmt, protocol=proto):
                    path = tf.save(zoo, self.path(f"dtypes-{fmt}-p{proto}.ckpt"), fmt, proto)
                    loaded = torch.load(path)
                    self.assertEqual(list(loaded), list(zoo))
                    for k, v in zoo.items():  # the fixture is what we meant (bit for bit)
                        self.assertEqual(tf.tensor_bytes(loaded[k]), tf.tensor_bytes(v), k)
                    self.round_trip(path, loaded, FORMAT[fmt])

    def test_zoo_has_the_hard_values(self):
        """Guards the fixture: the values a sloppy reader would get wrong are really there."""
        zoo = tf.dtype_zoo()
        for dt in tf.FLOAT_DTYPES:
            v = zoo[f"{tf.ST_NAME[dt].lower()}.values"].double()
            self.assertTrue(torch.isnan(v).any() and torch.isinf(v).any() and (v < 0).any(), dt)
            tiny = torch.finfo(dt).tiny
            self.assertTrue(((v.abs() < tiny) & (v != 0)).any(), f"{dt}: no subnormal")
        for k, v in zoo.items():
            if k.endswith(".scalar"):
                self.assertEqual(v.dim(), 0, k)
            if k.endswith(".empty"):
                self.assertEqual(v.numel(), 0, k)
        self.assertEqual(len({v.dtype for v in zoo.values()}), 10)


class Views(TorchReadTest):
    def test_views_are_materialized(self):
        zoo = tf.view_zoo()
        self.assertFalse(zoo["transposed"].is_contiguous())
        self.assertEqual(zoo["expanded"].stride(), (1, 0))
        self.assertEqual(zoo["slice"].storage_offset(), 10)
        for fmt in ("zip", "legacy"):
            with self.subTest(fmt=fmt):
                path = tf.save(zoo, self.path(f"views-{fmt}.ckpt"), fmt)
                loaded = torch.load(path)
                # torch.save kept the views (a reader that ignores strides or offsets fails)
                self.assertEqual(loaded["expanded"].stride(), (1, 0))
                self.assertEqual(loaded["shared_offset"].storage_offset(), 5)
                self.assertEqual(loaded["shared_base"].storage().data_ptr(),
                                 loaded["shared_tail_t"].storage().data_ptr(),
                                 "torch.save did not share the storage")
                for k, v in zoo.items():
                    self.assertTrue(torch.equal(loaded[k], v), k)
                self.round_trip(path, loaded, FORMAT[fmt], exact_bytes=False)
                for dtype in ("f16", "bf16"):
                    out, _ = self.convert(path, dtype)
                    self.check_converted(out, loaded, dtype.upper(), f"views-{fmt} --dtype {dtype}")

    def test_handmade_archive(self):
        """An archive whose data.pkl was written opcode by opcode (the tests' own pickle writer,
        used for the broken and malicious files): torch loads it, and so must ckptkit."""
        path = self.path("handmade.ckpt")
        want = tf.handmade_control(path)
        loaded = torch.load(path)
        for k, v in want.items():
            self.assertTrue(torch.equal(loaded[k], v), k)
            self.assertEqual(loaded[k].stride(), v.stride(), k)
        self.round_trip(path, loaded, "torch-zip", exact_bytes=False)


class Nested(TorchReadTest):
    def test_wrapper_keys(self):
        sd = tf.small_state_dict()
        for key in tf.NESTED_WRAPPERS:
            with self.subTest(key=key):
                path = tf.save({key: sd}, self.path(f"wrapped-{key}.ckpt"))
                loaded = torch.load(path)[key]
                self.round_trip(path, loaded, "torch-zip", key=key)

    def test_nested_dict_dotted_names_and_other_entries(self):
        ckpt, flat, other = tf.nested_checkpoint()
        for fmt in ("zip", "legacy"):
            with self.subTest(fmt=fmt):
                path = tf.save(ckpt, self.path(f"nested-{fmt}.ckpt"), fmt)
                loaded = torch.load(path)["state_dict"]
                expected = {"x": loaded["x"], "unet.w": loaded["unet"]["w"],
                            "unet.sub.b": loaded["unet"]["sub"]["b"]}
                for k in flat:
                    self.assertTrue(torch.equal(expected[k], flat[k]), k)
                _, p = self.round_trip(path, expected, FORMAT[fmt], key="state_dict", other=other)
                self.assertRegex(p.stderr, rf"\b{len(other)}\b",
                                 f"convert's stderr does not say how many non-tensor entries it "
                                 f"dropped ({len(other)}: {other}):\n{p.stderr}")

    def test_wrapper_inside_wrapper(self):
        """{"model": {"module": sd}, "epoch": 1}: the tensors are two levels down."""
        sd = tf.small_state_dict(seed=12)
        path = tf.save({"model": {"module": sd}, "epoch": 1}, self.path("double.ckpt"))
        loaded = torch.load(path)["model"]["module"]
        self.round_trip(path, loaded, "torch-zip", key="model.module", other=["epoch"])


class RealLayouts(TorchReadTest):
    def test_sd15_ldm_names(self):
        sd = tf.sd15_subset()
        self.assertGreater(len(sd), 50)
        self.assertIn("cond_stage_model.transformer.text_model.embeddings.position_ids", sd)
        path = tf.save({"state_dict": sd, "global_step": 470000}, self.path("sd15.ckpt"))
        loaded = torch.load(path)["state_dict"]
        table = {name: shape for name, _, shape in tf.layout_rows("sd15-ldm")}
        for name, t in loaded.items():  # real names, real ranks
            self.assertEqual(t.dim(), len(table[name]), name)
        self.round_trip(path, loaded, "torch-zip", key="state_dict", other=["global_step"])

    def test_big_endian_archive(self):
        path = self.path("big-endian.ckpt")
        original = tf.big_endian_zip(path)
        loaded = torch.load(path)
        if all(torch.equal(loaded[k], v) for k, v in original.items()):
            pass  # a torch that honors byteorder: it agrees with the original values
        else:
            # torch 1.13 ignores the byteorder entry; make sure the swap really happened.
            self.assertFalse(torch.equal(loaded["w"], original["w"]),
                             "the fixture's float32 storage was not byte-swapped")
        self.round_trip(path, original, "torch-zip")

    def test_dtype_conversion(self):
        sd = dict(tf.dtype_zoo(seed=13))
        sd.update({f"view.{k}": v for k, v in tf.view_zoo(seed=14).items()})
        path = tf.save(sd, self.path("convert-me.ckpt"))
        loaded = torch.load(path)
        for dtype in ("F16", "BF16", "F32"):
            with self.subTest(dtype=dtype):
                out, _ = self.convert(path, dtype.lower())
                self.check_converted(out, loaded, dtype, f"--dtype {dtype.lower()}")
                _, tensors, _ = read_safetensors(out)
                self.assertEqual(tensors["i64.values"][0], "I64", "an int64 tensor was cast")
                self.assertEqual(tensors["bool.values"][0], "BOOL", "a bool tensor was cast")


class Lightning(TorchReadTest):
    @classmethod
    def setUpClass(cls):
        root = os.environ.get("CKPTKIT_TEST_TMP")
        if root:
            os.makedirs(root, exist_ok=True)
        cls._cls_tmp = tempfile.TemporaryDirectory(dir=root)
        cls.ckpt = os.path.join(cls._cls_tmp.name, "lightning.ckpt")
        cls.sd = tf.lightning_checkpoint(cls.ckpt)  # torch.load-checked in the generator

    @classmethod
    def tearDownClass(cls):
        cls._cls_tmp.cleanup()

    def test_inspect_is_suspicious_and_finds_the_state_dict(self):
        doc = self.inspect(self.ckpt)
        self.check_inspect(doc, self.ckpt, self.sd, "torch-zip", key="state_dict",
                           other=tf.LIGHTNING_OTHER, verdict="suspicious")

    def test_convert_without_allow_dangerous(self):
        out, p = self.convert(self.ckpt)
        self.check_converted(out, self.sd, "keep", "lightning")
        out, p = self.convert(self.ckpt, "f16")
        self.check_converted(out, self.sd, "F16", "lightning --dtype f16")


class Errors(TorchReadTest):
    def test_each_broken_file(self):
        src_dir = self.path("in")
        out_dir = self.path("out")
        os.makedirs(out_dir)
        broken = tf.broken_files(src_dir)
        self.assertGreaterEqual(len(broken), 12)
        for name, src in sorted(broken.items()):
            with self.subTest(name):
                before = tf.read_bytes(src)
                p = run("inspect", src, "--json", check=False)
                self.assertEqual(p.returncode, 2, f"inspect {name}: {p.stdout[:300]}{p.stderr}")
                self.assertIn(src, p.stderr, f"inspect {name}: the message does not name the file")
                p = run("inspect", src, check=False)
                self.assertEqual(p.returncode, 2, f"inspect (text) {name}: {p.stderr}")
                lines = p.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, f"inspect {name}: expected one line:\n{p.stderr}")
                self.assertTrue(lines[0].startswith(f"ckptkit: error: {src}:"),
                                f"inspect {name}: not 'ckptkit: error: PATH:0xOFFSET: ...': {lines[0]}")
                out = os.path.join(out_dir, name + ".safetensors")
                p = run("convert", src, "-o", out, "--dtype", "f16", "--no-sync", "--progress",
                        "never", check=False)
                self.assertEqual(p.returncode, 2, f"convert {name}: {p.stderr}")
                self.assertIn(src, p.stderr, f"convert {name}: the message does not name the file")
                self.assertEqual(os.listdir(out_dir), [], f"convert {name} left files behind")
                self.assertEqual(tf.read_bytes(src), before, f"{name}: input modified")


if __name__ == "__main__":
    unittest.main()
