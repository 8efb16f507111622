"""`ckptkit hash` and `ckptkit meta`, and inspect's per-component fingerprints.

Oracles: coreutils `sha256sum`, `openssl dgst`, Python's hashlib and zlib, `b3sum` (the BLAKE3
team's tool), the AutoV1/legacy formulas as A1111 and kohya's scripts compute them (a few lines
of Python here), and files written by this test's own safetensors writer."""
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from ckpt_testlib import TempDirTest, read_safetensors_header, run, write_safetensors  # noqa: E402

MIB = 1 << 20


def autov1(data):
    """A1111's model_hash: SHA-256 of what file.read(0x10000) returns after seek(0x100000)."""
    return hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def random_tensors(seed, sizes, dtype="F16"):
    rng = random.Random(seed)
    out = []
    for i, n in enumerate(sizes):
        out.append((f"layer.{i:02d}.weight", dtype, [n // 2], rng.randbytes(n)))
    return sorted(out, key=lambda t: t[0])  # one dtype: the reference order is by name


def data_section(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return data, data[8 + n:]


class HashTest(TempDirTest):
    def write_model(self, name, seed=1, sizes=(700_000, 900_000, 300_000), metadata=None):
        p = self.path(name)
        write_safetensors(p, random_tensors(seed, sizes), metadata)
        return p

    def test_every_hash_against_independent_tools(self):
        p = self.write_model("m.safetensors", metadata={"title": "x"})
        data, section = data_section(p)
        out = json.loads(run("hash", "--algo", "all", "--json", p).stdout)[0]["hashes"]
        sha = hashlib.sha256(data).hexdigest()
        self.assertEqual(out["sha256"], sha)
        self.assertEqual(out["sha256"], subprocess.run(["sha256sum", p], capture_output=True,
                                                       text=True).stdout.split()[0])
        openssl = subprocess.run(["openssl", "dgst", "-sha256", "-r", p], capture_output=True,
                                 text=True).stdout.split()[0]
        self.assertEqual(out["sha256"], openssl)
        self.assertEqual(out["autov1"], autov1(data))
        self.assertEqual(out["autov2"], sha[:10])
        self.assertEqual(out["autov3"], hashlib.sha256(section).hexdigest()[:12])
        self.assertEqual(out["crc32"], f"{zlib.crc32(data):08x}")
        b3 = shutil.which("b3sum")
        self.assertIsNotNone(b3, "b3sum (Debian package b3sum) is a test dependency")
        self.assertEqual(out["blake3"], subprocess.run([b3, "--no-names", p], capture_output=True,
                                                       text=True).stdout.strip())

    def test_sha256sum_format_and_several_files_in_order(self):
        paths = [self.write_model(f"m{i}.safetensors", seed=i, sizes=(1000 + i,)) for i in range(5)]
        out = run("hash", *paths).stdout.splitlines()
        self.assertEqual(len(out), 5)
        for line, p in zip(out, paths):
            with open(p, "rb") as f:
                self.assertEqual(line, f"{hashlib.sha256(f.read()).hexdigest()}  {p}")

    def test_chunk_boundaries(self):
        # Sizes around the reader's 8 MiB buffers and the 1 MiB AutoV1 window.
        for size in (0, 1, 8 * MIB - 1, 8 * MIB, 8 * MIB + 1, 3 * 8 * MIB + 5):
            p = self.path(f"blob{size}")
            with open(p, "wb") as f:
                f.write(random.Random(size).randbytes(size))
            with open(p, "rb") as f:
                data = f.read()
            out = json.loads(run("hash", "--algo", "sha256,crc32,blake3", "--json", p).stdout)[0]
            self.assertEqual(out["hashes"]["sha256"], hashlib.sha256(data).hexdigest(), size)
            self.assertEqual(out["hashes"]["crc32"], f"{zlib.crc32(data):08x}", size)
            b3 = subprocess.run(["b3sum", "--no-names", p], capture_output=True, text=True)
            self.assertEqual(out["hashes"]["blake3"], b3.stdout.strip(), size)

    def test_autov1_on_short_files(self):
        # Defined as A1111 reads it: what the file has of the window [1 MiB, 1 MiB + 64 KiB).
        for size in (0, 100, MIB, MIB + 1, MIB + 65535, MIB + 65536, MIB + 70000):
            p = self.path(f"short{size}")
            with open(p, "wb") as f:
                f.write(random.Random(size).randbytes(size))
            with open(p, "rb") as f:
                want = autov1(f.read())
            got = json.loads(run("hash", "--algo", "autov1", "--json", p).stdout)[0]
            self.assertEqual(got["hashes"]["autov1"], want, size)
        self.assertEqual(autov1(b""), hashlib.sha256(b"").hexdigest()[:8])

    def test_autov3_not_defined_for_other_files_but_the_rest_is(self):
        p = self.path("notes.txt")
        with open(p, "w") as f:
            f.write("not a model\n" * 1000)
        r = run("hash", "--algo", "sha256,autov3", "--json", p)
        out = json.loads(r.stdout)[0]
        self.assertIsNone(out["hashes"]["autov3"])
        self.assertIn("safetensors", out["not_defined"]["autov3"])
        with open(p, "rb") as f:
            self.assertEqual(out["hashes"]["sha256"], hashlib.sha256(f.read()).hexdigest())
        r = run("hash", "--algo", "autov3", p)
        self.assertEqual(r.stdout, f"n/a  {p}\n")
        self.assertIn("not defined", r.stderr)

    def test_unreadable_file_is_exit_2_and_the_others_are_hashed(self):
        good = self.write_model("good.safetensors")
        r = run("hash", self.path("missing.safetensors"), good, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.safetensors", r.stderr)
        with open(good, "rb") as f:
            self.assertIn(hashlib.sha256(f.read()).hexdigest(), r.stdout)

    def kohya_file(self, extra_metadata, legacy=None, model=None):
        """A file as kohya's scripts write it: sshs hashes computed on the file saved with only
        its ss_* metadata, then saved with all of it."""
        tensors = random_tensors(7, (600_000, 700_000, 500_000))
        ss = {"ss_network_dim": "32", "ss_output_name": "my-lora"}
        plain = self.path("plain.safetensors")
        write_safetensors(plain, tensors, ss)
        data, section = data_section(plain)
        meta = dict(ss)
        meta["sshs_model_hash"] = model or hashlib.sha256(section).hexdigest()
        meta["sshs_legacy_hash"] = legacy or autov1(data)
        meta.update(extra_metadata)
        p = self.path("kohya.safetensors")
        write_safetensors(p, tensors, meta)
        return p

    def test_embedded_kohya_hashes_match(self):
        p = self.kohya_file({"modelspec.title": "a much longer title " * 20})
        r = run("hash", p)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("sshs_model_hash matches", r.stdout)
        self.assertIn("sshs_legacy_hash matches", r.stdout)
        # The legacy hash is not the AutoV1 of this file (its header is longer).
        with open(p, "rb") as f:
            self.assertNotEqual(autov1(f.read()),
                                read_safetensors_header(p)["metadata"]["sshs_legacy_hash"])

    def test_embedded_mismatch_is_exit_1(self):
        p = self.kohya_file({}, model="0" * 64)
        r = run("hash", "--json", p, check=False)
        self.assertEqual(r.returncode, 1)
        emb = {e["key"]: e for e in json.loads(r.stdout)[0]["embedded"]}
        self.assertFalse(emb["sshs_model_hash"]["matches"])
        self.assertTrue(emb["sshs_legacy_hash"]["matches"])
        _, section = data_section(p)
        self.assertEqual(emb["sshs_model_hash"]["computed"], hashlib.sha256(section).hexdigest())

    def test_verify_reports_an_embedded_mismatch(self):
        # (The random bytes hold NaN patterns, so verify fails these files anyway; what
        # matters here is which hash findings it gives.)
        good = self.kohya_file({})
        rep = json.loads(run("verify", "--json", good, check=False).stdout)[0]
        self.assertIn("nan", [f["code"] for f in rep["findings"]])
        self.assertNotIn("embedded-hash-mismatch", [f["code"] for f in rep["findings"]])
        bad = self.kohya_file({}, legacy="deadbeef")
        r = run("verify", "--json", bad, check=False)
        self.assertEqual(r.returncode, 1)
        found = [f for f in json.loads(r.stdout)[0]["findings"]
                 if f["code"] == "embedded-hash-mismatch"]
        self.assertEqual(len(found), 1)
        self.assertIn("sshs_legacy_hash", found[0]["message"])

    def test_modelspec_hash_of_the_tensor_data(self):
        p = self.write_model("m.safetensors")
        _, section = data_section(p)
        q = self.write_model("spec.safetensors", metadata={
            "modelspec.hash_sha256": "0x" + hashlib.sha256(section).hexdigest()})
        emb = json.loads(run("hash", "--json", q).stdout)[0]["embedded"]
        self.assertEqual(emb[0]["key"], "modelspec.hash_sha256")
        self.assertTrue(emb[0]["matches"])


class MetaTest(TempDirTest):
    def test_show(self):
        p = self.path("m.safetensors")
        write_safetensors(p, random_tensors(3, (1000,)), {"b": "2", "a": "1"})
        self.assertEqual(run("meta", p).stdout, "a: 1\nb: 2\n")
        self.assertEqual(json.loads(run("meta", "--json", p).stdout), {"a": "1", "b": "2"})

    def test_edit_keeps_the_data_section_and_autov3(self):
        p = self.path("m.safetensors")
        # Not in the reference order on purpose: the data must still be copied as it is.
        tensors = list(reversed(random_tensors(4, (300_000, 200_000, 100_000))))
        write_safetensors(p, tensors, {"keep": "1", "drop": "2", "ss_x": "3"})
        js = self.path("more.json")
        with open(js, "w") as f:
            json.dump({"from_json": "yes", "keep": "overridden-by-set"}, f)
        out = self.path("edited.safetensors")
        run("meta", p, "--set", "keep=new", "--set", "title=é ü", "--delete", "drop",
            "--from-json", js, "-o", out)
        meta = read_safetensors_header(out)["metadata"]
        self.assertEqual(meta, {"keep": "new", "title": "é ü", "from_json": "yes", "ss_x": "3"})
        _, before = data_section(p)
        _, after = data_section(out)
        self.assertEqual(before, after)
        self.assertEqual([e[0] for e in read_safetensors_header(out)["entries"]],
                         [t[0] for t in tensors])
        h = [json.loads(run("hash", "--algo", "autov3", "--json", f).stdout)[0]["hashes"]["autov3"]
             for f in (p, out)]
        self.assertEqual(h[0], h[1])
        self.assertEqual(h[0], hashlib.sha256(before).hexdigest()[:12])
        # The input is unchanged.
        self.assertEqual(read_safetensors_header(p)["metadata"],
                         {"keep": "1", "drop": "2", "ss_x": "3"})

    def test_edit_needs_output_and_refuses_pytorch_files(self):
        p = self.path("m.safetensors")
        write_safetensors(p, random_tensors(3, (1000,)), {"a": "1"})
        r = run("meta", p, "--set", "a=2", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("-o", r.stderr)
        r = run("meta", p, "--set", "novalue", "-o", self.path("x.safetensors"), check=False)
        self.assertEqual(r.returncode, 2)
        self.assertFalse(os.path.exists(self.path("x.safetensors")))
        import torch
        ck = self.path("m.ckpt")
        torch.save({"w": torch.zeros(4)}, ck)
        r = run("meta", ck, "--set", "a=1", "-o", self.path("y.safetensors"), check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("convert", r.stderr)
        self.assertFalse(os.path.exists(self.path("y.safetensors")))


class FingerprintTest(TempDirTest):
    def components(self, path):
        out = json.loads(run("inspect", "--json", "--fingerprint", path).stdout)
        return {(c["role"], c["kind"]): c["sha256"] for c in out["components"]}

    def test_a_part_fingerprints_the_same_wherever_it_sits(self):
        full = self.path("clip.safetensors")
        run("sample", "--layout", "sdxl-sgm", "--sparse", "-o", full)
        # Give CLIP-G's OpenCLIP tensors real values so the conversion is part of the hash.
        hdr = read_safetensors_header(full)
        base = 8 + hdr["n"]
        rng = random.Random(5)
        with open(full, "r+b") as f:
            for name, _, _, (b, e) in hdr["entries"]:
                if name.startswith("conditioner.embedders.1.model.") and e - b <= (4 << 20):
                    f.seek(base + b)
                    f.write(rng.randbytes(e - b))
        parts = self.path("parts")
        run("split", full, "-o", parts, "--name", "m")
        mono = self.components(full)
        g = self.components(os.path.join(parts, "text_encoders", "m-clip_g.safetensors"))
        vae = self.components(os.path.join(parts, "vae", "m-vae.safetensors"))
        self.assertEqual(mono[("text_encoder", "clip-g")], g[("text_encoder", "clip-g")])
        self.assertEqual(mono[("vae", "vae")], vae[("vae", "vae")])
        self.assertNotEqual(mono[("text_encoder", "clip-g")], mono[("text_encoder", "clip-l")])
        # One byte changed in one VAE tensor: another fingerprint.
        changed = self.path("changed-vae.safetensors")
        shutil.copy(os.path.join(parts, "vae", "m-vae.safetensors"), changed)
        h = read_safetensors_header(changed)
        with open(changed, "r+b") as f:
            f.seek(8 + h["n"] + h["entries"][-1][3][0])
            f.write(b"\x01")
        self.assertNotEqual(self.components(changed)[("vae", "vae")], mono[("vae", "vae")])

if __name__ == "__main__":
    unittest.main()
