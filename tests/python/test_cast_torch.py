"""Conversions through the real CLI against PyTorch's tensor.to(dtype) on CPU, bit for bit
(NaN payloads and signs included). Inputs are written by the independent Python writer in
ckpt_testlib; outputs are read back by the independent reader. The expected bits always come
from torch; nothing here is a recorded ckptkit output."""
import unittest

import numpy as np
import torch

from ckpt_testlib import TempDirTest, read_safetensors, run, write_safetensors

TORCH = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
BITS = {"F16": np.uint16, "BF16": np.uint16, "F32": np.uint32, "F64": np.uint64}
SIGNED = {np.uint16: np.int16, np.uint32: np.int32, np.uint64: np.int64}
TORCH_INT = {np.uint16: torch.int16, np.uint32: torch.int32, np.uint64: torch.int64}
CLI = {"F16": "f16", "BF16": "bf16", "F32": "f32", "F64": "f64"}


def torch_from_bits(bits, dtype):
    """A torch tensor of `dtype` whose bit patterns are `bits` (unsigned numpy array)."""
    bits = np.ascontiguousarray(bits, dtype=BITS[dtype])
    return torch.from_numpy(bits.view(SIGNED[bits.dtype.type]).copy()).view(TORCH[dtype])


def torch_to_bits(t, dtype):
    u = BITS[dtype]
    return t.contiguous().view(TORCH_INT[u]).numpy().view(u)


def is_nan_bits(bits, dtype):
    if dtype == "F16":
        return (bits & 0x7C00 == 0x7C00) & (bits & 0x03FF != 0)
    if dtype == "BF16":
        return (bits & 0x7F80 == 0x7F80) & (bits & 0x007F != 0)
    if dtype == "F32":
        return (bits & 0x7F800000 == 0x7F800000) & (bits & 0x007FFFFF != 0)
    return (bits & 0x7FF0000000000000 == 0x7FF0000000000000) & (bits & 0x000FFFFFFFFFFFFF != 0)


def f16_values():
    """Every non-negative finite F16 value, in increasing order, as float64."""
    return np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)


def around(values_f64, next_value):
    """For sorted exact values v (float64), the value, the exact midpoint to the next one (and
    to `next_value` after the last), and the float32 neighbours of that midpoint; both signs.
    Returns float32 bit patterns."""
    v = values_f64
    nxt = np.append(v[1:], next_value)
    mid64 = (v + nxt) / 2  # exact in float64: both are short-mantissa values
    mid = mid64.astype(np.float32)
    assert np.all(mid.astype(np.float64) == mid64), "midpoint not exact in f32"
    parts = [v.astype(np.float32), mid, np.nextafter(mid, np.float32(0)),
             np.nextafter(mid, np.float32(np.inf))]
    out = []
    for p in parts:
        out += [p.view(np.uint32), (-p).view(np.uint32)]
    return np.concatenate(out)


def critical_f32(keep_bits, lows):
    """Every f32 whose top `keep_bits` bits take every value, with the low bits from `lows`
    (the patterns where round-to-nearest-even decides: just below/at/above the halfway point)."""
    shift = 32 - keep_bits
    top = np.arange(1 << keep_bits, dtype=np.uint64) << np.uint64(shift)
    return np.concatenate([(top | np.uint64(lo)).astype(np.uint32) for lo in lows])


def random_nans_f32(rng, count):
    sign = rng.integers(0, 2, size=count, dtype=np.uint64).astype(np.uint32) << np.uint32(31)
    payload = rng.integers(1, 1 << 23, size=count, dtype=np.uint64).astype(np.uint32)
    return sign | np.uint32(0x7F800000) | payload


