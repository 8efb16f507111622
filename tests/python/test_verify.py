"""`ckptkit verify`: each seeded defect is found, a clean file passes.

The clean file is a real-layout sample (CLIP-L, the published names and shapes, values like
trained weights); the defects are planted here by writing bytes into it, or by hand-built
files, and each one's expected finding is asserted by code, tensor and exit status."""
import json
import os
import shutil
import struct
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from ckpt_testlib import TempDirTest, read_safetensors_header, run, write_safetensors  # noqa: E402

F16_NAN = b"\x00\x7e"
F16_INF = b"\x00\x7c"
F16_MAX = b"\xff\x7b"  # 65504


class VerifyTest(TempDirTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = os.environ.get("CKPTKIT_TEST_TMP")
        if root:
            os.makedirs(root, exist_ok=True)
        import tempfile
        cls._shared = tempfile.TemporaryDirectory(dir=root)
        cls.clean = os.path.join(cls._shared.name, "clip-l.safetensors")
        run("sample", "--layout", "clip-l", "-o", cls.clean, "--progress", "never", "--no-sync")
        cls.hdr = read_safetensors_header(cls.clean)

    @classmethod
    def tearDownClass(cls):
        cls._shared.cleanup()
        super().tearDownClass()

    def verify(self, path, *extra):
        r = run("verify", "--json", *extra, path, check=False)
        out = json.loads(r.stdout) if r.stdout.strip() else []
        return r.returncode, (out[0] if out else None), r

    def entry(self, name):
        for e in self.hdr["entries"]:
            if e[0] == name:
                return e
        raise KeyError(name)

    def planted(self, name, offset_in_tensor, data):
        """A copy of the clean file with `data` written into tensor `name`."""
        p = self.path("planted.safetensors")
        shutil.copy(self.clean, p)
        _, _, _, (b, e) = self.entry(name)
        with open(p, "r+b") as f:
            f.seek(8 + self.hdr["n"] + b + offset_in_tensor)
            f.write(data)
        return p

    def codes(self, report):
        return [(f["code"], f["tensor"]) for f in report["findings"] if f["severity"] != "info"]

    def test_clean_sample_passes_and_every_value_is_read(self):
        rc, rep, r = self.verify(self.clean)
        self.assertEqual(rc, 0, r.stdout)
        self.assertTrue(rep["ok"])
        self.assertEqual(self.codes(rep), [])
        self.assertEqual(rep["architecture"], "clip-l")
        n_values = sum(max(1, eval("*".join(map(str, s)) or "1")) for _, _, s, _ in self.hdr["entries"])
        self.assertEqual(rep["values_checked"], n_values)

    def test_one_nan_is_found_in_its_tensor(self):
        name = "text_model.encoder.layers.7.mlp.fc1.weight"
        rc, rep, _ = self.verify(self.planted(name, 2 * 12345, F16_NAN))
        self.assertEqual(rc, 1)
        self.assertEqual(self.codes(rep), [("nan", name)])
        self.assertIn("1 NaN", rep["findings"][0]["message"])

    def test_inf_and_magnitude(self):
        name = "text_model.encoder.layers.0.self_attn.k_proj.weight"
        rc, rep, _ = self.verify(self.planted(name, 0, F16_INF + F16_INF))
        self.assertEqual((rc, self.codes(rep)), (1, [("inf", name)]))
        self.assertIn("2 infinite", rep["findings"][0]["message"])
        rc, rep, _ = self.verify(self.planted(name, 100, F16_MAX))
        self.assertEqual((rc, self.codes(rep)), (1, [("magnitude", name)]))
        self.assertIn("65504", rep["findings"][0]["message"])
        # The limit is the user's to set.
        rc, rep, _ = self.verify(self.planted(name, 100, F16_MAX), "--max-abs", "70000")
        self.assertEqual(rc, 0)

    def test_a_zeroed_tensor(self):
        name = "text_model.encoder.layers.3.self_attn.out_proj.weight"
        _, _, _, (b, e) = self.entry(name)
        rc, rep, _ = self.verify(self.planted(name, 0, bytes(e - b)))
        self.assertEqual((rc, self.codes(rep)), (1, [("all-zero", name)]))

    def test_truncated_file(self):
        p = self.path("truncated.safetensors")
        shutil.copy(self.clean, p)
        os.truncate(p, os.path.getsize(p) - 1000)
        rc, rep, _ = self.verify(p)
        self.assertEqual(rc, 1)
        self.assertEqual(rep["findings"][0]["code"], "corrupt")
        self.assertIsNotNone(rep["findings"][0]["offset"])

    def test_float_position_ids(self):
        # A sparse CLIP-L with position_ids [1, 77] I64 rewritten as F32 [1, 154]: the same
        # bytes, a float type.
        p = self.path("te.safetensors")
        run("sample", "--layout", "sd15-diffusers-text_encoder", "--sparse", "-o", p)
        with open(p, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header["text_model.embeddings.position_ids"]["dtype"] = "F32"
        header["text_model.embeddings.position_ids"]["shape"] = [1, 154]
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        q = self.path("te-float.safetensors")
        with open(q, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
        rc, rep, _ = self.verify(q, "--structure-only")
        self.assertEqual(rc, 1)
        self.assertIn(("position-ids-float", "text_model.embeddings.position_ids"), self.codes(rep))

    def test_not_a_model_and_missing_file(self):
        p = self.path("lfs.safetensors")
        with open(p, "w") as f:
            f.write("version https://git-lfs.github.com/spec/v1\n"
                    "oid sha256:" + "a" * 64 + "\nsize 6938040682\n")
        rc, rep, _ = self.verify(p)
        self.assertEqual(rc, 1)
        self.assertIn(rep["findings"][0]["code"], ("not-a-model", "corrupt"))
        self.assertIn("LFS", rep["findings"][0]["message"])
        rc, rep, r = self.verify(self.path("missing.safetensors"))
        self.assertEqual(rc, 2)
        self.assertIn("error", rep)

    def test_lint_polyglot_and_leading_whitespace(self):
        tensors = [("w", "F32", [64], struct.pack("<58f", *[0.5] * 58) + b"PK\x05\x06" + bytes(20))]
        p = self.path("poly.safetensors")
        write_safetensors(p, tensors)
        rc, rep, _ = self.verify(p)
        self.assertEqual(rc, 1)
        self.assertIn("zip-polyglot", [c for c, _ in self.codes(rep)])
        # Leading whitespace in the header JSON: accepted by the reader, flagged by the lint.
        body = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                          separators=(",", ":")).encode()
        h = b"  " + body
        h += b" " * ((8 - len(h) % 8) % 8)
        q = self.path("ws.safetensors")
        with open(q, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + struct.pack("<2f", 1.0, 2.0))
        rc, rep, _ = self.verify(q)
        self.assertEqual(rc, 1)
        self.assertIn("header-leading-whitespace", [c for c, _ in self.codes(rep)])

    def test_several_files_worst_status_wins(self):
        bad = self.planted("text_model.final_layer_norm.weight", 0, F16_NAN)
        r = run("verify", self.clean, bad, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{self.clean}: ok", r.stdout)
        self.assertIn(f"{bad}: PROBLEMS", r.stdout)
        r = run("verify", self.clean, self.path("missing"), check=False)
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main()
