"""`split --quant` and GGUF inputs to split/assemble, against real ggml (the oracle library of
test_gguf_convert.py) and the published SD3/SD1 layouts:

* split of an SD3 file writes the MMDiT and the T5-XXL as GGUF parts whose quantized tensors
  equal ggml_quantize_chunk of the source values (reference path for comfyui, all-ones
  importance for sdcpp), opened by ggml's own gguf reader, under the names each loader reads;
  CLIP and the VAE are safetensors parts whose bytes are the source's;
* a quantized GGUF split or assembled into safetensors holds ggml's dequantized values;
* the refusals leave nothing behind.

The inputs are sparse files of the published layouts (data/layouts) written here from the
format specification, holes except a few tensors filled with random values."""
import os
import unittest

import numpy as np

from ckpt_testlib import (TempDirTest, layout_table, read_safetensors_header, run,
                          write_sparse_safetensors)
from test_gguf_convert import BLOCK, ggml_dequantize, ggml_open, ggml_quantize, inspect

DM_QKV = "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"  # F16 [4608, 1536]
T5_Q = "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"  # F16
CLIP_Q = "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"


def kv_of(doc):
    return {k["key"]: k for k in doc["gguf"]["kv"]}


def tensor_bytes(path, offset, size):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def safetensors_tensor(path, name):
    h = read_safetensors_header(path)
    for n, dtype, shape, (b, e) in h["entries"]:
        if n == name:
            return dtype, shape, tensor_bytes(path, 8 + h["n"] + b, e - b)
    raise AssertionError(f"{name} not in {path}")


class SplitQuant(TempDirTest):
    def sd3(self):
        rng = np.random.default_rng(11)
        self.values = {
            DM_QKV: rng.normal(0, 0.03, (4608, 1536)).astype("<f2"),
            T5_Q: rng.normal(0, 0.2, (4096, 4096)).astype("<f2"),
            CLIP_Q: rng.normal(0, 0.05, (768, 768)).astype("<f2"),
        }
        self.values[DM_QKV][7, :] = 0  # a row of zero blocks
        src = self.path("sd3.safetensors")
        write_sparse_safetensors(src, layout_table("sd3-medium"),
                                 {k: v.tobytes() for k, v in self.values.items()},
                                 {"modelspec.title": "unit sd3"})
        return src

    def check_gguf_tensor(self, path, name, values, imatrix_ones):
        doc = inspect(path)
        ours = {t["name"]: t for t in doc["tensor_list"]}
        seen = ggml_open(path)
        self.assertEqual([s[0] for s in seen], [t["name"] for t in doc["tensor_list"]])
        for n, gtype, offset, size in seen:
            self.assertEqual(ours[n]["file_offset"], offset, n)
        t = ours[name]
        self.assertIn(t["dtype"], BLOCK, name)
        want = ggml_quantize(t["dtype"], values.astype("<f4"), imatrix_ones)
        self.assertEqual(tensor_bytes(path, t["file_offset"], len(want)), want,
                         f"{name} ({t['dtype']}) differs from ggml")
        return doc, ours

    def split(self, scheme, target):
        src = self.sd3()
        out = self.path(f"models-{target}")
        run("split", src, "-o", out, "--quant", scheme, "--target", target, "--no-sync", "-q")
        tag = scheme.upper()
        files = sorted(os.path.relpath(os.path.join(d, f), out)
                       for d, _, fs in os.walk(out) for f in fs)
        self.assertEqual(files, [f"diffusion_models/sd3-{tag}.gguf",
                                 "text_encoders/sd3-clip_g.safetensors",
                                 "text_encoders/sd3-clip_l.safetensors",
                                 f"text_encoders/sd3-t5xxl-{tag}.gguf",
                                 "vae/sd3-vae.safetensors"])
        imatrix = target == "sdcpp"
        dm = os.path.join(out, "diffusion_models", f"sd3-{tag}.gguf")
        doc, ours = self.check_gguf_tensor(dm, "joint_blocks.0.x_block.attn.qkv.weight",
                                           self.values[DM_QKV], imatrix)
        # The MMDiT alone, its single-file prefix stripped (both loaders' convention).
        self.assertEqual(len(ours), 491)
        self.assertFalse(any(n.startswith("model.") for n in ours))
        self.assertEqual(kv_of(doc)["general.architecture"]["value"], "sd3")
        self.assertEqual(doc["architecture"], "sd3-medium")
        t5 = os.path.join(out, "text_encoders", f"sd3-t5xxl-{tag}.gguf")
        doc, ours = self.check_gguf_tensor(t5, "enc.blk.0.attn_q.weight", self.values[T5_Q],
                                           imatrix)
        kv = kv_of(doc)
        self.assertEqual(kv["general.architecture"]["value"], "t5encoder")
        self.assertEqual(kv["t5encoder.block_count"]["value"], 24)
        self.assertEqual(doc["components"][0]["kind"], "t5xxl")
        self.assertNotIn("logit_scale", ours)
        # CLIP stays safetensors, in Hugging Face names, with the source's bytes.
        dtype, shape, raw = safetensors_tensor(
            os.path.join(out, "text_encoders", "sd3-clip_l.safetensors"),
            "text_model.encoder.layers.0.self_attn.q_proj.weight")
        self.assertEqual((dtype, shape), ("F16", [768, 768]))
        self.assertEqual(raw, self.values[CLIP_Q].tobytes())
        return out

    def test_comfyui_q4_k_m(self):
        self.split("q4_k_m", "comfyui")

    def test_sdcpp_q5_0(self):
        self.split("q5_0", "sdcpp")

    def test_assemble_back_from_gguf_parts(self):
        out = self.split("q8_0", "comfyui")
        dm = os.path.join(out, "diffusion_models", "sd3-Q8_0.gguf")
        t5 = os.path.join(out, "text_encoders", "sd3-t5xxl-Q8_0.gguf")
        te = os.path.join(out, "text_encoders")
        whole = self.path("sd3-back.safetensors")
        p = run("assemble", "--unet", dm, "--clip-l", os.path.join(te, "sd3-clip_l.safetensors"),
                "--clip-g", os.path.join(te, "sd3-clip_g.safetensors"), "--t5xxl", t5,
                "--vae", os.path.join(out, "vae", "sd3-vae.safetensors"), "-o", whole,
                "--no-sync")
        self.assertIn("dequantized exactly", p.stderr)
        self.assertEqual(inspect(whole)["architecture"], "sd3-medium")
        ours = {t["name"]: t for t in inspect(dm)["tensor_list"]}
        for name, part, gguf_name in [(DM_QKV, dm, "joint_blocks.0.x_block.attn.qkv.weight"),
                                      (T5_Q, t5, "enc.blk.0.attn_q.weight")]:
            if part == t5:
                ours = {t["name"]: t for t in inspect(t5)["tensor_list"]}
            t = ours[gguf_name]
            n = int(np.prod(t["shape"]))
            size = n // BLOCK[t["dtype"]][0] * BLOCK[t["dtype"]][1]
            want = ggml_dequantize(t["dtype"], tensor_bytes(part, t["file_offset"], size), n)
            dtype, shape, raw = safetensors_tensor(whole, name)
            self.assertEqual((dtype, shape), ("F32", t["shape"]), name)
            self.assertEqual(raw, want.tobytes(), name)