F32_SPECIALS = [
    0x00000000, 0x80000000,                          # +-0
    0x7F800000, 0xFF800000,                          # +-inf
    0x7FC00000, 0xFFC00000, 0x7FC00001, 0xFFC00001,  # quiet NaNs
    0x7FFFFFFF, 0xFFFFFFFF, 0x7FE00000, 0x7FD55555,
    0x7F800001, 0xFF800001, 0x7FBFFFFF, 0xFFBFFFFF,  # signalling NaNs
    0x7FA00000, 0x7F800100, 0x7F802000, 0x7F804000, 0x7F808000, 0xFF80FFFF,
    0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF,  # f32 subnormals
    0x00800000, 0x80800000,                          # f32 min normal
    0x7F7FFFFF, 0xFF7FFFFF,                          # f32 max
    0x7F7F0000, 0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001,  # bf16 max and its overflow boundary
    0x7F7EFFFF, 0x7F7E8000, 0x7F7E8001, 0xFF7F8000,
    0x33000000, 0x33000001, 0x32FFFFFF,              # 2^-25 (half the smallest f16 subnormal)
    0x33400000, 0x33800000, 0x33C00000,              # 1.5*2^-25, 2^-24, 1.5*2^-24
    0x387FC000, 0x387FE000, 0x38800000,              # f16 max subnormal / min normal boundary
]
F32_SPECIAL_FLOATS = [65504.0, 65504.004, 65505.0, 65519.0, 65519.996, 65520.0, 65520.004,
                      65535.0, 65536.0, 1e5, 1e10, 3.3895314e38, 3.4e38, 2.0 ** -24, 2.0 ** -25,
                      1.5 * 2.0 ** -25, 2.0 ** -26, 2.0 ** -14, 2.0 ** -14 - 2.0 ** -25,
                      6.097555e-05, 6.1035156e-05, 5.96e-08, 1.0, 1.0009766, 0.1, 1 / 3]


