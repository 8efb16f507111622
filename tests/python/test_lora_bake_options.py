"""Options of `lora bake`. Per-block strength (`--block NAME=X`, `--block-weights STRING`):
modules on a block's tensors get strength x X, exactly as a bake at that strength would give,
and the other blocks are untouched by it; an unknown block is refused.

`lora bake --dtype f8_e4m3 --fp8-rounding stochastic`: a delta smaller than half an FP8 step
vanishes with round-to-nearest but survives on average with stochastic rounding: every value
is one of its two FP8 neighbours, the share rounded up matches the distance (0.03 / 0.125 of
the way from 1.0 to 1.125), the bytes are reproducible for a seed and differ for another."""
import json
import os
import unittest

import numpy as np

import ggml_oracle

from ckpt_testlib import (TempDirTest, layout_table, read_safetensors_header, run,
                          write_safetensors, write_sparse_safetensors)

Q = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def e4m3(byte):
    """Decodes an F8_E4M3 (fn) byte, written from the format's definition."""
    s = -1.0 if byte & 0x80 else 1.0
    e, m = (byte >> 3) & 0xF, byte & 7
    if e == 0:
        return s * m / 8 * 2.0 ** -6
    return s * (1 + m / 8) * 2.0 ** (e - 7)


K2 = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn1.to_k.weight"
MODULE2 = "lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_k"