class GgufInputs(TempDirTest):
    def test_split_quantized_gguf_dequantizes_exactly(self):
        rng = np.random.default_rng(5)
        name = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
        q = rng.normal(0, 0.05, (768, 768)).astype("<f4")
        src = write_sparse_safetensors(self.path("sd15.safetensors"), layout_table("sd15-ldm"),
                                       {name: q.tobytes()})
        gguf = self.path("sd15-q8_0.gguf")
        run("convert", src, "-o", gguf, "--quant", "q8_0", "--target", "sdcpp", "--no-sync", "-q")
        t = {x["name"]: x for x in inspect(gguf)["tensor_list"]}[name]
        self.assertEqual(t["dtype"], "Q8_0")
        blocks = tensor_bytes(gguf, t["file_offset"], 768 * 768 // 32 * 34)
        out = self.path("parts")
        p = run("split", gguf, "-o", out, "--no-sync")
        self.assertIn("dequantized exactly", p.stderr)
        dtype, shape, raw = safetensors_tensor(
            os.path.join(out, "text_encoders", "sd15-q8_0-clip_l.safetensors"),
            "text_model.encoder.layers.0.self_attn.q_proj.weight")
        self.assertEqual((dtype, shape), ("F32", [768, 768]))
        self.assertEqual(raw, ggml_dequantize("Q8_0", blocks, 768 * 768).tobytes())
        # Not the source values: Q8_0 is lossy, so the check above is not a copy.
        self.assertNotEqual(raw, q.tobytes())


class Refusals(TempDirTest):
    def test_nothing_written(self):
        src = write_sparse_safetensors(self.path("sd3.safetensors"), layout_table("sd3-medium"),
                                       {})
        for args, expect in [
                (["split", src, "-o", self.path("a"), "--target", "sdcpp"], "needs --quant"),
                (["split", src, "-o", self.path("b"), "--quant", "q4_k_x"], "q8_0, q6_k"),
                (["prune", src, "-o", self.path("c.gguf")], "writes safetensors, not GGUF"),
                (["convert", src, "-o", self.path("d.gguf")], "needs --quant"),
        ]:
            with self.subTest(args=args):
                p = run(*args, check=False)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(expect, p.stderr)
                self.assertEqual(sorted(os.listdir(self.tmp)), ["sd3.safetensors"])


if __name__ == "__main__":
    unittest.main()
