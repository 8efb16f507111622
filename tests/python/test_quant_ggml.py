"""ckptkit's ggml block (de)quantization against real ggml, byte for byte.

The oracle is ggml's own libggml-base.so (CKPTKIT_GGML_LIB, installed by scripts/deps.sh), called
through ctypes: ggml_quantize_chunk with imatrix NULL (the reference path, llama-quantize) or an
all-ones importance row (stable-diffusion.cpp's convert), and dequantize_row_<type>. ckptkit's
side runs through the ckptkit_quant_tool test executable (CKPTKIT_TOOLS). A missing oracle is a
failure, not a skip: these tests are the only proof of bit-exactness.
"""
import os
import subprocess
import tempfile
import unittest

import numpy as np

import ggml_oracle

TOOLS = os.environ.get("CKPTKIT_TOOLS", "")
TMP = os.environ.get("CKPTKIT_TEST_TMP") or None

# name -> (ggml type id, block elements, block bytes, byte offsets of the f16 fields)
TYPES = {
    "q4_0": (2, 32, 18, [0]),
    "q4_1": (3, 32, 20, [0, 2]),
    "q5_0": (6, 32, 22, [0]),
    "q5_1": (7, 32, 24, [0, 2]),
    "q8_0": (8, 32, 34, [0]),
    "q2_K": (10, 256, 84, [80, 82]),
    "q3_K": (11, 256, 110, [108]),
    "q4_K": (12, 256, 144, [0, 2]),
    "q5_K": (13, 256, 176, [0, 2]),
    "q6_K": (14, 256, 210, [208]),
    "iq4_nl": (20, 32, 18, [0]),
    "iq4_xs": (23, 256, 136, [0]),
}
QUANTIZABLE = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K"]


def load_ggml():
    return ggml_oracle.lib()


def tool_path():
    exe = os.path.join(TOOLS, "ckptkit_quant_tool")
    if not os.path.isfile(exe):
        raise AssertionError(f"ckptkit_quant_tool not found in CKPTKIT_TOOLS={TOOLS!r}")
    return exe