class BakeBlocks(TempDirTest):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(5)
        self.base = write_sparse_safetensors(
            self.path("base.safetensors"), layout_table("sd15-ldm"),
            {Q: rng.normal(0, 0.05, (320, 320)).astype(np.float32).tobytes(),
             K2: rng.normal(0, 0.05, (320, 320)).astype(np.float32).tobytes()})
        self.lora = self.path("lora.safetensors")
        t = []
        for m in (MODULE, MODULE2):
            t += [(m + ".lora_down.weight", "F32", [4, 320], rng.normal(0, 0.1, (4, 320)).astype(np.float32).tobytes()),
                  (m + ".lora_up.weight", "F32", [320, 4], rng.normal(0, 0.1, (320, 4)).astype(np.float32).tobytes()),
                  (m + ".alpha", "F32", [], np.float32(2).tobytes())]
        write_safetensors(self.lora, t)

    def tensors(self, name, *args, lora=None):
        out = self.path(name)
        run("lora", "bake", self.base, lora or self.lora, "-o", out, "-q", *args)
        h = read_safetensors_header(out)
        got = {}
        with open(out, "rb") as f:
            for n, _, _, (b, e) in h["entries"]:
                if n in (Q, K2):
                    f.seek(8 + h["n"] + b)
                    got[n] = f.read(e - b)
        return got

    def test_block_strength_is_a_strength_on_that_block(self):
        full = self.tensors("full.safetensors")
        half = self.tensors("half.safetensors", lora=self.lora + ":0.5")
        blk = self.tensors("blk.safetensors", "--block", "IN01=0.5")
        self.assertEqual(blk[Q], half[Q])
        self.assertNotEqual(blk[Q], full[Q])
        self.assertEqual(blk[K2], full[K2])
        # supermerger string: BASE, IN00…IN11, M00, OUT00…OUT11; IN01 is the third value.
        w = ["1"] * 26
        w[2] = "0.5"
        s = self.tensors("str.safetensors", "--block-weights", ",".join(w))
        self.assertEqual(s, blk)
        # --block overrides the string.
        o = self.tensors("ovr.safetensors", "--block-weights", ",".join(w), "--block", "IN01=1")
        self.assertEqual(o, full)

    def test_unknown_block_is_refused(self):
        out = self.path("x.safetensors")
        p = run("lora", "bake", self.base, self.lora, "-o", out, "--block", "double_blocks.3=0",
                check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no block double_blocks.3", p.stderr)
        self.assertIn("OUT11", p.stderr)
        self.assertFalse(os.path.exists(out))


class BakeGguf(TempDirTest):
    """`lora bake --quant` equals bake to safetensors, then `convert --quant`, tensor for tensor
    as real ggml's gguf reader sees both files (convert's quantization is the one checked
    against ggml_quantize_chunk in test_gguf_convert)."""

    def ggml_tensors(self, path):
        lib = ggml_oracle.lib()
        ctx = lib.gguf_init_from_file(path.encode(), ggml_oracle.GgufInitParams(True, None))
        self.assertTrue(ctx, f"ggml rejected {path}")
        try:
            base = lib.gguf_get_data_offset(ctx)
            rows = [(lib.gguf_get_tensor_name(ctx, i).decode(), lib.gguf_get_tensor_type(ctx, i),
                     base + lib.gguf_get_tensor_offset(ctx, i), lib.gguf_get_tensor_size(ctx, i))
                    for i in range(lib.gguf_get_n_tensors(ctx))]
        finally:
            lib.gguf_free(ctx)
        out = {}
        with open(path, "rb") as f:
            for name, typ, off, size in rows:
                f.seek(off)
                out[name] = (typ, f.read(size))
        return out

    def test_bake_then_quantize_in_one_go(self):
        rng = np.random.default_rng(9)
        rows = [(n, "F16" if n in (Q, K2) else dt, s) for n, dt, s in layout_table("sd15-ldm")]
        base = write_sparse_safetensors(
            self.path("base.safetensors"), rows,
            {Q: rng.normal(0, 0.05, (320, 320)).astype(np.float16).tobytes(),
             K2: rng.normal(0, 0.05, (320, 320)).astype(np.float16).tobytes()})
        lora = self.path("lora.safetensors")
        write_safetensors(lora, [
            (MODULE + ".lora_down.weight", "F32", [4, 320], rng.normal(0, 0.1, (4, 320)).astype(np.float32).tobytes()),
            (MODULE + ".lora_up.weight", "F32", [320, 4], rng.normal(0, 0.1, (320, 4)).astype(np.float32).tobytes()),
            (MODULE + ".alpha", "F32", [], np.float32(2).tobytes())])
        baked = self.path("baked.safetensors")
        run("lora", "bake", base, lora + ":0.7", "-o", baked, "-q")
        run("convert", baked, "-o", self.path("two-steps.gguf"), "--quant", "q8_0", "-q")
        run("lora", "bake", base, lora + ":0.7", "-o", self.path("one-go.gguf"), "--quant", "q8_0", "-q")
        run("convert", base, "-o", self.path("unbaked.gguf"), "--quant", "q8_0", "-q")
        two = self.ggml_tensors(self.path("two-steps.gguf"))
        one = self.ggml_tensors(self.path("one-go.gguf"))
        unbaked = self.ggml_tensors(self.path("unbaked.gguf"))
        self.assertEqual(one, two)
        q = Q[len("model.diffusion_model."):]
        self.assertEqual(one[q][0], 8)  # Q8_0
        self.assertNotEqual(one[q], unbaked[q])
        k2 = K2[len("model.diffusion_model."):]
        self.assertEqual(one[k2], unbaked[k2])
        p = run("lora", "bake", base, lora, "-o", self.path("x.safetensors"), "--quant", "q8_0",
                check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn(".gguf", p.stderr)


class BakeDora(TempDirTest):
    """DoRA modules (docs/lora.md): Wc = W + (up @ down) * alpha / rank; the norm of each row of
    Wc (magnitude with one value per output, LyCORIS's wd_on_output and PEFT) or of each column
    (one value per input); W' = W + strength * (Wc * m / norm - W). torch 1.13 computes the same
    formula; the norms' summation order differs, hence a float tolerance."""

    def test_dora_rows_and_columns(self):
        import torch
        rng = np.random.default_rng(4)
        w = {Q: rng.normal(0, 0.05, (320, 320)).astype(np.float32),
             K2: rng.normal(0, 0.05, (320, 320)).astype(np.float32)}
        base = write_sparse_safetensors(self.path("base.safetensors"), layout_table("sd15-ldm"),
                                        {n: v.tobytes() for n, v in w.items()})
        lora = self.path("dora.safetensors")
        f = {}
        t = []
        for m, shape in ((MODULE, (320, 1)), (MODULE2, (1, 320))):
            down = rng.normal(0, 0.1, (4, 320)).astype(np.float32)
            up = rng.normal(0, 0.1, (320, 4)).astype(np.float32)
            mag = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            f[m] = (up, down, mag)
            t += [(m + ".lora_down.weight", "F32", [4, 320], down.tobytes()),
                  (m + ".lora_up.weight", "F32", [320, 4], up.tobytes()),
                  (m + ".alpha", "F32", [], np.float32(2).tobytes()),
                  (m + ".dora_scale", "F32", list(shape), mag.tobytes())]
        write_safetensors(lora, t)
        out = self.path("out.safetensors")
        run("lora", "bake", base, lora + ":0.8", "-o", out, "-q")
        h = read_safetensors_header(out)
        got = {}
        with open(out, "rb") as fh:
            for n, _, _, (b, e) in h["entries"]:
                if n in w:
                    fh.seek(8 + h["n"] + b)
                    got[n] = np.frombuffer(fh.read(e - b), "<f4").reshape(320, 320)
        for name, m, dim in ((Q, MODULE, 1), (K2, MODULE2, 0)):
            up, down, mag = (torch.from_numpy(a) for a in f[m])
            W = torch.from_numpy(w[name])
            wc = W + (up @ down) * (2 / 4)
            norm = wc.norm(dim=dim, keepdim=True)
            want = W + 0.8 * (wc * (mag / norm) - W)
            np.testing.assert_allclose(got[name], want.numpy(), rtol=2e-5, atol=1e-7)
            # Not a plain LoRA: the decomposition changed the result.
            plain = W + 0.8 * (up @ down) * 0.5
            self.assertGreater(float((torch.from_numpy(got[name].copy()) - plain).abs().max()), 1e-3)


class BakeTuckerLycoris(TempDirTest):
    """LoHa and LoKr with Tucker cores on a 3x3 convolution (LyCORIS's einsum
    'i j k l, j r, i p -> p r k l'), against torch.einsum: LoHa ΔW = m1 ⊙ m2 · alpha / rank,
    LoKr ΔW = kron(w1, w2) · alpha / rank with w2 from its core."""

    def test_tucker_loha_and_lokr(self):
        import torch
        rng = np.random.default_rng(8)
        conv = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"   # [320, 320, 3, 3]
        conv2 = "model.diffusion_model.input_blocks.2.0.in_layers.2.weight"  # [320, 320, 3, 3]
        w = {n: rng.normal(0, 0.05, (320, 320, 3, 3)).astype(np.float32) for n in (conv, conv2)}
        base = write_sparse_safetensors(self.path("base.safetensors"), layout_table("sd15-ldm"),
                                        {n: v.tobytes() for n, v in w.items()})
        g = lambda *s: rng.normal(0, 0.2, s).astype(np.float32)
        m1 = "lora_unet_down_blocks_0_resnets_0_conv1"
        m2 = "lora_unet_down_blocks_0_resnets_1_conv1"
        r = 4
        loha = {"hada_w1_a": g(r, 320), "hada_w1_b": g(r, 320), "hada_t1": g(r, r, 3, 3),
                "hada_w2_a": g(r, 320), "hada_w2_b": g(r, 320), "hada_t2": g(r, r, 3, 3)}
        lokr = {"lokr_w1": g(4, 4), "lokr_w2_a": g(r, 80), "lokr_w2_b": g(r, 80), "lokr_t2": g(r, r, 3, 3)}
        t = [(m1 + "." + k, "F32", list(v.shape), v.tobytes()) for k, v in loha.items()]
        t += [(m2 + "." + k, "F32", list(v.shape), v.tobytes()) for k, v in lokr.items()]
        t += [(m1 + ".alpha", "F32", [], np.float32(2).tobytes()),
              (m2 + ".alpha", "F32", [], np.float32(2).tobytes())]
        lora = self.path("lyco.safetensors")
        write_safetensors(lora, t)
        out = self.path("out.safetensors")
        run("lora", "bake", base, lora, "-o", out, "-q")
        h = read_safetensors_header(out)
        got = {}
        with open(out, "rb") as fh:
            for n, _, _, (b, e) in h["entries"]:
                if n in w:
                    fh.seek(8 + h["n"] + b)
                    got[n] = np.frombuffer(fh.read(e - b), "<f4").reshape(320, 320, 3, 3)
        T = lambda d: {k: torch.from_numpy(v) for k, v in d.items()}
        a = T(loha)
        ein = lambda core, wb, wa: torch.einsum("i j k l, j r, i p -> p r k l", core, wb, wa)
        dw1 = ein(a["hada_t1"], a["hada_w1_b"], a["hada_w1_a"]) * ein(a["hada_t2"], a["hada_w2_b"], a["hada_w2_a"])
        k = T(lokr)
        w2 = ein(k["lokr_t2"], k["lokr_w2_b"], k["lokr_w2_a"]).contiguous()
        dw2 = torch.kron(k["lokr_w1"].unsqueeze(2).unsqueeze(3), w2)
        for name, dw in ((conv, dw1), (conv2, dw2)):
            want = torch.from_numpy(w[name]) + dw * (2 / r)
            np.testing.assert_allclose(got[name], want.numpy(), rtol=1e-5, atol=1e-6)
            self.assertGreater(float(np.abs(got[name] - w[name]).max()), 1e-3)
        p = run("inspect", lora, "--against", base, "--json")
        self.assertEqual(json.loads(p.stdout)["unmatched"], 0)


class BakeFp8(TempDirTest):
    def setUp(self):
        super().setUp()
        self.base = write_sparse_safetensors(self.path("base.safetensors"), layout_table("sd15-ldm"),
                                             {Q: np.ones((320, 320), np.float32).tobytes()})
        self.lora = self.path("lora.safetensors")
        write_safetensors(self.lora, [
            (MODULE + ".lora_down.weight", "F32", [1, 320], np.ones((1, 320), np.float32).tobytes()),
            (MODULE + ".lora_up.weight", "F32", [320, 1], np.full((320, 1), 0.03, np.float32).tobytes()),
            (MODULE + ".alpha", "F32", [], np.float32(1).tobytes()),
        ])

    def baked(self, name, *args):
        out = self.path(name)
        run("lora", "bake", self.base, self.lora, "-o", out, "--dtype", "f8_e4m3", "-q", *args)
        h = read_safetensors_header(out)
        (b, e), = [r for n, _, _, r in h["entries"] if n == Q]
        with open(out, "rb") as f:
            f.seek(8 + h["n"] + b)
            return f.read(e - b)

    def test_stochastic_keeps_small_deltas_on_average(self):
        near = self.baked("n.safetensors")
        self.assertEqual(set(near), {0x38})  # 1.0: the delta is lost
        s1 = self.baked("s1.safetensors", "--fp8-rounding", "stochastic", "--seed", "1")
        s1b = self.baked("s1b.safetensors", "--fp8-rounding", "stochastic", "--seed", "1", "--threads", "1")
        s2 = self.baked("s2.safetensors", "--fp8-rounding", "stochastic", "--seed", "2")
        self.assertEqual(set(s1), {0x38, 0x39})  # 1.0 and 1.125 only
        self.assertEqual(e4m3(0x39), 1.125)
        up = sum(1 for b in s1 if b == 0x39) / len(s1)
        p = (np.float32(1) + np.float32(0.03) - 1.0) / 0.125
        self.assertAlmostEqual(up, p, delta=0.01)
        self.assertEqual(s1, s1b)
        self.assertNotEqual(s1, s2)
        mean = sum(e4m3(b) for b in s1) / len(s1)
        self.assertAlmostEqual(mean, 1.03, delta=0.002)


if __name__ == "__main__":
    unittest.main()
