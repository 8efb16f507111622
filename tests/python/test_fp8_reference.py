"""F32 -> FP8 (E4M3 "fn", E5M2) against a reference written here from the format definitions
(PyTorch 1.13 has no float8 types): decode every code to its exact value, then for each input
pick the nearest code, ties to the even mantissa; overflow rules as PyTorch documents them
(E4M3 has no Inf: anything rounding past 448 is NaN; E5M2 overflows to Inf)."""
import math
import unittest

import numpy as np

from ckpt_testlib import TempDirTest, read_safetensors, run, write_safetensors


def decode(code, exp_bits, man_bits, fn):
    sign = -1.0 if code & 0x80 else 1.0
    e = (code >> man_bits) & ((1 << exp_bits) - 1)
    m = code & ((1 << man_bits) - 1)
    bias = (1 << (exp_bits - 1)) - 1
    if fn and e == (1 << exp_bits) - 1 and m == (1 << man_bits) - 1:
        return math.nan
    if not fn and e == (1 << exp_bits) - 1:
        return sign * math.inf if m == 0 else math.nan
    if e == 0:
        return sign * m * 2.0 ** (1 - bias - man_bits)
    return sign * (1 + m / 2 ** man_bits) * 2.0 ** (e - bias)


class Format:
    def __init__(self, name, exp_bits, man_bits, fn):
        self.name, self.fn = name, fn
        self.values = [decode(c, exp_bits, man_bits, fn) for c in range(256)]
        # Non-negative finite codes in increasing value.
        self.finite = sorted((v, c) for c, v in enumerate(self.values)
                             if c < 0x80 and math.isfinite(v))
        self.max = self.finite[-1][0]
        # The value one step past the maximum (its mantissa LSB is odd).
        self.step = self.finite[-1][0] - self.finite[-2][0]

    def encode(self, x):
        """Expected code for the float x (a Python float holding an exact f32 value)."""
        sign = 0x80 if math.copysign(1.0, x) < 0 else 0
        if math.isnan(x):
            return 0x7F | sign
        a = abs(x)
        if self.fn:
            over = 0x7F  # NaN
        else:
            over = 0x7C  # Inf
        if math.isinf(a):
            return over | sign
        lo = None
        for v, c in self.finite:
            if v <= a:
                lo = (v, c)
            else:
                break
        if lo[0] == a:
            return lo[1] | sign
        if lo[1] == self.finite[-1][1]:
            hi = (self.max + self.step, None)  # the first unrepresentable step
        else:
            hi = next((v, c) for v, c in self.finite if v > a)
        mid = (lo[0] + hi[0]) / 2
        if a < mid or (a == mid and lo[1] % 2 == 0):
            return lo[1] | sign
        return (over if hi[1] is None else hi[1]) | sign


E4M3 = Format("F8_E4M3", 4, 3, True)
E5M2 = Format("F8_E5M2", 5, 2, False)


def f32(values):
    return np.array(values, dtype=np.float64).astype(np.float32)


class Fp8Reference(TempDirTest):
    def inputs(self, fmt):
        vals = []
        finite = [v for v, _ in fmt.finite]
        for i, v in enumerate(finite):
            vals += [v, -v]
            nxt = finite[i + 1] if i + 1 < len(finite) else fmt.max + fmt.step
            mid = np.float32((v + nxt) / 2)
            vals += [mid, -mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(np.inf))]
        vals += [fmt.max + fmt.step, 1e30, -1e30, np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0,
                 1e-30, -1e-30, 2.0 ** -149]
        rng = np.random.default_rng(8)
        mags = 2.0 ** rng.uniform(-24, 18, size=40000)
        vals += list(mags * rng.choice([-1, 1], size=mags.size))
        return f32(vals)

    def convert(self, x, dtype):
        src, out = self.path("in.st"), self.path(f"out-{dtype}.st")
        write_safetensors(src, [("x", "F32", [x.size], x.tobytes())])
        run("convert", src, "-o", out, "--dtype", dtype.lower(), "--no-sync", "--force", "-q")
        _, tensors, _ = read_safetensors(out)
        self.assertEqual(tensors["x"][0], dtype)
        return np.frombuffer(tensors["x"][2], dtype=np.uint8)

    def check(self, fmt):
        x = self.inputs(fmt)
        got = self.convert(x, fmt.name)
        want = np.array([fmt.encode(float(v)) for v in x], dtype=np.uint8)
        bad = np.nonzero(got != want)[0]
        if bad.size:
            i = bad[:8]
            self.fail(f"{fmt.name}: {bad.size}/{x.size} differ; inputs {list(x[i])} want "
                      f"{[hex(v) for v in want[i]]} got {[hex(v) for v in got[i]]}")

    def test_e4m3(self):
        self.check(E4M3)

    def test_e5m2(self):
        self.check(E5M2)

    def test_reference_knows_the_published_limits(self):
        self.assertEqual(E4M3.max, 448.0)
        self.assertEqual(E5M2.max, 57344.0)
        self.assertEqual(E4M3.encode(464.0), 0x7E)  # tie to even: 448
        self.assertEqual(E4M3.encode(465.0), 0x7F)  # NaN, no Inf in E4M3
        self.assertEqual(E5M2.encode(61440.0), 0x7C)  # tie with an odd max goes to Inf
        self.assertEqual(E4M3.encode(2.0 ** -10), 0x00)  # half the smallest subnormal: to even 0
        self.assertEqual(E4M3.encode(3 * 2.0 ** -10), 0x02)

    def test_decode_every_code(self):
        for fmt in (E4M3, E5M2):
            codes = np.arange(256, dtype=np.uint8)
            src, out = self.path(f"codes-{fmt.name}.st"), self.path(f"codes-{fmt.name}-f32.st")
            write_safetensors(src, [("c", fmt.name, [256], codes.tobytes())])
            run("convert", src, "-o", out, "--dtype", "f32", "--no-sync", "--force", "-q")
            got = np.frombuffer(read_safetensors(out)[1]["c"][2], dtype=np.float32)
            for c in range(256):
                want = fmt.values[c]
                if math.isnan(want):
                    self.assertTrue(math.isnan(got[c]), (fmt.name, c))
                    self.assertEqual(math.copysign(1, got[c]) < 0, c >= 0x80, (fmt.name, c))
                else:
                    self.assertEqual(float(got[c]), want, (fmt.name, hex(c)))


if __name__ == "__main__":
    unittest.main()
