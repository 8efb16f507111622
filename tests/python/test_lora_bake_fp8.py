"""`lora bake --dtype f8_e4m3 --fp8-rounding stochastic`: a delta smaller than half an FP8 step
vanishes with round-to-nearest but survives on average with stochastic rounding: every value
is one of its two FP8 neighbours, the share rounded up matches the distance (0.03 / 0.125 of
the way from 1.0 to 1.125), the bytes are reproducible for a seed and differ for another."""
import os
import unittest

import numpy as np

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
