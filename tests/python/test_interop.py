"""Files ckptkit writes, read back by an independent reader and by PyTorch, checked against the
published layout tables (data/layouts/*.tsv) and the reference safetensors writer's rules; files
others write (other JSON styles, every dtype, awkward metadata), passed through ckptkit."""
import hashlib
import json
import os
import struct
import unittest

import numpy as np
import torch

from ckpt_testlib import (TempDirTest, read_safetensors, read_safetensors_header, run,
                          write_safetensors, write_safetensors_custom)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAYOUTS = os.path.join(ROOT, "data", "layouts")
# The reference writer's (huggingface/safetensors) Dtype enum in increasing order; it sorts
# tensors by it descending, then by name (byte order of the UTF-8 names).
RANK = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
        "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
        "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32,
        "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
FLOATS = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}


def layout_table(name):
    """[(name, dtype, shape)] in file order; an empty shape column is a 0-d scalar."""
    rows = []
    with open(os.path.join(LAYOUTS, name + ".tsv"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            tname, dtype, dims = line.split("\t")
            rows.append((tname, dtype, [int(d) for d in dims.split(",")] if dims else []))
    return rows


def layout_names():
    return sorted(f[:-4] for f in os.listdir(LAYOUTS) if f.endswith(".tsv"))


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def writer_key(name, dtype):
    return (-RANK.index(dtype), name.encode("utf-8"))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class StructureChecks(TempDirTest):
    def check_structure(self, path):
        """The rules every file a reference writer produces obeys; returns the header info."""
        h = read_safetensors_header(path)
        n, raw, entries = h["n"], h["raw"], h["entries"]
        self.assertEqual(n % 8, 0, "header length not a multiple of 8")
        body = raw.rstrip(b" ")
        self.assertTrue(body.startswith(b"{") and body.endswith(b"}"), raw[:40] + b"..." + raw[-40:])
        self.assertLess(n - len(body), 8, "more padding than needed")
        self.assertEqual(raw[len(body):], b" " * (n - len(body)), "padding is not spaces")
        names = [e[0] for e in entries]
        self.assertEqual(len(names), len(set(names)), "duplicate tensor names")
        for k, v in h["metadata"].items():
            self.assertIsInstance(k, str)
            self.assertIsInstance(v, str)
        pos = 0
        for name, dtype, shape, (b, e) in entries:
            self.assertEqual(b, pos, f"{name}: data does not start where the previous ended")
            self.assertEqual(e - b, numel(shape) * BITS[dtype] // 8, f"{name}: byte count")
            pos = e
        self.assertEqual(8 + n + pos, h["file_size"], "data section does not end the file")
        keys = [writer_key(name, dtype) for name, dtype, _, _ in entries]
        if keys != sorted(keys):
            i = next(i for i in range(len(keys) - 1) if keys[i] > keys[i + 1])
            self.fail(f"not in the reference writer's order at {entries[i][:2]} > {entries[i + 1][:2]}")
        return h

    def check_against_table(self, path, layout, dtype_override=None):
        h = self.check_structure(path)
        table = layout_table(layout)
        want = {}
        for name, dtype, shape in table:
            if dtype_override and dtype in FLOATS:
                dtype = dtype_override
            want[name] = (dtype, shape)
        got = {name: (dtype, shape) for name, dtype, shape, _ in h["entries"]}
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        self.assertFalse(missing or extra, f"{layout}: missing {missing[:5]} extra {extra[:5]}")
        self.assertEqual(len(h["entries"]), len(table))
        for name in want:
            self.assertEqual(got[name], want[name], f"{layout}: {name}")
        self.assertEqual(h["metadata"].get("ckptkit.sample.layout"), layout)
        return h


class WrittenByCkptkit(StructureChecks):
    def sample(self, layout, out, *extra):
        run("sample", "--layout", layout, "-o", out, "--no-sync", "--progress", "never", "-q", *extra)

    def test_list_is_the_published_tables(self):
        lines = run("sample", "--list").stdout.splitlines()
        listed = sorted(line.split()[0] for line in lines[1:] if line.strip())
        self.assertEqual(listed, layout_names())

    def test_clip_l_f16_read_back(self):
        path = self.path("clip-l.st")
        self.sample("clip-l", path, "--dtype", "f16", "--seed", "3")
        h = self.check_against_table(path, "clip-l", "F16")
        self.assertEqual(h["metadata"]["ckptkit.sample.seed"], "3")
        meta, tensors, _ = read_safetensors(path)
        self.assertEqual(meta, h["metadata"])
        self.assertEqual(len(tensors), len(layout_table("clip-l")))
        for name, (dtype, shape, raw) in tensors.items():
            self.assertEqual(len(raw), numel(shape) * 2, name)
        # Passing the file through ckptkit again changes nothing (it is already canonical).
        again = self.path("clip-l-keep.st")
        run("convert", path, "-o", again, "--dtype", "keep", "--no-sync", "-q")
        self.assertEqual(sha256(again), sha256(path))

    def test_sparse_sd15_ldm_header_only(self):
        path = self.path("sd15-ldm.st")
        self.sample("sd15-ldm", path, "--sparse")
        h = self.check_against_table(path, "sd15-ldm")
        self.assertGreater(h["file_size"], 4_000_000_000)
        self.assertLess(os.stat(path).st_blocks * 512, 4 << 20, "the data section is not sparse")

    def test_sparse_every_layout(self):
        for layout in layout_names():
            for override in (None, "BF16"):
                with self.subTest(layout=layout, dtype=override):
                    path = self.path(f"{layout}-{override}.st")
                    extra = ["--dtype", override.lower()] if override else []
                    self.sample(layout, path, "--sparse", "--seed", "9", *extra)
                    self.check_against_table(path, layout, override)
                    os.remove(path)

    # --- (b) PyTorch reads what ckptkit wrote ----------------------------------------------------

    def torch_tensors(self, path):
        _, tensors, _ = read_safetensors(path)
        tdt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
               "I64": torch.int64, "I32": torch.int32}
        return {name: torch.frombuffer(bytearray(raw), dtype=tdt[dtype]).reshape(shape) if raw
                else torch.empty(shape, dtype=tdt[dtype])
                for name, (dtype, shape, raw) in tensors.items()}

    def check_scales(self, sd, min_weights):
        weights = 0
        for name, t in sd.items():
            if not t.is_floating_point():
                continue
            f = t.float()
            self.assertTrue(torch.isfinite(f).all(), name)
            if f.dim() >= 2 and f.numel() >= 256:
                fan_in = f[0].numel()
                std, want = f.std().item(), fan_in ** -0.5
                self.assertTrue(want / 3 < std < want * 3, (name, list(f.shape), std, want))
                self.assertLess(abs(f.mean().item()), 0.1 * std, (name, "mean"))
                weights += 1
            elif f.dim() == 1 and name.endswith("bias"):
                self.assertLess(f.abs().max().item(), 1.0, (name, "bias scale"))
            elif f.dim() == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
                self.assertLess(abs(f.mean().item() - 1.0), 0.5, (name, "norm gain"))
        self.assertGreaterEqual(weights, min_weights)

    def test_torch_reads_text_encoder(self):
        for dtype in ("keep", "f16", "bf16"):
            with self.subTest(dtype=dtype):
                path = self.path(f"te-{dtype}.st")
                self.sample("sd15-diffusers-text_encoder", path, "--dtype", dtype, "--seed", "4")
                sd = self.torch_tensors(path)
                pos = sd["text_model.embeddings.position_ids"]
                self.assertEqual(pos.dtype, torch.int64)
                self.assertTrue(torch.equal(pos, torch.arange(77).reshape(1, 77)))
                self.check_scales(sd, 70)
                # A forward pass through the embeddings and the first block's attention input.
                tok = torch.nn.Embedding(49408, 768)
                tok.load_state_dict({"weight": sd["text_model.embeddings.token_embedding.weight"].float()})
                x = tok(torch.tensor([[49406, 320, 1125, 539, 49407]]))
                x = x + sd["text_model.embeddings.position_embedding.weight"].float()[pos[0, :5]]
                ln = torch.nn.LayerNorm(768)
                p = "text_model.encoder.layers.0.layer_norm1."
                ln.load_state_dict({"weight": sd[p + "weight"].float(), "bias": sd[p + "bias"].float()})
                q = torch.nn.Linear(768, 768)
                p = "text_model.encoder.layers.0.self_attn.q_proj."
                q.load_state_dict({"weight": sd[p + "weight"].float(), "bias": sd[p + "bias"].float()})
                y = q(ln(x))
                self.assertTrue(torch.isfinite(y).all())
                self.assertTrue(0.3 < y.std().item() < 3, y.std().item())
                os.remove(path)

    def test_torch_reads_conv_weights(self):
        path = self.path("vae.st")
        self.sample("sd15-diffusers-vae", path, "--dtype", "f16", "--seed", "5")
        sd = self.torch_tensors(path)
        convs = [n for n, t in sd.items() if t.dim() == 4]
        self.assertGreater(len(convs), 30)
        self.check_scales(sd, len(convs))
        w = sd["encoder.conv_in.weight"].float()
        y = torch.nn.functional.conv2d(torch.randn(1, 3, 16, 16), w, sd["encoder.conv_in.bias"].float(), padding=1)
        self.assertTrue(torch.isfinite(y).all())

    # --- (d) determinism ------------------------------------------------------------------------

    def test_determinism(self):
        def sample(tag, *extra):
            path = self.path(tag + ".st")
            self.sample("clip-l", path, "--dtype", "f16", *extra)
            return path

        a = sample("a", "--seed", "1")
        ha = sha256(a)
        for tag, extra in (("b", []), ("t1", ["--threads", "1"]), ("t2", ["--threads", "2"]),
                           ("m4", ["--max-memory", "4M"]), ("t1m4", ["--threads", "1", "--max-memory", "4M"])):
            with self.subTest(extra=extra):
                p = sample(tag, "--seed", "1", *extra)
                self.assertEqual(sha256(p), ha)
                os.remove(p)
        c = sample("c", "--seed", "2")
        self.assertNotEqual(sha256(c), ha)
        _, ta, _ = read_safetensors(a)
        _, tc, _ = read_safetensors(c)
        self.assertEqual(set(ta), set(tc))
        for name in ta:
            self.assertEqual(ta[name][:2], tc[name][:2], name)
            if ta[name][0] in FLOATS and numel(ta[name][1]) > 1:
                self.assertNotEqual(ta[name][2], tc[name][2], f"{name}: same data for seeds 1 and 2")
        del ta, tc
        # Converting is deterministic too, whatever the threads and memory.
        outs = []
        for tag, extra in (("cv1", []), ("cv2", ["--threads", "1", "--max-memory", "4M"]),
                           ("cv3", ["--threads", "2", "--max-memory", "4M"])):
            out = self.path(tag + ".st")
            run("convert", a, "-o", out, "--dtype", "bf16", "--no-sync", "-q", *extra)
            outs.append(sha256(out))
            os.remove(out)
        self.assertEqual(len(set(outs)), 1, outs)


def every_dtype_tensors(rng):
    """One tensor of every dtype the format defines, in a deliberately non-canonical order."""
    def rnd(n):
        return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
    return [
        ("z.last", "F16", [3, 4], rng.standard_normal(12).astype(np.float16).tobytes()),
        ("a.first", "F32", [5], rng.standard_normal(5).astype(np.float32).tobytes()),
        ("ids", "I64", [1, 7], np.arange(7, dtype=np.int64).tobytes()),
        ("m", "BF16", [2], b"\x80\x3f\xff\xff"),  # 1.0 and a NaN pattern kept as is
        ("flags", "BOOL", [4], bytes([1, 0, 0, 1])),
        ("q4", "F8_E4M3", [6], bytes([0x00, 0x7F, 0xFF, 0x38, 0x80, 0x7E])),
        ("q5", "F8_E5M2", [5], bytes([0x7C, 0xFC, 0x7D, 0x3C, 0x01])),
        ("scale", "F8_E8M0", [3], bytes([0x7F, 0xFF, 0x00])),
        ("packed4", "F4", [2, 2], b"\x12\x34"),
        ("packed6a", "F6_E2M3", [4], rnd(3)),
        ("packed6b", "F6_E3M2", [8], rnd(6)),
        ("c", "C64", [2], rnd(16)),
        ("scalar", "F64", [], struct.pack("<d", 0.25)),
        ("nan64", "F64", [2], struct.pack("<QQ", 0x7FF0000000000001, 0xFFF8000000000000)),
        ("snan32", "F32", [1], struct.pack("<I", 0x7F800001)),
        ("empty", "F32", [0, 8], b""),
        ("u8", "U8", [3], rnd(3)), ("i8", "I8", [3], rnd(3)),
        ("u16", "U16", [2], rnd(4)), ("i16", "I16", [2], rnd(4)),
        ("u32", "U32", [2], rnd(8)), ("i32", "I32", [], rnd(4)),
        ("u64", "U64", [2], rnd(16)),
        ("B", "F16", [1], b"\x00\x3c"), ("\u00e9t\u00e9", "F16", [1], b"\x00\xbc"),
        ("\u4e2d\u6587.weight", "F16", [1], b"\x00\x7c"), ("\U0001F600", "F16", [1], b"\x01\x7c"),
        ("\uff5e", "F16", [1], b"\x00\x00"),  # sorts before U+1F600 in UTF-8, after it in UTF-16
        ('quote"back\\slash/', "F16", [1], b"\x00\x80"),
    ]


AWKWARD_METADATA = {
    "title": "caf\u00e9 \u4e2d\u6587 \U0001F600 \u2028\u2029 \ufeff",
    "quote": 'say "hi" \\ back\\slash / </script>',
    "ctrl": "".join(chr(c) for c in range(32)) + "\x7f",
    "newlines": "a\nb\r\nc\td",
    "json": json.dumps({"a": [1, 2], "b": {"c": "d"}}),
    "empty": "",
    "\u00fcnicode key \U0001F680": "value",
    "format": "pt",
}


class WrittenByOthers(StructureChecks):
    def round_trip(self, tensors, meta, **style):
        src, out = self.path("in.st"), self.path("out.st")
        write_safetensors_custom(src, tensors, meta, **style)
        run("convert", src, "-o", out, "--dtype", "keep", "--no-sync", "--force", "-q")
        meta2, got, _ = read_safetensors(out)
        self.assertEqual(meta2, meta or {})
        self.assertEqual(sorted(got), sorted(t[0] for t in tensors))
        for name, dtype, shape, raw in tensors:
            self.assertEqual(got[name], (dtype, shape, raw), name)
        self.check_structure(out)
        # Once canonical, another pass is the identity on the whole file.
        out2 = self.path("out2.st")
        run("convert", out, "-o", out2, "--dtype", "keep", "--no-sync", "--force", "-q")
        with open(out, "rb") as f1, open(out2, "rb") as f2:
            self.assertEqual(f1.read(), f2.read(), "second pass changed the file")
        return out

    def test_keep_round_trip_every_dtype_and_awkward_metadata(self):
        rng = np.random.default_rng(5)
        tensors = every_dtype_tensors(rng)
        styles = {"compact-ascii": {},
                  "utf8-spaces-unpadded": {"ensure_ascii": False, "separators": (", ", ": "), "pad": False},
                  "metadata-last": {"metadata_last": True, "ensure_ascii": False}}
        for label, style in styles.items():
            with self.subTest(style=label):
                self.round_trip(tensors, AWKWARD_METADATA, **style)

    def test_keep_round_trip_without_metadata(self):
        tensors = every_dtype_tensors(np.random.default_rng(6))
        out = self.round_trip(tensors, None)
        self.assertEqual(read_safetensors_header(out)["metadata"], {})

    def test_empty_metadata_key(self):
        """The reference reads any string->string map; an empty key is a string."""
        tensors = [("w", "F32", [2], np.float32([1, 2]).tobytes())]
        self.round_trip(tensors, {"": "empty key", "k": ""})

    def test_torch_values_convert_like_torch(self):
        """A state dict serialized by hand from torch tensors converts as torch.to would."""
        torch.manual_seed(0)
        sd = {"conv.weight": torch.randn(8, 4, 3, 3), "norm.bias": torch.randn(8) * 1e-3,
              "big": torch.randn(1000) * 7e4, "tiny": torch.randn(1000) * 1e-6}
        src = self.path("sd.st")
        write_safetensors(src, [(k, "F32", list(v.shape), v.numpy().tobytes()) for k, v in sd.items()])
        for dst, tdt in (("bf16", torch.bfloat16), ("f16", torch.float16)):
            with self.subTest(dtype=dst):
                out = self.path(f"sd-{dst}.st")
                run("convert", src, "-o", out, "--dtype", dst, "--no-sync", "-q")
                _, got, _ = read_safetensors(out)
                for k, v in sd.items():
                    self.assertEqual(got[k][:2], (dst.upper(), list(v.shape)), k)
                    self.assertEqual(got[k][2], v.to(tdt).view(torch.int16).numpy().tobytes(), k)


if __name__ == "__main__":
    unittest.main()
