"""Conversions through the real CLI against PyTorch's tensor.to(dtype) on CPU, bit for bit
(NaN payloads and signs included). Inputs are written by the independent Python writer in
ckpt_testlib; outputs are read back by the independent reader."""
import unittest

import numpy as np
import torch

from ckpt_testlib import TempDirTest, read_safetensors, run, write_safetensors

TORCH = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
BITS = {"F16": np.uint16, "BF16": np.uint16, "F32": np.uint32, "F64": np.uint64}
SIGNED = {np.uint16: np.int16, np.uint32: np.int32, np.uint64: np.int64}
TORCH_INT = {np.uint16: torch.int16, np.uint32: torch.int32, np.uint64: torch.int64}


def torch_from_bits(bits, dtype):
    """A torch tensor of `dtype` whose bit patterns are `bits` (unsigned numpy array)."""
    return torch.from_numpy(bits.view(SIGNED[bits.dtype.type]).copy()).view(TORCH[dtype])


def torch_to_bits(t, dtype):
    u = BITS[dtype]
    return t.contiguous().view(TORCH_INT[u]).numpy().view(u)


class CastAgainstTorch(TempDirTest):
    def convert(self, bits, src, dst):
        """Runs ckptkit convert on one tensor of raw bit patterns; returns output bits."""
        path, out = self.path(f"in-{src}.st"), self.path(f"out-{src}-{dst}.st")
        write_safetensors(path, [("x", src, [bits.size], bits.tobytes())])
        run("convert", path, "-o", out, "--dtype", dst.lower(), "--no-sync", "--force",
            "--progress", "never", "-q")
        _, tensors, _ = read_safetensors(out)
        got_dtype, shape, raw = tensors["x"]
        self.assertEqual(got_dtype, dst)
        self.assertEqual(shape, [bits.size])
        return np.frombuffer(raw, dtype=BITS[dst])

    def check(self, bits, src, dst, nan_bits_position_dependent=False):
        got = self.convert(bits, src, dst)
        want = torch_to_bits(torch_from_bits(bits, src).to(TORCH[dst]), dst)
        if nan_bits_position_dependent:
            # PyTorch writes F64->BF16 NaNs as 0xFFFF (vectorized blocks) or 0x7FC0 (scalar
            # tail) depending on position; ckptkit writes 0xFFFF. Compare NaN-ness there.
            nan = np.isnan(torch_from_bits(bits, src).numpy())
            self.assertTrue(np.all(got[nan] == 0xFFFF))
            self.assertTrue(np.all((want[nan] == 0xFFFF) | (want[nan] == 0x7FC0)))
            got, want = got[~nan], want[~nan]
            bits = bits[~nan]
        bad = np.nonzero(got != want)[0]
        if bad.size:
            i = bad[:8]
            self.fail(f"{src}->{dst}: {bad.size} of {bits.size} differ; first inputs "
                      f"{[hex(int(x)) for x in bits[i]]} want {[hex(int(x)) for x in want[i]]} "
                      f"got {[hex(int(x)) for x in got[i]]}")

    def test_every_f16_pattern(self):
        bits = np.arange(65536, dtype=np.uint16)
        self.check(bits, "F16", "F32")
        self.check(bits, "F16", "BF16")

    def test_every_bf16_pattern(self):
        bits = np.arange(65536, dtype=np.uint16)
        self.check(bits, "BF16", "F32")
        self.check(bits, "BF16", "F16")

    def f32_inputs(self):
        rng = np.random.default_rng(20261123)
        parts = [rng.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype(np.uint32)]
        for scale in (1e-8, 1e-5, 0.02, 1.0, 300.0, 6e4, 1e6):
            parts.append(rng.normal(0, scale, size=20000).astype(np.float32).view(np.uint32))
        # Around every F16 value: the value, the midpoint to the next, and its f32 neighbours.
        f16 = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
        mid = ((f16[:-1] + f16[1:]) / 2).astype(np.float32)
        for v in (f16.astype(np.float32), mid, np.nextafter(mid, np.float32(0)),
                  np.nextafter(mid, np.float32(np.inf))):
            parts.append(v.view(np.uint32))
            parts.append((-v).view(np.uint32))
        # Around every BF16 value the same way (every 7th, to bound the size).
        bf = (np.arange(0, 0x7F80, 7, dtype=np.uint32) << 16)
        parts += [bf, bf + 0x8000, bf + 0x7FFF, bf + 0x8001, bf | 0x80000000]
        special = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                   0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00001,
                   0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF]
        for v in (65504.0, 65519.0, 65519.996, 65520.0, 65536.0, 2.0**-24, 2.0**-25,
                  1.5 * 2.0**-25, 2.0**-26, 6.097555e-05, 6.1035156e-05, 3.3895314e38):
            special.append(int(np.float32(v).view(np.uint32)))
            special.append(int(np.float32(-v).view(np.uint32)))
        parts.append(np.array(special, dtype=np.uint32))
        return np.concatenate(parts)

    def test_f32_to_f16_and_bf16(self):
        bits = self.f32_inputs()
        self.check(bits, "F32", "F16")
        self.check(bits, "F32", "BF16")

    def test_f64_to_narrower(self):
        rng = np.random.default_rng(7)
        parts = [rng.integers(0, 2**63, size=200000, dtype=np.uint64) * 2 + rng.integers(0, 2, size=200000, dtype=np.uint64),
                 rng.normal(0, 1, size=50000).view(np.uint64),
                 np.array([0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000,
                           0x7FF8000000000000, 0x7FF0000000000001, 0x0000000000000001,
                           0x47EFFFFFE0000000, 0x47EFFFFFF0000000, 0x3E70000000000000],
                          dtype=np.uint64)]
        bits = np.concatenate(parts)
        for dst in ("F32", "F16"):
            self.check(bits, "F64", dst)
        self.check(bits, "F64", "BF16", nan_bits_position_dependent=True)

    def test_integers_are_never_cast(self):
        path, out = self.path("ints.st"), self.path("ints-f16.st")
        pos = np.arange(77, dtype=np.int64).reshape(1, 77)
        cnt = np.array(123456, dtype=np.int32)
        w = np.linspace(-1, 1, 10, dtype=np.float32)
        write_safetensors(path, [("text_model.embeddings.position_ids", "I64", [1, 77], pos.tobytes()),
                                 ("model_ema.num_updates", "I32", [], cnt.tobytes()),
                                 ("w", "F32", [10], w.tobytes()),
                                 ("mask", "BOOL", [3], bytes([1, 0, 1]))])
        run("convert", path, "-o", out, "--dtype", "f16", "--no-sync", "-q")
        _, tensors, _ = read_safetensors(out)
        self.assertEqual(tensors["text_model.embeddings.position_ids"], ("I64", [1, 77], pos.tobytes()))
        self.assertEqual(tensors["model_ema.num_updates"], ("I32", [], cnt.tobytes()))
        self.assertEqual(tensors["mask"], ("BOOL", [3], bytes([1, 0, 1])))
        dtype, shape, raw = tensors["w"]
        self.assertEqual(dtype, "F16")
        self.assertEqual(raw, torch.from_numpy(w).to(torch.float16).numpy().tobytes())


if __name__ == "__main__":
    unittest.main()