def sample_rows(n, rng):
    """Rows of length n covering the cases a quantizer gets wrong: scales, zeros, degenerate
    groups, denormals, huge values, ties, outliers."""
    rows = []
    for scale in (1e-3, 1.0, 1e3):
        rows.append(rng.standard_normal(n) * scale)
    r = rng.standard_normal(n)
    r[rng.random(n) < 0.3] = 0.0
    rows.append(r)                                   # scattered zeros
    r = rng.standard_normal(n)
    r[: n // 2] = 0.0
    rows.append(r)                                   # whole blocks/groups of zeros
    rows.append(np.zeros(n))                         # all zero
    rows.append(rng.standard_normal(n) * 1e-30)      # tiny (d underflows fp16)
    rows.append(rng.standard_normal(n) * 1e-40)      # float32 denormals
    rows.append(rng.standard_normal(n) * 1e30)       # huge (d overflows fp16)
    rows.append(np.full(n, 0.5))                     # all equal, positive
    rows.append(np.full(n, -3.0))                    # all equal, negative
    r = rng.standard_normal(n)
    r[rng.integers(n)] = 1e3
    rows.append(r)                                   # one outlier
    r = rng.standard_normal(n)
    r[rng.integers(n)] = -50.0
    rows.append(r)
    rows.append(rng.integers(-8, 8, n).astype(np.float64))   # exact integer levels (ties)
    rows.append(rng.random(n))                       # all positive (min > 0 branch)
    rows.append(-rng.random(n) * 7)                  # all negative
    return np.ascontiguousarray(np.stack(rows).astype(np.float32))


def mixed_groups16(n, rng):
    """Rows whose groups of 16 differ in kind from one group to the next, so that neighbouring
    SIMD lanes (one group each) take different paths: zero groups, single values, outliers
    (long Q3_K refinement), ties, magnitudes from denormal to huge, around GROUP_MAX_EPS."""
    groups = rng.standard_normal((2 * n // 16, 16))
    for g in range(groups.shape[0]):
        kind = (g * 7 + g // 16) % 9
        if kind == 0:
            groups[g] = 0.0
        elif kind == 1:
            groups[g] = 0.0
            groups[g, g % 16] = rng.standard_normal()
        elif kind == 2:
            groups[g] *= 0.01
            groups[g, (3 * g) % 16] = 5.0 if g % 2 else -5.0
        elif kind == 3:
            groups[g] = rng.integers(-4, 5, 16) * 0.5
        elif kind == 4:
            groups[g] *= 2e-16 if g % 2 else 2e-15
        elif kind == 5:
            groups[g] *= 1e-40
        elif kind == 6:
            groups[g] *= 1e30
        elif kind == 7:
            groups[g] /= np.abs(rng.standard_normal(16)) + 0.05
        else:
            groups[g] *= 2.0 ** float(rng.integers(-120, 100))
    return groups.reshape(2, n).astype(np.float32)


class QuantGgmlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lib = load_ggml()
        cls.tool = tool_path()
        cls.tmp = tempfile.TemporaryDirectory(dir=TMP)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def ggml_quantize(self, name, rows, ones):
        type_id = TYPES[name][0]
        nrows, n = rows.shape
        size = self.lib.ggml_row_size(type_id, n) * nrows
        dst = np.zeros(size, dtype=np.uint8)
        imatrix = np.ones(n, dtype=np.float32) if ones else None
        got = self.lib.ggml_quantize_chunk(
            type_id, rows.ctypes.data, dst.ctypes.data, 0, nrows, n,
            imatrix.ctypes.data if ones else None)
        self.assertEqual(got, size)
        return dst.tobytes()

    def ckpt_quantize(self, name, rows, ones, target=None):
        src = os.path.join(self.tmp.name, "in.f32")
        out = os.path.join(self.tmp.name, "out.bin")
        rows.tofile(src)
        env = dict(os.environ, CKPTKIT_QUANT_TARGET=target) if target else None
        p = subprocess.run([self.tool, "quantize", name, "ones" if ones else "ref",
                            str(rows.shape[0]), str(rows.shape[1]), src, out],
                           capture_output=True, text=True, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out, "rb") as f:
            return f.read()

    def ggml_dequantize(self, name, data, count):
        src = np.frombuffer(data, dtype=np.uint8).copy()
        dst = np.zeros(count, dtype=np.float32)
        getattr(self.lib, f"dequantize_row_{name}")(src.ctypes.data, dst.ctypes.data, count)
        return dst

    def ckpt_dequantize(self, name, data, count):
        src = os.path.join(self.tmp.name, "in.bin")
        out = os.path.join(self.tmp.name, "out.f32")
        with open(src, "wb") as f:
            f.write(data)
        p = subprocess.run([self.tool, "dequantize", name, str(count), src, out],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        return np.fromfile(out, dtype=np.float32)

    def assert_same_blocks(self, name, rows, ones, expected, actual):
        """Equal bytes; otherwise name the first differing block and its input row."""
        if expected == actual:
            return
        block, bbytes = TYPES[name][1], TYPES[name][2]
        e = np.frombuffer(expected, np.uint8)
        a = np.frombuffer(actual, np.uint8)
        self.assertEqual(len(e), len(a), f"{name}: output sizes differ")
        first = int(np.nonzero(e != a)[0][0])
        b = first // bbytes
        per_row = rows.shape[1] // block
        nbad = int(np.count_nonzero((e != a).reshape(-1, bbytes).any(axis=1)))
        self.fail(f"{name} path={'ones' if ones else 'ref'} n_per_row={rows.shape[1]}: "
                  f"{nbad} blocks differ; first: block {b} (row {b // per_row}, "
                  f"block {b % per_row} of the row), byte {first % bbytes}\n"
                  f"ggml:    {e[b * bbytes:(b + 1) * bbytes].tobytes().hex()}\n"
                  f"ckptkit: {a[b * bbytes:(b + 1) * bbytes].tobytes().hex()}")

    def test_quantize_matches_ggml(self):
        rng = np.random.default_rng(1234)
        cases = {n: sample_rows(n, rng) for n in (32, 96, 256, 512, 3072)}
        for name in QUANTIZABLE:
            block = TYPES[name][1]
            for n, rows in cases.items():
                if n % block:
                    continue
                for ones in (False, True):
                    with self.subTest(type=name, n_per_row=n, ones=ones):
                        expected = self.ggml_quantize(name, rows, ones)
                        actual = self.ckpt_quantize(name, rows, ones)
                        self.assert_same_blocks(name, rows, ones, expected, actual)

    def test_quantize_nonfinite_matches_ggml(self):
        # ggml's release build has defined (if meaningless) output for NaN and Inf; files that
        # contain them must round-trip through ckptkit to the same bytes.
        rng = np.random.default_rng(99)
        n = 512
        rows = []
        for special in (np.nan, np.inf, -np.inf):
            r = rng.standard_normal(n)
            r[rng.integers(n)] = special
            rows.append(r)
            r = rng.standard_normal(n)
            r[:: 7] = special
            rows.append(r)
            rows.append(np.full(n, special))
        r = rng.standard_normal(n)
        r[3], r[300] = np.inf, -np.inf
        rows.append(r)
        r = np.clip(rng.standard_normal(n) * 3e38, -3.4e38, 3.4e38)  # finite; max - min overflows
        rows.append(r)
        rows = np.ascontiguousarray(np.stack(rows).astype(np.float32))
        for name in QUANTIZABLE:
            for ones in (False, True):
                with self.subTest(type=name, ones=ones):
                    expected = self.ggml_quantize(name, rows, ones)
                    actual = self.ckpt_quantize(name, rows, ones)
                    self.assert_same_blocks(name, rows, ones, expected, actual)

    def test_every_simd_target_matches_ggml(self):
        # The reference K-quant group steps run on SIMD lanes; each target this CPU
        # has must give ggml's bytes (the default run above only checks the best one).
        p = subprocess.run([self.tool, "targets"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        targets = p.stdout.split()
        self.assertIn("scalar", targets)
        rng = np.random.default_rng(31)
        rows = sample_rows(3072, rng)
        special = rng.standard_normal((3, 3072))
        special[0, ::5] = np.nan
        special[1, ::3] = np.inf
        special[2, 100] = -np.inf
        rows = np.ascontiguousarray(np.concatenate([rows, special.astype(np.float32),
                                                    mixed_groups16(3072, rng)]))
        for name in ("q2_K", "q3_K", "q4_K", "q5_K", "q6_K"):
            for ones in (False, True):
                expected = self.ggml_quantize(name, rows, ones)
                for target in targets:
                    with self.subTest(type=name, ones=ones, target=target):
                        actual = self.ckpt_quantize(name, rows, ones, target)
                        self.assert_same_blocks(name, rows, ones, expected, actual)

    def assert_same_floats(self, name, expected, actual):
        e = expected.view(np.uint32)
        a = actual.view(np.uint32)
        self.assertEqual(e.shape, a.shape)
        if not np.array_equal(e, a):
            i = int(np.nonzero(e != a)[0][0])
            self.fail(f"{name}: element {i}: ggml {expected[i]!r} ({e[i]:08x}), "
                      f"ckptkit {actual[i]!r} ({a[i]:08x})")

    def test_dequantize_random_blocks_matches_ggml(self):
        rng = np.random.default_rng(7)
        nblocks = 64
        for name, (_, block, bbytes, half_offsets) in TYPES.items():
            with self.subTest(type=name):
                data = rng.integers(0, 256, (nblocks, bbytes), dtype=np.uint8)
                for off in half_offsets:
                    h = rng.integers(0, 1 << 16, nblocks, dtype=np.uint16)
                    special = (h & 0x7C00) == 0x7C00
                    h[special] &= 0xBFFF                 # Inf/NaN -> finite
                    data[:, off:off + 2] = h.view(np.uint8).reshape(nblocks, 2)
                raw = data.tobytes()
                count = nblocks * block
                self.assert_same_floats(name, self.ggml_dequantize(name, raw, count),
                                        self.ckpt_dequantize(name, raw, count))

    def test_dequantize_quantized_rows_matches_ggml(self):
        rng = np.random.default_rng(5)
        rows = sample_rows(512, rng)
        for name in QUANTIZABLE:
            with self.subTest(type=name):
                raw = self.ggml_quantize(name, rows, False)
                self.assert_same_floats(name, self.ggml_dequantize(name, raw, rows.size),
                                        self.ckpt_dequantize(name, raw, rows.size))

    def test_tool_refuses_bad_input(self):
        src = os.path.join(self.tmp.name, "bad.f32")
        np.zeros(40, np.float32).tofile(src)
        out = os.path.join(self.tmp.name, "bad.bin")
        for args in (["quantize", "q4_K", "ref", "1", "40", src, out],      # not a block multiple
                     ["quantize", "iq4_nl", "ref", "1", "32", src, out],    # not quantizable
                     ["quantize", "q8_0", "fast", "1", "32", src, out],     # unknown path
                     ["quantize", "q8_0", "ref", "2", "32", src, out],      # wrong input size
                     ["dequantize", "f16", "32", src, out],
                     ["frobnicate"]):
            with self.subTest(args=args):
                p = subprocess.run([self.tool, *args], capture_output=True, text=True)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("ckptkit_quant_tool:", p.stderr)


if __name__ == "__main__":
    unittest.main()