class CastAgainstTorch(TempDirTest):
    def convert_file(self, tensors, dst, *extra):
        """Writes tensors (name, dtype, bits array) in the given order, converts with ckptkit to
        `dst` and returns {name: (dtype, shape, raw)}."""
        src, out = self.path("in.st"), self.path("out.st")
        write_safetensors(src, [(n, d, list(b.shape), b.tobytes()) for n, d, b in tensors])
        run("convert", src, "-o", out, "--dtype", CLI.get(dst, dst), "--no-sync", "--force",
            "--progress", "never", "-q", *extra)
        return read_safetensors(out)[1]

    def convert(self, bits, src, dst, *extra):
        """Runs ckptkit convert on one tensor of raw bit patterns; returns output bits."""
        got_dtype, shape, raw = self.convert_file([("x", src, bits)], dst, *extra)["x"]
        self.assertEqual(got_dtype, dst)
        self.assertEqual(shape, list(bits.shape))
        return np.frombuffer(raw, dtype=BITS[dst])

    def compare(self, bits, got, want, src, dst, what=""):
        bad = np.nonzero(got != want)[0]
        if bad.size:
            i = bad[:10]
            self.fail(f"{src}->{dst}{what}: {bad.size} of {bits.size} differ; first inputs "
                      f"{[hex(int(x)) for x in bits[i]]} want (torch) "
                      f"{[hex(int(x)) for x in want[i]]} got {[hex(int(x)) for x in got[i]]}")

    def expected(self, bits, src, dst):
        return torch_to_bits(torch_from_bits(bits, src).to(TORCH[dst]), dst)

    def check(self, bits, src, dst, nan_bits_position_dependent=False):
        got = self.convert(bits, src, dst)
        want = self.expected(bits, src, dst)
        if nan_bits_position_dependent:
            # PyTorch writes F64->BF16 NaNs as 0xFFFF (vectorized blocks) or 0x7FC0 (scalar
            # tail) depending on the element's position; ckptkit documents 0xFFFF. For NaN
            # inputs require a NaN with one of torch's two encodings, and 0xFFFF from ckptkit.
            nan = is_nan_bits(bits, src)
            self.assertTrue(np.all((want[nan] == 0xFFFF) | (want[nan] == 0x7FC0)))
            self.compare(bits[nan], got[nan], np.full(int(nan.sum()), 0xFFFF, np.uint16), src,
                         dst, " (NaN inputs)")
            got, want, bits = got[~nan], want[~nan], bits[~nan]
        self.compare(bits, got, want, src, dst)

    # --- (a), (b): every 16-bit pattern ---------------------------------------------------------

    def test_every_f16_pattern(self):
        bits = np.arange(65536, dtype=np.uint16)
        for dst in ("F32", "BF16", "F64"):
            with self.subTest(dst=dst):
                self.check(bits, "F16", dst)

    def test_every_bf16_pattern(self):
        bits = np.arange(65536, dtype=np.uint16)
        for dst in ("F32", "F16", "F64"):
            with self.subTest(dst=dst):
                self.check(bits, "BF16", dst)

    def test_same_dtype_is_a_bit_copy(self):
        """`--dtype X` on an X tensor leaves every pattern alone (torch's .to(same) is a no-op):
        signalling NaN payloads included."""
        rng = np.random.default_rng(11)
        cases = {"F16": np.arange(65536, dtype=np.uint16),
                 "BF16": np.arange(65536, dtype=np.uint16),
                 "F32": np.concatenate([np.array(F32_SPECIALS, np.uint32),
                                        random_nans_f32(rng, 5000),
                                        rng.integers(0, 2**32, 50000, dtype=np.uint64).astype(np.uint32)]),
                 "F64": rng.integers(0, 2**64 - 1, 50000, dtype=np.uint64, endpoint=True)}
        for dtype, bits in cases.items():
            with self.subTest(dtype=dtype):
                got = self.convert(bits, dtype, dtype)
                self.compare(bits, got, self.expected(bits, dtype, dtype), dtype, dtype)
                self.compare(bits, got, bits, dtype, dtype, " (input)")

    # --- (c): F32 -> F16 / BF16 -----------------------------------------------------------------

    def f32_inputs(self):
        rng = np.random.default_rng(20261123)
        parts = [rng.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype(np.uint32)]
        for scale in (1e-8, 1e-6, 1e-5, 1e-3, 0.02, 1.0, 300.0, 6e4, 1e6, 1e30):
            parts.append(rng.normal(0, scale, size=20000).astype(np.float32).view(np.uint32))
        # Around every F16 value, subnormals included: the value, the exact midpoint to the
        # next (65520 after the max), and that midpoint's f32 neighbours; both signs.
        parts.append(around(f16_values(), 65536.0))
        # Around every BF16 value in the same way (2^128 after the max).
        bf = (np.arange(0x7F80, dtype=np.uint32) << 16).view(np.float32).astype(np.float64)
        parts.append(around(bf, 2.0 ** 128))
        # Every f32 at the F16 rounding point of its exponent/10-bit mantissa prefix.
        parts.append(critical_f32(19, [0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF]))
        # Every f32 at the BF16 rounding point of its top 16 bits.
        parts.append(critical_f32(16, [0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF]))
        parts.append(random_nans_f32(rng, 20000))
        special = list(F32_SPECIALS)
        for v in F32_SPECIAL_FLOATS:
            special.append(int(np.float32(v).view(np.uint32)))
            special.append(int(np.float32(-v).view(np.uint32)))
        parts.append(np.array(special, dtype=np.uint32))
        return np.concatenate(parts)

    def test_f32_to_f16_and_bf16(self):
        bits = self.f32_inputs()
        self.assertGreater(bits.size, 4_000_000)
        self.check(bits, "F32", "F16")
        self.check(bits, "F32", "BF16")

    def test_f32_to_f64(self):
        rng = np.random.default_rng(3)
        bits = np.concatenate([np.array(F32_SPECIALS, np.uint32), random_nans_f32(rng, 2000),
                               rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32)])
        self.check(bits, "F32", "F64")

    def test_f16_ties_by_construction(self):
        """Every tie exactly halfway between adjacent F16 values (built from F16 neighbours in
        float64), checked independently of torch too: ties go to the even mantissa."""
        v = f16_values()
        nxt = np.append(v[1:], 65536.0)
        mid = ((v + nxt) / 2).astype(np.float32)
        bits = np.concatenate([mid.view(np.uint32), (-mid).view(np.uint32)])
        got = self.convert(bits, "F32", "F16")
        self.compare(bits, got, self.expected(bits, "F32", "F16"), "F32", "F16", " ties")
        lo = np.arange(0x7C00, dtype=np.uint16)  # codes of v
        even = np.where(lo % 2 == 0, lo, lo + 1).astype(np.uint16)  # 0x7BFF+1 = 0x7C00 = inf
        want = np.concatenate([even, even | np.uint16(0x8000)])
        self.compare(bits, got, want, "F32", "F16", " ties (even-mantissa rule)")

    def test_short_and_unaligned_tensors(self):
        """Tensors of every length 0..70 (SIMD bodies and scalar tails), placed after a 1-byte
        tensor so their data starts at odd offsets, each compared with torch on its own."""
        rng = np.random.default_rng(5)
        pool = np.concatenate([np.array(F32_SPECIALS, np.uint32),
                               np.float32([65519.996, 65520.0, 65504.0, 2.0 ** -25]).view(np.uint32),
                               rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)])
        for dst in ("F16", "BF16", "F64"):
            with self.subTest(dst=dst):
                tensors = [("0pad", "U8", np.array([7], np.uint8))]
                for n in range(71):
                    tensors.append((f"t{n:03d}", "F32", rng.choice(pool, size=n)))
                got = self.convert_file(tensors, dst)
                self.assertEqual(got["0pad"], ("U8", [1], b"\x07"))
                for name, _, bits in tensors[1:]:
                    dtype, shape, raw = got[name]
                    self.assertEqual((dtype, shape), (dst, [bits.size]), name)
                    self.compare(bits, np.frombuffer(raw, BITS[dst]),
                                 self.expected(bits, "F32", dst), "F32", dst, f" in {name}")

    def test_chunking_and_threads_do_not_change_bits(self):
        rng = np.random.default_rng(9)
        bits = rng.integers(0, 2**32, size=3 << 20, dtype=np.uint64).astype(np.uint32)
        want = self.expected(bits, "F32", "F16")
        for extra in ([], ["--threads", "1", "--max-memory", "4M"], ["--threads", "2", "--max-memory", "5M"]):
            with self.subTest(extra=extra):
                self.compare(bits, self.convert(bits, "F32", "F16", *extra), want, "F32", "F16",
                             f" {extra}")

    # --- (d): F64 -> narrower ---------------------------------------------------------------------

    def f64_inputs(self):
        rng = np.random.default_rng(7)
        parts = [rng.integers(0, 2**64 - 1, size=300000, dtype=np.uint64, endpoint=True)]
        for scale in (1e-40, 1e-8, 1e-3, 1.0, 6e4, 1e38, 1e300):
            parts.append(rng.normal(0, scale, size=20000).view(np.uint64))
        # F32 rounding points: exact midpoints between adjacent random f32 values, and one f64
        # ulp either side of them.
        x = rng.integers(0, 0x7F800000, size=30000, dtype=np.uint64).astype(np.uint32).view(np.float32)
        mid = (x.astype(np.float64) + np.nextafter(x, np.float32(np.inf)).astype(np.float64)) / 2
        for m in (mid, np.nextafter(mid, 0), np.nextafter(mid, np.inf)):
            parts += [m.view(np.uint64), (-m).view(np.uint64)]
        # Double rounding towards F16: f16 ties, and f16 ties nudged by less than half an f32
        # ulp (they round to the tie in f32 first, the way torch goes double -> float -> half).
        v = f16_values()
        m16 = (v + np.append(v[1:], 65536.0)) / 2
        ulp32 = np.spacing(m16.astype(np.float32)).astype(np.float64)
        for m in (m16, m16 + ulp32 / 4, m16 - ulp32 / 4, np.nextafter(m16, np.inf),
                  np.nextafter(m16, 0)):
            parts += [m.view(np.uint64), (-m).view(np.uint64)]
        nan_payloads = rng.integers(1, 1 << 52, size=5000, dtype=np.uint64)
        parts.append(np.uint64(0x7FF0000000000000) | nan_payloads)
        parts.append(np.uint64(0xFFF0000000000000) | nan_payloads)
        parts.append(np.array([
            0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000,           # +-0, +-inf
            0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001,   # NaNs (quiet, sNaN)
            0x7FF7FFFFFFFFFFFF, 0x7FF0000020000000, 0x7FF0000010000000, 0x7FFFFFFFFFFFFFFF,
            0x0000000000000001, 0x800FFFFFFFFFFFFF, 0x0010000000000000,   # f64 subnormal/min
            0x7FEFFFFFFFFFFFFF, 0xFFEFFFFFFFFFFFFF,                       # f64 max
            0x47EFFFFFE0000000, 0x47EFFFFFEFFFFFFF, 0x47EFFFFFF0000000,   # f32 overflow point
            0x47EFFFFFF0000001, 0x47F0000000000000,
            0x36A0000000000000, 0x3690000000000000, 0x3690000000000001,   # f32 min subnormal/2
            0x3E70000000000000, 0x3E60000000000000, 0x3E60000000000001,   # f16 min subnormal/2
            0x40EFFE0000000000, 0x40EFFDFFFFFFFFFF, 0x40EFFE0000000001,   # 65520 and around
            0x40EFFC0000000000,                                           # 65504
        ], dtype=np.uint64))
        return np.concatenate(parts)

    def test_f64_to_narrower(self):
        bits = self.f64_inputs()
        for dst in ("F32", "F16"):
            with self.subTest(dst=dst):
                self.check(bits, "F64", dst)
        with self.subTest(dst="BF16"):
            self.check(bits, "F64", "BF16", nan_bits_position_dependent=True)

    # --- (e): integers are never cast -------------------------------------------------------------

    def test_integers_are_never_cast(self):
        rng = np.random.default_rng(1)
        pos = np.arange(77, dtype=np.int64).reshape(1, 77)
        ints = [("text_model.embeddings.position_ids", "I64", pos),
                ("model_ema.num_updates", "I32", np.array(123456, dtype=np.int32)),
                ("i32", "I32", rng.integers(-2**31, 2**31, 33, dtype=np.int64).astype(np.int32)),
                ("i16", "I16", rng.integers(-2**15, 2**15, 9, dtype=np.int64).astype(np.int16)),
                ("i8", "I8", rng.integers(-128, 128, 5, dtype=np.int64).astype(np.int8)),
                ("u8", "U8", rng.integers(0, 256, 7, dtype=np.int64).astype(np.uint8)),
                ("u16", "U16", rng.integers(0, 2**16, 3, dtype=np.int64).astype(np.uint16)),
                ("u32", "U32", rng.integers(0, 2**32, 3, dtype=np.uint64).astype(np.uint32)),
                ("u64", "U64", rng.integers(0, 2**64 - 1, 3, dtype=np.uint64, endpoint=True)),
                ("i64", "I64", rng.integers(-2**63, 2**63 - 1, 4, dtype=np.int64, endpoint=True)),
                ("mask", "BOOL", np.array([1, 0, 1], np.uint8))]
        w = np.linspace(-1, 1, 10, dtype=np.float32)
        for dst in ("F16", "BF16", "F32", "F64"):
            with self.subTest(dst=dst):
                got = self.convert_file(ints + [("w", "F32", w)], dst)
                for name, dtype, arr in ints:
                    self.assertEqual(got[name], (dtype, list(arr.shape), arr.tobytes()), name)
                self.assertEqual(got["w"][0], dst)
                want = torch_to_bits(torch.from_numpy(w).to(TORCH[dst]), dst).tobytes()
                self.assertEqual(got["w"][2], want)


if __name__ == "__main__":
    unittest.main()
