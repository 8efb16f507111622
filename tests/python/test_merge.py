"""`ckptkit merge` end to end, against independent NumPy/PyTorch evaluations of the formulas in
docs/merge.md.

Every model here is a full-size file of a published layout (data/layouts/*.tsv) whose data
section is a hole except the tensors a test writes: a few small tensors of every α group, and a
few larger ones in full (so whole-tensor statistics, TIES's trimming and DARE's random stream
run over real sizes). Tensors that are holes in every input stay holes in the output, so a merge
of two 7 GB SDXL files reads and writes a few hundred KB; the tests read back only the tensors
they wrote. The test that every tensor lands in its group writes the first bytes of every
tensor and merges by copies (α 0 or 1), which keep the holes within a tensor too.

The oracles never use ckptkit's tables: the α group of each tensor is derived here from its
name by the rules of docs/merge.md, F16 rounding is NumPy's, BF16 rounding is PyTorch's,
F8_E4M3 is rounded to the nearest of its 254 finite values (ties to the even code), and DARE's
counter-based generator is re-implemented in NumPy uint64 arithmetic."""
import hashlib
import json
import math
import os
import re
import struct
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import torch_fixtures as tf  # noqa: E402
from ckpt_testlib import (TempDirTest, layout_table, numel, read_safetensors_header,  # noqa: E402
                          run, write_sparse_safetensors)

WRITE = ["--no-sync"]
PREFIX = 128  # bytes written at the start of every float tensor (a copy-only test)
SMALL = 256 << 10  # a tensor this size costs little to compute even when it is all zeros
# Allocated size an output may have. A merge leaves a hole where a whole chunk (about a
# megabyte or more) is a hole in every input, so each written tensor also costs the chunks of
# its big neighbours that share a disk block with it: up to 90 MB for the FLUX models here.
MAX_ALLOCATED = 128 << 20

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT = {"F64", "F32", "F16", "BF16", "F8_E4M3"}
NPINT = {"I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}
F32 = np.float32

# --- layouts -------------------------------------------------------------------------------------


table = layout_table


def sd15_f16_rows(shapes=None, drop=()):
    """SD1.5 as most checkpoints ship it: the LDM layout with its F32 tensors in F16."""
    return [(n, "F16" if d == "F32" else d, (shapes or {}).get(n, s))
            for n, d, s in table("sd15-ldm") if n not in drop]


# --- the α groups of docs/merge.md, from the names alone -----------------------------------------

UNET_LAST_OUT = {"sd1": 11, "sd2": 11, "sdxl": 8}
TEXT_PREFIXES = ("cond_stage_model.", "conditioner.embedders.", "text_encoders.")
VAE_PREFIXES = ("first_stage_model.", "vae.")
DIFFUSION_PREFIX = "model.diffusion_model."


def block_names(family):
    if family in UNET_LAST_OUT:
        last = UNET_LAST_OUT[family]
        return ([f"IN{i:02d}" for i in range(last + 1)] + ["M00"] +
                [f"OUT{i:02d}" for i in range(last + 1)])
    if family == "flux":
        return ([f"double_blocks.{i}" for i in range(19)] +
                [f"single_blocks.{i}" for i in range(38)])
    raise ValueError(family)


def group_names(family):
    return block_names(family) + ["text_encoder", "vae", "other"]


def group_of(family, key):
    """The α group of tensor `key` of a monolithic file, by docs/merge.md "Per-block α"."""
    if key.startswith(TEXT_PREFIXES):
        return "text_encoder"
    if key.startswith(VAE_PREFIXES):
        return "vae"
    if not key.startswith(DIFFUSION_PREFIX):
        return "other"  # training buffers, EMA copies
    inner = key[len(DIFFUSION_PREFIX):]
    if family in UNET_LAST_OUT:
        m = re.match(r"input_blocks\.(\d+)\.", inner)
        if m:
            return f"IN{int(m.group(1)):02d}"
        if inner.startswith("middle_block."):
            return "M00"
        m = re.match(r"output_blocks\.(\d+)\.", inner)
        if m:
            return f"OUT{int(m.group(1)):02d}"
        if inner.startswith(("time_embed.", "label_emb.")):
            return "IN00"
        if inner.startswith("out."):
            return f"OUT{UNET_LAST_OUT[family]:02d}"
        return "other"
    if family == "flux":
        m = re.match(r"(double_blocks|single_blocks)\.(\d+)\.", inner)
        return f"{m.group(1)}.{m.group(2)}" if m else "other"
    raise ValueError(family)


def group_counts(family, rows):
    """{group: (tensors, parameters)} over every tensor of `rows`."""
    counts = {}
    for name, _, shape in rows:
        t, p = counts.get(group_of(family, name), (0, 0))
        counts[group_of(family, name)] = (t + 1, p + numel(shape))
    return counts


# Supermerger's block-weight string positions (25 values; BASE first when 26).
SUPERMERGER_25 = ([f"IN{i:02d}" for i in range(12)] + ["M00"] +
                  [f"OUT{i:02d}" for i in range(12)])

# --- dtypes: exact widening to F32 and round-to-nearest-even narrowing ---------------------------


def _e4m3_table():
    codes = np.arange(256)
    e, m = (codes >> 3) & 15, codes & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7))
    v = np.where(codes >> 7, -v, v)
    v[(codes & 0x7F) == 0x7F] = np.nan
    return v


E4M3 = _e4m3_table()  # float64, exact


def f8_e4m3_encode(x):
    """Nearest finite E4M3 value (ties to the even code), sign kept; |x| must be <= 448."""
    ax = np.abs(np.asarray(x, np.float64))
    assert np.all(ax <= 448), "F8 overflow in a test value"
    pos = E4M3[:0x7F]  # codes 0..126, ascending
    hi = np.clip(np.searchsorted(pos, ax, side="left"), 0, 126)
    lo = np.clip(hi - 1, 0, 126)
    dlo, dhi = ax - pos[lo], pos[hi] - ax
    code = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    code = code | (np.signbit(np.asarray(x, np.float32)).astype(np.int64) << 7)
    return code.astype(np.uint8).tobytes()


def decode(raw, dtype):
    """Raw little-endian elements -> exact float32 values."""
    if dtype == "F32":
        return np.frombuffer(raw, "<f4").astype(F32)
    if dtype == "F16":
        return np.frombuffer(raw, "<f2").astype(F32)
    if dtype == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(F32)
    if dtype == "F8_E4M3":
        return E4M3[np.frombuffer(raw, np.uint8)].astype(F32)
    if dtype == "F64":
        return np.frombuffer(raw, "<f8").astype(F32)
    raise ValueError(dtype)


def encode(x, dtype):
    """float32 values -> raw elements of `dtype`, rounded to nearest even."""
    x = np.ascontiguousarray(x, F32)
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    if dtype == "BF16":
        return torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    if dtype == "F8_E4M3":
        return f8_e4m3_encode(x)
    raise ValueError(dtype)


# --- models --------------------------------------------------------------------------------------


class Model:
    """A sparse safetensors file: `rows` [(name, dtype, shape)] in file order, `vals`
    {name: float32 values of the leading elements written}, `raw` {name: the bytes written}."""

    def __init__(self, path, rows, vals, raw):
        self.path, self.rows, self.vals, self.raw = path, rows, vals, raw
        self.info = {n: (d, s) for n, d, s in rows}

    @property
    def name(self):
        return os.path.basename(self.path)


def build(path, rows, seed, fill=(), prefix_all=False, values=None, ints=None, metadata=None,
          scale=0.5):
    """Writes `rows` sparse. Float tensors named in `fill` (a list: in full; or a dict
    {name: leading elements}) get random N(0, scale²) values of their dtype, or `values`
    {name: floats}; with `prefix_all`, every other float tensor its first PREFIX bytes. Integer
    tensors come from `ints` {name: ints}, CLIP position_ids are 0..N-1; the rest is holes."""
    rng = np.random.default_rng(seed)
    fill = fill if isinstance(fill, dict) else {n: None for n in fill}
    vals, raw = {}, {}
    for name, dtype, shape in rows:
        n = numel(shape)
        if dtype in FLOAT:
            if values and name in values:
                x = np.asarray(values[name], F32).ravel()
                assert x.size <= n, name
            elif name in fill or prefix_all:
                count = fill.get(name) or (n if name in fill else
                                           min(n, max(1, PREFIX // ITEMSIZE[dtype])))
                x = (rng.standard_normal(min(count, n)) * scale).astype(F32)
            else:
                continue
            raw[name] = encode(x, dtype)
            vals[name] = decode(raw[name], dtype)
        elif ints and name in ints:
            raw[name] = np.asarray(ints[name], NPINT[dtype]).ravel().tobytes()
        elif name.endswith("position_ids"):
            raw[name] = np.arange(n, dtype=NPINT[dtype]).tobytes()
    write_sparse_safetensors(path, rows, raw, metadata)
    return Model(path, rows, vals, raw)


class Output:
    """A safetensors output, read lazily: its header and the regions asked for."""

    def __init__(self, path):
        self.path = path
        h = read_safetensors_header(path)
        self.metadata = h["metadata"]
        self.order = [e[0] for e in sorted(h["entries"], key=lambda e: e[3][0])]  # data order
        self.info = {n: (d, s, b) for n, d, s, (b, e) in h["entries"]}
        self.base = 8 + h["n"]
        self._f = open(path, "rb")

    def close(self):
        self._f.close()

    def read(self, name, length, skip=0):
        dtype, shape, begin = self.info[name]
        self._f.seek(self.base + begin + skip)
        return self._f.read(length)

    def values(self, name, count):
        dtype = self.info[name][0]
        return decode(self.read(name, count * ITEMSIZE[dtype]), dtype)

    def recipe(self):
        return json.loads(self.metadata["ckptkit.recipe"])


# --- the formulas of docs/merge.md in NumPy float32 ----------------------------------------------


class Copy:
    """The expected bytes are input i's, unchanged."""

    def __init__(self, i):
        self.i = i


def weighted(xs, weights):
    """r = x0·w0; r = r + xi·wi (the weights already float32)."""
    r = xs[0] * weights[0]
    for x, w in zip(xs[1:], weights[1:]):
        r = r + x * w
    return r


def ws2(a, b, alpha):
    return weighted([a, b], [F32(1 - alpha), F32(alpha)])


def ws2_or_copy(xs, alpha):
    if alpha == 0:
        return Copy(0)
    if alpha == 1:
        return Copy(1)
    return ws2(xs[0], xs[1], alpha)


def add_difference(a, b, c, alpha):
    d = b - c
    d = d * F32(alpha)
    return a + d


def train_difference(a, b, c, alpha):
    d = b - c
    s = np.abs(b - c) + np.abs(b - a)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s != 0, np.abs(b - a) / s, F32(0)).astype(F32)
    q = np.sign(d) * q
    n = q * np.abs(d)
    return a + n * F32(1.8 * alpha)


def ties_threshold(absval, n, density):
    """The k-th largest of |τ| over the whole tensor of n elements, of which only the leading
    absval.size may be non-zero; None when k = 0 (nothing kept)."""
    k = math.floor(density * n)
    if k == 0:
        return None
    if k > absval.size:
        return F32(0)
    return np.sort(absval)[absval.size - k]


def elect_and_mean(a, ts, weights, alpha):
    """TIES steps 2–4: sign election, disjoint mean, r = a + δ·f32(α)."""
    s = ts[0] * weights[0]
    for t, w in zip(ts[1:], weights[1:]):
        s = s + t * w
    gamma = np.where(s >= 0, F32(1), F32(-1))
    num = np.zeros_like(a)
    den = np.zeros_like(a)
    for t, w in zip(ts, weights):
        sel = np.sign(t) == gamma
        num = np.where(sel, num + t * w, num)
        den = np.where(sel, den + w, den)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(den > 0, num / den, F32(0)).astype(F32)
    return a + delta * F32(alpha)


def ties(xs, n, density, weights, alpha):
    a = xs[0]
    ts = []
    for x in xs[1:]:
        tau = x - a
        thr = ties_threshold(np.abs(tau), n, density)
        ts.append(np.zeros_like(tau) if thr is None else np.where(np.abs(tau) >= thr, tau, F32(0)))
    return elect_and_mean(a, ts, [F32(w) for w in weights], alpha)


M64 = (1 << 64) - 1


def fnv1a64(name):
    h = 0xcbf29ce484222325
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001b3) & M64
    return h


def dare_keep(name, i, count, seed, p):
    """keepᵢ(j) for j = 0 … count−1 of tensor `name`, input i (1 = B)."""
    base = np.uint64((seed ^ fnv1a64(name) ^ ((i * 0xd1b54a32d192ed03) & M64)) & M64)
    u = np.uint64
    with np.errstate(over="ignore"):
        z = base + np.arange(1, count + 1, dtype=np.uint64) * u(0x9e3779b97f4a7c15)
        z = (z ^ (z >> u(30))) * u(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> u(27))) * u(0x94d049bb133111eb)
        z = z ^ (z >> u(31))
    return (z >> u(40)) >= u(round(p * 2 ** 24))


def dare_keep_scalar(name, i, j, seed, p):
    """The same generator in Python integers (checks the vectorized one)."""
    z = seed ^ fnv1a64(name) ^ (i * 0xd1b54a32d192ed03 & M64)
    z = (z + (j + 1) * 0x9e3779b97f4a7c15) & M64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    z ^= z >> 31
    return (z >> 40) >= round(p * 2 ** 24)


def dare_tvs(name, xs, seed, p):
    a = xs[0]
    scale = F32(1 / (1 - p))
    ds = []
    for i, x in enumerate(xs[1:], start=1):
        tau = x - a
        keep = dare_keep(name, i, tau.size, seed, p)
        ds.append(np.where(keep, tau * scale, F32(0)))
    return ds


def dare(name, xs, seed, p, weights, alpha):
    ds = dare_tvs(name, xs, seed, p)
    delta = weighted(ds, [F32(w) for w in weights])
    return xs[0] + delta * F32(alpha)


def dare_ties(name, xs, seed, p, weights, alpha):
    return elect_and_mean(xs[0], dare_tvs(name, xs, seed, p), [F32(w) for w in weights], alpha)


def slerp_scalars(a, b, t):
    """(kind, s0, s1) from float64 statistics: ("linear", …) or ("slerp", s0, s1) in double."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = math.sqrt(np.dot(a64, a64)), math.sqrt(np.dot(b64, b64))
    if na == 0 or nb == 0:
        return "linear", None, None
    c = min(1.0, max(-1.0, float(np.dot(a64, b64)) / (na * nb)))
    if abs(c) > 0.9995:
        return "linear", c, None
    theta = math.acos(c)
    sin = math.sin(theta)
    return "slerp", math.sin((1 - t) * theta) / sin, math.sin(t * theta) / sin


def ulp_neighbours(x):
    f = F32(x)
    return [np.nextafter(f, F32(-np.inf)), f, np.nextafter(f, F32(np.inf))]


# --- test base -----------------------------------------------------------------------------------


class Cache:
    """Models shared by several tests (read-only inputs), made once for the whole file."""
    _tmp = None
    _models = {}

    @classmethod
    def get(cls, key, make):
        if key not in cls._models:
            if cls._tmp is None:
                root = os.environ.get("CKPTKIT_TEST_TMP")
                if root:
                    os.makedirs(root, exist_ok=True)
                cls._tmp = tempfile.TemporaryDirectory(dir=root)
            cls._models[key] = make(os.path.join(cls._tmp.name, key + ".safetensors"))
        return cls._models[key]

    @classmethod
    def cleanup(cls):
        if cls._tmp is not None:
            cls._tmp.cleanup()
        cls._tmp, cls._models = None, {}


def tearDownModule():
    Cache.cleanup()


def pick(family, rows, per_group=1, extra=()):
    """The `per_group` smallest float tensors (of at least 2 elements) of every α group,
    preferring those whose neighbours in the file are small too, and `extra`, in file order
    (at most 256 KiB each where the group allows). A merge computes a tensor
    in chunks of megabytes and leaves a chunk a hole only when it is one in every input, so a
    big neighbour sharing a disk block with a written tensor would be computed and written."""
    size = [numel(s) * ITEMSIZE[d] for _, d, s in rows]
    begin = [0]
    for x in size:
        begin.append(begin[-1] + x)

    def near(i):  # the largest other tensor within a disk block (4 KiB) of tensor i
        j, k, most = i, i, 0
        while j > 0 and begin[j] > begin[i] - 4096:
            j -= 1
            most = max(most, size[j])
        while k + 1 < len(rows) and begin[k + 1] < begin[i + 1] + 4096:
            k += 1
            most = max(most, size[k])
        return most

    by_group = {}
    for i, (n, d, s) in enumerate(rows):
        if d in FLOAT and numel(s) >= 2:
            by_group.setdefault(group_of(family, n), []).append(
                (size[i] > SMALL, near(i) > SMALL, numel(s), n))
    names = set(extra)
    for members in by_group.values():
        members.sort()
        small = [m for m in members if not m[0]][:per_group]
        names.update(m[-1] for m in small or members[:1])
    return [n for n, _, _ in rows if n in names]


# The SD1.5 tensors written in full in the shared SD1 models (about 27 K elements): the conv_in
# and final conv (TIES trimming and DARE over 11520 elements), and one of each other group.
SD1_FULL = ("model.diffusion_model.input_blocks.0.0.weight",
            "model.diffusion_model.out.2.weight",
            "model.diffusion_model.time_embed.0.bias",
            "cond_stage_model.transformer.text_model.final_layer_norm.weight",
            "first_stage_model.decoder.conv_in.bias",
            "betas")
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
GONE = "model.diffusion_model.input_blocks.1.1.proj_in.bias"  # the tensor B lacks in tests
# Written in part: the rest of the tensor is a hole in every input and must come out zeros.
SD1_PARTIAL = {"model.diffusion_model.middle_block.1.proj_in.bias": 64,
               "first_stage_model.encoder.conv_in.bias": 40}


def sd1_fill(rows=None):
    rows = rows or sd15_f16_rows()
    extra = SD1_FULL + (GONE, "model_ema.decay", "model.diffusion_model.out.0.bias",
                        "model.diffusion_model.out.2.bias")
    fill = {n: None for n in pick("sd1", rows, 1, extra)}
    fill.update(SD1_PARTIAL)
    return fill


def sd1(letter):
    """Shared SD1.5 F16 models A, B, C, D (different values, same layout)."""
    seed = "ABCD".index(letter) + 1
    return Cache.get("sd1-" + letter, lambda p: build(
        p, sd15_f16_rows(), seed, fill=sd1_fill(),
        ints={"model_ema.num_updates": [1000 * seed]}))


class MergeTest(TempDirTest):
    maxDiff = 4000

    def merge(self, *args, rc=0, json_report=True):
        """Runs `ckptkit merge ARGS` and requires exit `rc`; returns the --json report (exit 0)
        or the CompletedProcess."""
        argv = ["merge", *map(str, args), *WRITE] + (["--json"] if json_report else [])
        p = run(*argv, check=False)
        self.assertEqual(p.returncode, rc, f"ckptkit {' '.join(argv)} -> {p.returncode}\n"
                                           f"{p.stderr[-3000:]}")
        if rc != 0 or not json_report:
            return p
        try:
            report = json.loads(p.stdout)
        except ValueError as e:
            self.fail(f"merge --json printed invalid JSON ({e}):\n{p.stdout[:2000]}")
        out = report.get("output")
        if out and os.path.exists(out):
            allocated = os.stat(out).st_blocks * 512
            self.assertLess(allocated, MAX_ALLOCATED,
                            f"{out}: {allocated} bytes allocated: holes were not kept")
        return report

    def refused(self, args, reason, rc=2, outputs=()):
        """`ckptkit merge ARGS` exits `rc`, says `reason` (a regex) on stderr and leaves no file
        behind (none of `outputs`, nothing new in the test's folder)."""
        before = set(os.listdir(self.tmp))
        p = run("merge", *map(str, args), *WRITE, check=False)
        self.assertEqual(p.returncode, rc, f"ckptkit merge {' '.join(map(str, args))}\n"
                                           f"{p.stdout[-1000:]}{p.stderr[-2000:]}")
        self.assertRegex(p.stderr, reason)
        for o in outputs:
            self.assertFalse(os.path.exists(o), f"{o} was written")
        self.assertEqual(sorted(set(os.listdir(self.tmp)) - before), [], "files left behind")
        return p

    def output(self, path):
        out = Output(path)
        self.addCleanup(out.close)
        return out

    def assert_layout(self, out, base, dtype=None, skip=()):
        """The output has A's tensor names and shapes, and A's data order; float dtypes are
        `dtype` (A's when None), the others A's. (Compact messages: a diff of thousands of
        names takes difflib minutes.)"""
        want = [(n, dtype if dtype and d in FLOAT else d, s)
                for n, d, s in base.rows if n not in skip]
        got = {n: (n, out.info[n][0], out.info[n][1]) for n in out.order}
        wanted = {w[0]: w for w in want}
        self.assertEqual(sorted(set(got) - set(wanted))[:5], [], "tensors A does not have")
        self.assertEqual(sorted(set(wanted) - set(got))[:5], [], "tensors of A missing")
        bad = [(got[n], wanted[n]) for n in wanted if got[n] != wanted[n]]
        self.assertEqual(bad[:5], [], f"{len(bad)} tensors with another dtype or shape")
        with self.subTest("the output keeps A's tensor order (docs/merge.md)"):
            names = [n for n, _, _ in want]
            k = next((i for i, (x, y) in enumerate(zip(out.order, names)) if x != y), None)
            self.assertIsNone(k, f"data order differs from A's at position {k}: "
                                 f"{out.order[k:k + 3] if k is not None else ''} where A has "
                                 f"{names[k:k + 3] if k is not None else ''}")

    def assert_tensors(self, out, models, expect, dtype=None, names=None, diagnose=None,
                       zeros_after=False):
        """For every float tensor written in A (or `names`), the output's leading elements are
        exactly `expect(name, [float32 values of each input])` rounded to the output dtype, or
        input i's bytes when it returns Copy(i). `diagnose(name, got_bytes)` explains a
        mismatch. With `zeros_after`, the 64 bytes after the written part of SD1_PARTIAL are zeros
        (what is a hole in every input comes out +0)."""
        a = models[0]
        bad = []
        compared = 0
        for name in names if names is not None else a.vals:
            if name not in out.info:
                bad.append(f"{name}: not in the output")
                continue
            count = a.vals[name].size
            if count == 0:
                continue
            xs = [m.vals[name] for m in models]
            out_dtype = out.info[name][0]
            self.assertEqual(out_dtype, dtype or a.info[name][0], name)
            want = expect(name, xs)
            if want is None:
                continue
            if isinstance(want, Copy):
                src = models[want.i]
                self.assertEqual(src.info[name][0], out_dtype, "a copy changes no dtype here")
                want_raw = src.raw[name]
            else:
                want_raw = encode(want, out_dtype)
            got_raw = out.read(name, count * ITEMSIZE[out_dtype])
            compared += 1
            if got_raw != want_raw:
                got, exp = decode(got_raw, out_dtype), decode(want_raw, out_dtype)
                k = int(np.flatnonzero(got_raw_mask(got_raw, want_raw, out_dtype))[0])
                why = diagnose(name, got_raw) if diagnose else ""
                bad.append(f"{name} ({count} elements): element {k}: got {got[k]!r}, expected "
                           f"{exp[k]!r} (inputs {[float(x[k]) for x in xs]}); "
                           f"{int(got_raw_mask(got_raw, want_raw, out_dtype).sum())} differ{why}")
            elif zeros_after and name in SD1_PARTIAL:
                size = numel(out.info[name][1]) * ITEMSIZE[out_dtype]
                tail = out.read(name, min(64, size - len(got_raw)), skip=len(got_raw))
                if tail.strip(b"\0"):
                    bad.append(f"{name}: non-zero bytes after the written region (holes in "
                               f"every input should stay zeros)")
        self.assertEqual(bad[:8], [], f"{len(bad)} tensors differ")
        self.assertGreater(compared, 0, "nothing compared")

    def assert_ints_from_a(self, out, a):
        """Non-float tensors are A's bytes."""
        for name, (dtype, shape) in a.info.items():
            if dtype not in FLOAT and name in a.raw:
                self.assertEqual(out.read(name, len(a.raw[name])), a.raw[name], name)


def alpha_flags(alphas):
    return [x for g, v in alphas.items() for x in ("--alpha", f"{g}={v}")]


def got_raw_mask(got_raw, want_raw, dtype):
    size = ITEMSIZE[dtype]
    g = np.frombuffer(got_raw, np.uint8).reshape(-1, size)
    w = np.frombuffer(want_raw, np.uint8).reshape(-1, size)
    return np.any(g != w, axis=1)


# --- 1. weighted sum -----------------------------------------------------------------------------


class WeightedSum(MergeTest):
    def test_two_inputs_alpha(self):
        a, b = sd1("A"), sd1("B")
        out_path = self.path("ab.safetensors")
        report = self.merge(a.path, b.path, "--alpha", "0.3", "-o", out_path)
        out = self.output(out_path)
        self.assert_layout(out, a)
        self.assert_tensors(out, [a, b], lambda n, xs: ws2(xs[0], xs[1], 0.3), zeros_after=True)
        self.assert_ints_from_a(out, a)
        self.assertEqual(report["method"], "weighted-sum")
        self.assertEqual((report["architecture"], report["family"]), ("sd1", "sd1"))
        self.assertEqual(report["output"], out_path)
        self.assertEqual(report["tensors_merged"] + report["tensors_copied"], len(out.order))
        self.assertEqual(report["tensors_merged"], sum(d in FLOAT for _, d, _ in a.rows))
        self.assertEqual((report["missing"], report["not_in_a"], report["partial"]), ([], [], []))

    def test_per_block_alpha(self):
        a, b = sd1("A"), sd1("B")
        alphas = {"IN00": 0.8, "OUT11": 0.1, "M00": 0.65, "text_encoder": 0, "vae": 1}
        out_path = self.path("blocks.safetensors")
        report = self.merge(a.path, b.path, "--alpha", "0.3",
                            *alpha_flags(alphas), "-o", out_path)
        out = self.output(out_path)

        def expect(name, xs):
            return ws2_or_copy(xs, alphas.get(group_of("sd1", name), 0.3))
        self.assert_tensors(out, [a, b], expect)
        plan = {g["name"]: g for g in report["groups"]}
        counts = group_counts("sd1", a.rows)
        for g in group_names("sd1"):
            self.assertIn(g, plan)
            self.assertAlmostEqual(plan[g]["alpha"], alphas.get(g, 0.3), msg=g)
            self.assertEqual(plan[g]["tensors"], counts[g][0], g)
        self.assertEqual(plan["vae"]["action"], "copied from B")
        self.assertEqual(plan["text_encoder"]["action"], "copied from A")
        self.assertEqual(plan["M00"]["action"], "merged")
        for g, v in alphas.items():
            self.assertAlmostEqual(out.recipe()["blocks"][g], v, msg=g)

    def test_three_inputs_with_weights(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        w = [0.2, 0.3, 0.5]
        out_path = self.path("abc.safetensors")
        self.merge(a.path, b.path, c.path, "--weights", ",".join(map(str, w)), "-o", out_path)
        self.assert_tensors(self.output(out_path), [a, b, c],
                            lambda n, xs: weighted(xs, [F32(x) for x in w]))
        # No --weights: equal weights.
        out_path = self.path("abc-equal.safetensors")
        self.merge(a.path, b.path, c.path, "-o", out_path)
        self.assert_tensors(self.output(out_path), [a, b, c],
                            lambda n, xs: weighted(xs, [F32(1 / 3)] * 3))

    def test_weights_must_sum_to_one(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        out_path = self.path("bad.safetensors")
        w = [0.2, 0.3, 0.6]
        self.refused([a.path, b.path, c.path, "--weights", "0.2,0.3,0.6", "-o", out_path],
                     r"(?i)sum|normali[sz]e", outputs=[out_path])
        self.merge(a.path, b.path, c.path, "--weights", "0.2,0.3,0.6", "--normalize",
                   "-o", out_path)
        total = sum(w)
        self.assert_tensors(self.output(out_path), [a, b, c],
                            lambda n, xs: weighted(xs, [F32(x / total) for x in w]))

    def test_extrapolation(self):
        a, b = sd1("A"), sd1("B")
        out_path = self.path("x.safetensors")
        self.refused([a.path, b.path, "--alpha", "1.5", "-o", out_path],
                     r"(?i)alpha|α|extrapolat|1\.5", outputs=[out_path])
        self.merge(a.path, b.path, "--alpha", "1.5", "--allow-extrapolation", "-o", out_path)
        self.assert_tensors(self.output(out_path), [a, b],
                            lambda n, xs: ws2(xs[0], xs[1], 1.5), zeros_after=True)


# --- 2. add difference ---------------------------------------------------------------------------


class AddDifference(MergeTest):
    def test_f16(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        out_path = self.path("ad.safetensors")
        report = self.merge(a.path, b.path, c.path, "--method", "add-difference",
                            "--alpha", "0.7", "-o", out_path)
        self.assertEqual(report["method"], "add-difference")
        out = self.output(out_path)
        self.assert_layout(out, a)
        self.assert_tensors(out, [a, b, c], lambda n, xs: add_difference(*xs, 0.7))
        self.assert_ints_from_a(out, a)

    def test_bf16_output(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        out_path = self.path("ad-bf16.safetensors")
        self.merge(a.path, b.path, c.path, "--method", "add-difference", "--alpha", "0.45",
                   "--dtype", "bf16", "-o", out_path)
        out = self.output(out_path)
        self.assert_layout(out, a, dtype="BF16")
        self.assert_tensors(out, [a, b, c], lambda n, xs: add_difference(*xs, 0.45),
                            dtype="BF16")
        self.assert_ints_from_a(out, a)
        self.assertEqual(out.recipe().get("dtype", "").lower(), "bf16")

    def test_inpainting_conv_in(self):
        """inpaint-base + (finetune − base): channels 0..3 by the formula, 4..8 A's."""
        a = build(self.path("inpaint.safetensors"),
                  sd15_f16_rows({CONV_IN: [320, 9, 3, 3]}), 11, fill=sd1_fill())
        b, c = sd1("B"), sd1("C")
        out_path = self.path("mine-inpaint.safetensors")
        report = self.merge(a.path, b.path, c.path, "--method", "add-difference", "--alpha",
                            "1", "-o", out_path)
        out = self.output(out_path)
        self.assert_layout(out, a)
        self.assertEqual(out.info[CONV_IN][:2], ("F16", [320, 9, 3, 3]))
        self.assertEqual(report["partial"], [CONV_IN])
        self.assertNotIn(CONV_IN, report["missing"])
        got = out.values(CONV_IN, 320 * 9 * 9).reshape(320, 9, 3, 3)
        av = a.vals[CONV_IN].reshape(320, 9, 3, 3)
        want = av.copy()
        want[:, :4] = add_difference(av[:, :4], b.vals[CONV_IN].reshape(320, 4, 3, 3),
                                     c.vals[CONV_IN].reshape(320, 4, 3, 3), 1.0)
        want = decode(encode(want, "F16"), "F16").reshape(want.shape)
        self.assertTrue(np.array_equal(got[:, 4:].view(np.uint32), av[:, 4:].view(np.uint32)),
                        "channels 4..8 are not A's")
        diff = np.argwhere(got[:, :4].view(np.uint32) != want[:, :4].view(np.uint32))
        self.assertEqual(len(diff), 0, f"channels 0..3 differ at {diff[:5].tolist()}")
        others = [n for n in a.vals if n != CONV_IN]
        self.assert_tensors(out, [a, b, c], lambda n, xs: add_difference(*xs, 1.0), names=others)


# --- 3. train difference, slerp, ties, dare, dare-ties -------------------------------------------


class OtherMethods(MergeTest):
    def test_train_difference(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        out_path = self.path("td.safetensors")
        self.merge(a.path, b.path, c.path, "--method", "train-difference", "--alpha", "0.5",
                   "-o", out_path)
        self.assert_tensors(self.output(out_path), [a, b, c],
                            lambda n, xs: train_difference(*xs, 0.5), zeros_after=True)

    def test_slerp(self):
        t = 0.35
        rows = sd15_f16_rows()
        rng = np.random.default_rng(21)
        special = {"model.diffusion_model.out.0.weight": "parallel",
                   "model.diffusion_model.out.2.bias": "opposite",
                   "model.diffusion_model.out.0.bias": "a-zero"}
        av = (rng.standard_normal(320) * 0.5).astype(F32)
        a = build(self.path("a.safetensors"), rows, 31, fill=sd1_fill(), values={
            "model.diffusion_model.out.0.weight": av,
            "model.diffusion_model.out.2.bias": av[:4],
            "model.diffusion_model.out.0.bias": np.zeros(320, F32)})
        b = build(self.path("b.safetensors"), rows, 32, fill=sd1_fill(), values={
            "model.diffusion_model.out.0.weight": av * F32(1.001),
            "model.diffusion_model.out.2.bias": -av[:4]})
        out_path = self.path("slerp.safetensors")
        self.merge(a.path, b.path, "--method", "slerp", "--alpha", str(t), "-o", out_path)
        out = self.output(out_path)
        kinds = {}
        bad = []
        for name in a.vals:
            x, y = a.vals[name], b.vals[name]
            kind, s0, s1 = slerp_scalars(x, y, t)
            kinds[name] = kind
            got = out.read(name, len(a.raw[name]))
            if kind == "linear":
                cands = [ws2(x, y, t)]
            else:
                cands = [x * u + y * v for u in ulp_neighbours(s0) for v in ulp_neighbours(s1)]
            if not any(encode(cnd, "F16") == got for cnd in cands):
                bad.append(f"{name}: {kind} s0={s0} s1={s1}; got "
                           f"{decode(got, 'F16')[:4]}, expected {cands[len(cands) // 2][:4]}")
        self.assertEqual(bad[:8], [], f"{len(bad)} tensors differ")
        for name, kind in special.items():
            self.assertEqual(kinds[name], "linear", f"{kind} case not linear in the oracle")
        self.assertGreater(sum(k == "slerp" for k in kinds.values()), 20)

    def test_ties(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        for args, density, weights, alpha in ((["--density", "0.3", "--alpha", "0.8"],
                                               0.3, [1, 1], 0.8),
                                              (["--weights", "0.6,0.9", "--alpha", "1"],
                                               0.2, [0.6, 0.9], 1.0)):
            with self.subTest(args=args):
                out_path = self.path(f"ties-{density}.safetensors")
                self.merge(a.path, b.path, c.path, "--method", "ties", *args, "-o", out_path)
                self.assert_tensors(self.output(out_path), [a, b, c], lambda n, xs: ties(
                    xs, numel(a.info[n][1]), density, weights, alpha), zeros_after=True)
        # The trimming matters here: without it the full tensors would come out otherwise.
        xs = [m.vals[CONV_IN] for m in (a, b, c)]
        untrimmed = encode(ties(xs, xs[0].size, 1.0, [1, 1], 0.8), "F16")
        self.assertNotEqual(untrimmed, encode(ties(xs, xs[0].size, 0.3, [1, 1], 0.8), "F16"))

    def test_dare_generator_self_check(self):
        for j in (0, 1, 7, 1000):
            self.assertEqual(bool(dare_keep(CONV_IN, 2, j + 1, 99, 0.3)[j]),
                             dare_keep_scalar(CONV_IN, 2, j, 99, 0.3))

    def test_dare(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        p, seed, alpha = 0.3, 1234, 0.8
        out1 = self.path("dare1.safetensors")
        self.merge(a.path, b.path, c.path, "--method", "dare", "--drop", str(p), "--seed",
                   str(seed), "--alpha", str(alpha), "-o", out1)
        self.assert_tensors(self.output(out1), [a, b, c], lambda n, xs: dare(
            n, xs, seed, p, [0.5, 0.5], alpha), zeros_after=True)
        # Same seed, same bytes; another seed, other bytes.
        out2 = self.path("dare2.safetensors")
        out3 = self.path("dare3.safetensors")
        self.merge(a.path, b.path, c.path, "--method", "dare", "--drop", str(p), "--seed",
                   str(seed), "--alpha", str(alpha), "-o", out2)
        self.merge(a.path, b.path, c.path, "--method", "dare", "--drop", str(p), "--seed",
                   "987654321", "--alpha", str(alpha), "-o", out3)
        o1, o2, o3 = self.output(out1), self.output(out2), self.output(out3)
        n_same = n_diff = 0
        for name in a.vals:
            size = len(a.raw[name])
            r1, r2, r3 = o1.read(name, size), o2.read(name, size), o3.read(name, size)
            self.assertEqual(r1, r2, f"{name}: same seed, other bytes")
            n_same += r1 == r3
            n_diff += r1 != r3
        self.assertGreater(n_diff, 0.9 * (n_same + n_diff), "another seed changed little")
        self.assertEqual(o3.recipe().get("seed"), 987654321)

    def test_dare_kept_fraction(self):
        """Measured on the output alone: two inputs, α = 1, B far from A, so r = A exactly
        where dropped and r ≠ A where kept."""
        a, b = sd1("A"), sd1("B")
        p = 0.9
        out_path = self.path("dare-frac.safetensors")
        self.merge(a.path, b.path, "--method", "dare", "--drop", str(p), "--seed", "7",
                   "--alpha", "1", "-o", out_path)
        out = self.output(out_path)
        kept = total = 0
        for name in SD1_FULL:
            x, y = a.vals[name], b.vals[name]
            got = out.values(name, x.size)
            far = np.abs(y - x) > 0.05
            kept += int(np.sum(got[far] != x[far]))
            total += int(np.sum(far))
        sigma = math.sqrt(p * (1 - p) / total)
        self.assertGreater(total, 10000)
        self.assertLess(abs(kept / total - (1 - p)), 5 * sigma,
                        f"kept {kept}/{total} = {kept / total:.4f}, "
                        f"want {1 - p} ± {5 * sigma:.4f}")
        self.assert_tensors(out, [a, b], lambda n, xs: dare(n, xs, 7, p, [1.0], 1.0))

    def test_dare_ties(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        p, seed, alpha = 0.5, 42, 1.0
        out_path = self.path("dare-ties.safetensors")
        self.merge(a.path, b.path, c.path, "--method", "dare-ties", "--drop", str(p),
                   "--seed", str(seed), "--alpha", str(alpha), "-o", out_path)
        self.assert_tensors(self.output(out_path), [a, b, c], lambda n, xs: dare_ties(
            n, xs, seed, p, [1, 1], alpha), zeros_after=True)


# --- 4. per-block α on the tensors of each block -------------------------------------------------

FAMILY_LAYOUTS = {"sd1": "sd15-ldm",  # the published F32
                  "sdxl": "sdxl-sgm",
                  "flux": "flux1-dev-comfy-fp8-aio"}  # F8_E4M3, F16 and F32 tensors
# Tensors whose group is a convention (kohya's, supermerger's) or that belong to no block.
FAMILY_EXTRA = {
    "sd1": ("model.diffusion_model.time_embed.0.bias", "model.diffusion_model.out.0.bias",
            "model.diffusion_model.out.2.bias", "model_ema.decay"),
    "sdxl": ("model.diffusion_model.time_embed.0.bias", "model.diffusion_model.label_emb.0.0.bias",
             "model.diffusion_model.out.2.bias"),
    "flux": ("model.diffusion_model.img_in.bias", "model.diffusion_model.final_layer.linear.bias",
             "text_encoders.t5xxl.logit_scale"),
}


def family_model(family, letter, every=False):
    """A or B of a family: the two smallest tensors of every group and FAMILY_EXTRA written, or
    (`every`) the first PREFIX bytes of every float tensor."""
    layout = FAMILY_LAYOUTS[family]
    rows = table(layout)
    fill = () if every else pick(family, rows, 2, FAMILY_EXTRA[family])
    return Cache.get(f"{layout}-{'every' if every else 'picked'}-{letter}", lambda p: build(
        p, rows, 100 + ord(letter) + 50 * every, fill=fill, prefix_all=every, scale=1.0))


class PerBlock(MergeTest):
    def distinct_alphas(self, family, present):
        groups = [g for g in group_names(family) if g in present]
        return {g: round(0.02 + 0.95 * k / (len(groups) - 1), 4) for k, g in enumerate(groups)}

    def diagnose(self, family, a, b, alphas):
        def why(name, got_raw):
            dtype = a.info[name][0]
            hits = [g for g, al in alphas.items()
                    if encode(ws2(a.vals[name], b.vals[name], al), dtype) == got_raw]
            return (f"; expected group {group_of(family, name)}, the output is that of "
                    f"{hits or 'no group'}")
        return why

    def test_every_group_gets_its_alpha(self):
        """A distinct α per group, computed: each tensor's result is its own group's α."""
        for family in FAMILY_LAYOUTS:
            with self.subTest(family=family):
                a, b = family_model(family, "A"), family_model(family, "B")
                present = group_counts(family, a.rows)
                alphas = self.distinct_alphas(family, present)
                self.assertEqual(sorted({group_of(family, n) for n in a.vals}), sorted(present))
                out_path = self.path(f"{family}.safetensors")
                report = self.merge(a.path, b.path, "--alpha", "0.987", *alpha_flags(alphas),
                                    "-o", out_path)
                self.assertEqual(report["family"], family)
                out = self.output(out_path)
                self.assert_layout(out, a)
                self.assert_tensors(out, [a, b],
                                    lambda n, xs: ws2(xs[0], xs[1], alphas[group_of(family, n)]),
                                    diagnose=self.diagnose(family, a, b, alphas))
                self.assert_ints_from_a(out, a)
                plan = {g["name"]: g for g in report["groups"]}
                for g, (count, _) in present.items():
                    self.assertIn(g, plan)
                    self.assertAlmostEqual(plan[g]["alpha"], alphas[g], msg=g)
                    self.assertEqual(plan[g]["tensors"], count, g)
                os.remove(out_path)

    def test_every_tensor_in_its_group(self):
        """Every tensor of the model, by copies: merge k sets α = 1 on the groups whose number
        (1, 2, …) has bit k set and α = 0 elsewhere, so the inputs each tensor comes from spell
        its group's number."""
        for family in FAMILY_LAYOUTS:
            with self.subTest(family=family):
                a, b = family_model(family, "A", every=True), family_model(family, "B", every=True)
                groups = [g for g in group_names(family) if g in group_counts(family, a.rows)]
                code = dict.fromkeys(a.vals, 0)
                bad = []
                for bit in range(math.ceil(math.log2(len(groups) + 1))):
                    ones = [g for k, g in enumerate(groups, start=1) if k >> bit & 1]
                    out_path = self.path(f"{family}-bit{bit}.safetensors")
                    report = self.merge(a.path, b.path, "--alpha", "0",
                                        *alpha_flags(dict.fromkeys(ones, 1)), "-o", out_path)
                    self.assertEqual(report["tensors_merged"], 0, "α 0 or 1 copies")
                    out = Output(out_path)
                    for name in a.vals:
                        got = out.read(name, len(a.raw[name]))
                        if got == b.raw[name]:
                            code[name] |= 1 << bit
                        elif got != a.raw[name]:
                            bad.append(f"{name}: neither A's nor B's bytes (merge {bit})")
                    self.assert_ints_from_a(out, a)
                    out.close()
                    os.remove(out_path)
                got_group = {n: groups[c - 1] if 0 < c <= len(groups) else f"code {c}"
                             for n, c in code.items()}
                bad += [f"{n}: in {got_group[n]}, expected {group_of(family, n)}"
                        for n in a.vals if got_group[n] != group_of(family, n)]
                self.assertEqual(bad[:10], [], f"{len(bad)} tensors of {len(a.vals)} misplaced")

    def test_list_blocks(self):
        for family in FAMILY_LAYOUTS:
            with self.subTest(family=family):
                a = family_model(family, "A")
                p = run("merge", "--list-blocks", a.path, "--json")
                doc = json.loads(p.stdout)
                self.assertEqual(doc["family"], family)
                counts = group_counts(family, a.rows)
                got = [(g["name"], g["tensors"], g["parameters"]) for g in doc["groups"]
                       if g["tensors"]]
                want = [(g, *counts[g]) for g in group_names(family) if g in counts]
                self.assertEqual(got, want)
                for g in doc["groups"]:  # empty groups, if listed, are the family's
                    self.assertIn(g["name"], group_names(family))
                text = run("merge", "--list-blocks", a.path).stdout
                self.assertIn(block_names(family)[-1], text)
        # A diffusers-named UNet has no block names: all of it is `other`.
        rows = table("sdxl-diffusers-unet")
        unet = Cache.get("sdxl-diffusers-unet", lambda p: build(p, rows, 3))
        doc = json.loads(run("merge", "--list-blocks", unet.path, "--json").stdout)
        self.assertEqual([(g["name"], g["tensors"], g["parameters"]) for g in doc["groups"]
                          if g["tensors"]],
                         [("other", len(rows), sum(numel(s) for _, _, s in rows))])

    def check_string(self, family, values, want_alpha, extra=()):
        a, b = family_model(family, "A"), family_model(family, "B")
        out_path = self.path(f"{family}-string-{len(values)}.safetensors")
        report = self.merge(a.path, b.path, "--alpha", "0.9", "--blocks",
                            ",".join(map(str, values)), *extra, "-o", out_path)
        self.assert_tensors(self.output(out_path), [a, b], lambda n, xs: ws2(
            xs[0], xs[1], want_alpha.get(group_of(family, n), 0.9)),
            diagnose=self.diagnose(family, a, b, {**want_alpha, "(default)": 0.9}))
        blocks = report["recipe"]["blocks"]
        for g, v in want_alpha.items():
            self.assertAlmostEqual(blocks[g], v, msg=g)
        for g in blocks:
            self.assertIn(g, group_names(family), "a block the family does not have")
        os.remove(out_path)

    def test_supermerger_strings(self):
        values = [round(0.03 * (i + 1), 2) for i in range(26)]  # BASE, IN00 … OUT11
        # SD1: all 26 positions; --alpha M00= overrides the string.
        want = {"text_encoder": values[0], **dict(zip(SUPERMERGER_25, values[1:])),
                "M00": 0.77}
        self.check_string("sd1", values, want, extra=["--alpha", "M00=0.77"])
        # SD1, 25 values: no BASE, the text encoder takes the default.
        want = dict(zip(SUPERMERGER_25, values[1:]))
        self.check_string("sd1", values[1:], want)
        # SDXL: the same 26 positions, IN09–IN11 and OUT09–OUT11 ignored.
        sdxl_blocks = set(block_names("sdxl"))
        want = {"text_encoder": values[0],
                **{g: v for g, v in zip(SUPERMERGER_25, values[1:]) if g in sdxl_blocks}}
        self.assertEqual(len(want), 20)
        self.check_string("sdxl", values, want)
        # SDXL's own 20 values: BASE, IN00–IN08, M00, OUT00–OUT08.
        own = [round(0.04 * (i + 1), 2) for i in range(20)]
        want = {"text_encoder": own[0], **dict(zip(block_names("sdxl"), own[1:]))}
        self.check_string("sdxl", own, want)


# --- 5. refusals ---------------------------------------------------------------------------------


class Refusals(MergeTest):
    def test_refusals(self):
        a, b = sd1("A"), sd1("B")
        xl = family_model("sdxl", "A")
        refiner = Cache.get("sdxl-refiner", lambda p: build(p, table("sdxl-refiner-sgm"), 5))
        out = self.path("out.safetensors")
        missing = self.path("no-such-model.safetensors")
        cases = [
            ("sd1 with sdxl", [a.path, xl.path], r"(?i)(sd1|sd-?1).*sdxl|sdxl.*(sd1|sd-?1)"),
            ("sdxl with its refiner", [xl.path, refiner.path], r"sdxl-refiner"),
            ("missing input", [a.path, missing], re.escape("no-such-model")),
            ("unknown method", [a.path, b.path, "--method", "average-of-doom"],
             r"average-of-doom"),
            ("unknown SD1 block", [a.path, b.path, "--alpha", "IN12=0.5"], r"IN12"),
            ("unknown SDXL block", [xl.path, family_model("sdxl", "B").path,
                                    "--alpha", "IN09=0.5"], r"IN09"),
            ("alpha out of range", [a.path, b.path, "--alpha", "1.5"],
             r"(?i)alpha|α|extrapolat|range"),
            ("add-difference with two inputs", [a.path, b.path, "--method", "add-difference"],
             r"(?i)input"),
            ("slerp with three inputs", [a.path, b.path, sd1("C").path, "--method", "slerp"],
             r"(?i)input"),
            ("density out of range", [a.path, b.path, sd1("C").path, "--method", "ties",
                                      "--density", "0"], r"(?i)density"),
            ("drop out of range", [a.path, b.path, "--method", "dare", "--drop", "1"],
             r"(?i)drop"),
            ("block string of the wrong length", [a.path, b.path, "--blocks", "0.5,0.5,0.5"],
             r"(?i)block|value"),
            ("one weight per input", [a.path, b.path, "--weights", "0.5,0.4,0.1"],
             r"(?i)weight"),
            ("a part from an input not given", [a.path, b.path, "--vae-from", "C"],
             r"--vae-from|\bC\b"),
            ("alpha not a number", [a.path, b.path, "--alpha", "half"], r"half"),
        ]
        for what, args, reason in cases:
            with self.subTest(what):
                self.refused(args + ["-o", out], reason, outputs=[out])

    def test_missing_key_error_policy(self):
        a = sd1("A")
        gone = GONE
        b = build(self.path("b-missing.safetensors"), sd15_f16_rows(drop={gone}), 2)
        out = self.path("out.safetensors")
        self.refused([a.path, b.path, "--missing", "error", "-o", out], re.escape(gone),
                     outputs=[out])

    def test_dangerous_ckpt(self):
        canary = tf.canary_path(self.tmp, "merge")
        bad = self.path("bad.ckpt")
        sd = subset_state_dict(np.random.default_rng(1))
        sd["zz_callback"] = tf._Reduce(os.system, ("touch " + canary,))
        tf.save({"state_dict": sd}, bad)
        b = build(self.path("b.safetensors"), subset_rows(), 4, fill=subset_full())
        out = self.path("out.safetensors")
        self.refused([bad, b.path, "-o", out], r"(?i)dangerous|would run code", rc=1,
                     outputs=[out])
        self.assertFalse(os.path.exists(canary), "A PAYLOAD RAN")


# --- 6. what is not merged: integers, missing keys -----------------------------------------------


class NotMerged(MergeTest):
    def test_integers_and_missing_keys(self):
        a = sd1("A")
        gone = GONE
        rows = [r for r in sd15_f16_rows() if r[0] != gone]
        pos = np.arange(77)
        pos[[10, 11]] = [11, 10]
        b = build(self.path("b.safetensors"), rows, 2, fill=sd1_fill(), ints={
            "cond_stage_model.transformer.text_model.embeddings.position_ids": pos,
            "model_ema.num_updates": [12]})
        # take-a (default): A's tensor, listed.
        out_path = self.path("take-a.safetensors")
        report = self.merge(a.path, b.path, "--alpha", "0.5", "-o", out_path)
        out = self.output(out_path)
        self.assert_layout(out, a)
        self.assertEqual(report["missing"], [gone])
        self.assert_tensors(out, [a, b], lambda n, xs: ws2(xs[0], xs[1], 0.5),
                            names=[n for n in a.vals if n != gone])
        self.assertEqual(out.read(gone, len(a.raw[gone])), a.raw[gone])
        self.assert_ints_from_a(out, a)
        self.assertNotEqual(a.raw["model_ema.num_updates"], b.raw["model_ema.num_updates"])
        # skip: left out, listed.
        out_path = self.path("skip.safetensors")
        report = self.merge(a.path, b.path, "--alpha", "0.5", "--missing", "skip",
                            "-o", out_path)
        out = self.output(out_path)
        self.assert_layout(out, a, skip={gone})
        self.assertEqual(report["missing"], [gone])
        self.assert_tensors(out, [a, b], lambda n, xs: ws2(xs[0], xs[1], 0.5),
                            names=[n for n in a.vals if n != gone])

    def test_tensors_only_b_has(self):
        extra = "model_ema.decay"
        a = build(self.path("a.safetensors"), sd15_f16_rows(drop={extra}), 1)
        b = sd1("B")
        out_path = self.path("out.safetensors")
        report = self.merge(a.path, b.path, "-o", out_path)
        self.assertEqual(report["not_in_a"], [extra])
        self.assertEqual(report["missing"], [])
        out = self.output(out_path)
        self.assertNotIn(extra, out.info)
        self.assert_layout(out, a)


# --- 7. parts copied from one input --------------------------------------------------------------


class Parts(MergeTest):
    def test_vae_from_b(self):
        a, b = sd1("A"), sd1("B")
        out_path = self.path("vae-b.safetensors")
        report = self.merge(a.path, b.path, "--alpha", "0.25", "--vae-from", "B",
                            "-o", out_path)

        def expect(name, xs):
            return Copy(1) if name.startswith("first_stage_model.") else ws2(xs[0], xs[1], 0.25)
        self.assert_tensors(self.output(out_path), [a, b], expect)
        plan = {g["name"]: g for g in report["groups"]}
        self.assertEqual(plan["vae"]["action"], "copied from B")
        self.assertEqual(plan["IN00"]["action"], "merged")

    def test_parts_with_three_inputs(self):
        a, b, c = sd1("A"), sd1("B"), sd1("C")
        out_path = self.path("parts.safetensors")
        self.merge(a.path, b.path, c.path, "--method", "add-difference", "--alpha", "0.6",
                   "--vae-from", "C", "--text-encoder-from", "B", "-o", out_path)

        def expect(name, xs):
            g = group_of("sd1", name)
            return {"vae": Copy(2), "text_encoder": Copy(1)}.get(g) or add_difference(*xs, 0.6)
        self.assert_tensors(self.output(out_path), [a, b, c], expect)


# --- 8. provenance -------------------------------------------------------------------------------

SUBSET = {  # a small SD1 checkpoint (real names and shapes; detected as sd1)
    "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
    "model.diffusion_model.input_blocks.0.0.bias": [320],
    "model.diffusion_model.time_embed.0.weight": [1280, 320],  # zeros: a view / a hole
    "model.diffusion_model.time_embed.0.bias": [1280],
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768],
    "model.diffusion_model.middle_block.1.proj_in.bias": [1280],
    "model.diffusion_model.out.2.weight": [4, 320, 3, 3],
    "model.diffusion_model.out.2.bias": [4],
    "cond_stage_model.transformer.text_model.embeddings.position_ids": [1, 77],
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": [768],
    "first_stage_model.decoder.conv_in.bias": [512],
}


SUBSET_ZERO = "model.diffusion_model.time_embed.0.weight"


def subset_rows():
    return [(n, "I64" if n.endswith("position_ids") else "F16", s) for n, s in SUBSET.items()]


def subset_full():
    """The subset's tensors to fill in full: all but the big zero one."""
    return [n for n in SUBSET if n != SUBSET_ZERO and not n.endswith("position_ids")]


def subset_state_dict(rng):
    """SUBSET as torch tensors that are all views into one 32 K-element F16 storage (so the
    .ckpt holds 64 KB whatever the shapes): each view contiguous over its inner dims up to
    4096 elements, with small overlapping strides outside."""
    values = (rng.standard_normal(32768) * 0.5).astype(np.float16)
    values[-1] = 0
    storage = torch.from_numpy(values)
    sd = {}
    for i, (name, shape) in enumerate(SUBSET.items()):
        if name.endswith("position_ids"):
            sd[name] = torch.arange(77, dtype=torch.int64).unsqueeze(0)
            continue
        if name == SUBSET_ZERO:
            sd[name] = storage.as_strided(shape, [0] * len(shape), storage.numel() - 1)
            continue
        strides, extent = [0] * len(shape), 1
        for d in reversed(range(len(shape))):
            strides[d] = extent if extent * shape[d] <= 4096 else 7
            extent = extent * shape[d] if extent * shape[d] <= 4096 else extent
        offset = 97 * i
        top = offset + sum((s - 1) * st for s, st in zip(shape, strides))
        assert top < storage.numel(), name
        sd[name] = storage.as_strided(shape, strides, offset)
    return sd


class Provenance(MergeTest):
    def test_recipe_and_modelspec(self):
        rows = sd15_f16_rows()
        meta = {"my.note": "kept", "ss_network_dim": "16", "sshs_model_hash": "abc",
                "modelspec.hash_sha256": "0x" + "1" * 64, "modelspec.title": "A's title"}
        a = build(self.path("anime.safetensors"), rows, 1, metadata=meta)
        b = sd1("B")
        out_path = self.path("mix.safetensors")
        report = self.merge(a.path, b.path, "--alpha", "0.3", "--alpha", "IN05=0.9",
                            "-o", out_path)
        out = self.output(out_path)
        m = out.metadata
        rec = out.recipe()
        self.assertEqual(rec["method"], "weighted-sum")
        self.assertAlmostEqual(rec["alpha"], 0.3)
        self.assertAlmostEqual(rec["blocks"]["IN05"], 0.9)
        self.assertEqual([(i["name"], i["bytes"]) for i in rec["inputs"]],
                         [(a.name, os.path.getsize(a.path)), (b.name, os.path.getsize(b.path))])
        self.assertEqual(report["recipe"], rec)
        self.assertEqual([x.strip() for x in m["modelspec.merged_from"].split(",")],
                         [a.name, b.name])
        self.assertEqual(m.get("modelspec.architecture"), "stable-diffusion-v1")
        self.assertIn("modelspec.sai_model_spec", m)
        title = m.get("modelspec.title", "")
        self.assertRegex(title, r"(?i)merge")
        for stem in ("anime", os.path.splitext(b.name)[0]):
            self.assertIn(stem, title)
        self.assertEqual(m.get("my.note"), "kept")
        for gone in ("ss_network_dim", "sshs_model_hash", "modelspec.hash_sha256"):
            self.assertNotIn(gone, m)
        self.assertEqual([(i["name"], i["bytes"]) for i in report["inputs"]],
                         [(a.name, os.path.getsize(a.path)), (b.name, os.path.getsize(b.path))])
        self.assertEqual(report["inputs"][0]["architecture"], "sd1")

    def test_hash_inputs_and_title(self):
        rows = subset_rows()
        a = build(self.path("small-a.safetensors"), rows, 1, fill=subset_full())
        b = build(self.path("small-b.safetensors"), rows, 2, fill=subset_full())
        out_path = self.path("small.safetensors")
        report = self.merge(a.path, b.path, "--hash-inputs", "--title", "Tiny mix",
                            "--method", "slerp", "--alpha", "0.5", "-o", out_path)
        out = self.output(out_path)
        want = []
        for model in (a, b):
            with open(model.path, "rb") as f:
                want.append(hashlib.sha256(f.read()).hexdigest()[:10])
        self.assertEqual([i.get("autov2", "").lower() for i in out.recipe()["inputs"]], want)
        self.assertEqual([i.get("autov2", "").lower() for i in report["inputs"]], want)
        self.assertEqual(out.metadata.get("modelspec.title"), "Tiny mix")
        self.assertEqual(out.recipe()["method"], "slerp")


# --- 9. a .ckpt input ----------------------------------------------------------------------------


class CkptInput(MergeTest):
    def test_ckpt_merges_like_its_safetensors(self):
        sd = subset_state_dict(np.random.default_rng(5))
        ckpt = self.path("a.ckpt")
        tf.save({"state_dict": sd, "global_step": 1000}, ckpt)
        self.assertLess(os.path.getsize(ckpt), 200_000)
        rows = subset_rows()
        values = {n: sd[n].contiguous().float().numpy() for n, d, _ in rows if d == "F16"}
        values[SUBSET_ZERO] = np.zeros(0, F32)  # a hole here, zeros in the .ckpt
        a = build(self.path("a.safetensors"), rows, 0, values=values)
        self.assertEqual(a.raw[CONV_IN], tf.tensor_bytes(sd[CONV_IN]))
        b = build(self.path("b.safetensors"), rows, 6, fill=subset_full())
        outs = {}
        for src in (ckpt, a.path):
            out_path = self.path(os.path.basename(src) + "-merged.safetensors")
            report = self.merge(src, b.path, "--alpha", "0.3", "-o", out_path)
            self.assertEqual(report["family"], "sd1")
            outs[src] = self.output(out_path)
            self.assert_tensors(outs[src], [a, b], lambda n, xs: ws2(xs[0], xs[1], 0.3),
                                names=subset_full())
            # time_embed.0.weight: zeros in A (a view of one zero), a hole in B.
            self.assertFalse(outs[src].read(SUBSET_ZERO, 1280 * 320 * 2).strip(b"\0"))
            self.assert_ints_from_a(outs[src], a)
        x, y = outs[ckpt], outs[a.path]
        self.assertEqual(x.order, y.order)
        for name in x.order:
            dtype, shape, _ = x.info[name]
            self.assertEqual((dtype, shape), y.info[name][:2], name)
            size = numel(shape) * ITEMSIZE[dtype]
            self.assertEqual(x.read(name, size), y.read(name, size), name)


# --- 10. recipes ---------------------------------------------------------------------------------


class Recipes(MergeTest):
    def same_tensors(self, p, q, names):
        x, y = self.output(p), self.output(q)
        self.assertEqual(x.order, y.order)
        for name in names:
            size = min(numel(x.info[name][1]) * ITEMSIZE[x.info[name][0]], 4096)
            self.assertEqual(x.read(name, size), y.read(name, size), name)
        return x, y

    def test_recipe_equals_shorthand(self):
        models = [build(self.path(f"{k}.safetensors"), sd15_f16_rows(), s, fill=sd1_fill())
                  for k, s in (("anime", 1), ("photo", 2), ("base", 3))]
        recipe = self.path("mix.toml")
        with open(recipe, "w", encoding="utf-8") as f:
            f.write('inputs = ["anime.safetensors", "photo.safetensors", "base.safetensors"]\n'
                    'output = "mix.safetensors"\n'
                    'method = "add-difference"\n'
                    'alpha = 0.6\n'
                    'title = "Anime-photo mix"\n'
                    '\n'
                    '[blocks]\n'
                    'IN00 = 0.2\n'
                    'M00 = 1.0\n'
                    'text_encoder = 0.0\n'
                    '\n'
                    '[parts]\n'
                    'vae = "B"\n')
        cwd = os.getcwd()
        report = self.merge("--recipe", recipe)
        self.assertEqual(os.getcwd(), cwd)
        from_recipe = self.path("mix.safetensors")
        self.assertTrue(os.path.exists(from_recipe), "the recipe's output is relative to it")
        self.assertEqual(os.path.realpath(report["output"]), os.path.realpath(from_recipe))
        shorthand = self.path("shorthand.safetensors")
        self.merge(*[m.path for m in models], "--method", "add-difference", "--alpha", "0.6",
                   "--alpha", "IN00=0.2", "--alpha", "M00=1", "--alpha", "text_encoder=0",
                   "--vae-from", "B", "--title", "Anime-photo mix", "-o", shorthand)
        x, y = self.same_tensors(from_recipe, shorthand, list(models[0].vals))
        alphas = {"IN00": 0.2, "M00": 1.0, "text_encoder": 0.0}

        def expect(name, xs):
            g = group_of("sd1", name)
            return Copy(1) if g == "vae" else add_difference(*xs, alphas.get(g, 0.6))
        self.assert_tensors(x, models, expect)
        rx, ry = x.recipe(), y.recipe()
        for key in ("method", "alpha", "blocks"):
            self.assertEqual(rx[key], ry[key], key)
        self.assertEqual(x.metadata.get("modelspec.title"), "Anime-photo mix")

        # -o overrides the recipe's output; a flag overrides a value of the recipe.
        os.remove(from_recipe)
        other = self.path("elsewhere.safetensors")
        self.merge("--recipe", recipe, "-o", other, "--alpha", "0.25")
        self.assertFalse(os.path.exists(from_recipe))
        self.assert_tensors(self.output(other), models, lambda n, xs: Copy(1) if group_of(
            "sd1", n) == "vae" else add_difference(*xs, alphas.get(group_of("sd1", n), 0.25)))

    def test_recipe_dare_and_string(self):
        models = [build(self.path(f"{k}.safetensors"), sd15_f16_rows(), s, fill=sd1_fill())
                  for k, s in (("a", 1), ("b", 2), ("c", 3))]
        values = [round(0.035 * (i + 1), 3) for i in range(26)]
        recipe = self.path("dare.toml")
        with open(recipe, "w", encoding="utf-8") as f:
            f.write('inputs = ["a.safetensors", "b.safetensors", "c.safetensors"]\n'
                    'output = "from-recipe.safetensors"\n'
                    'method = "dare"\n'
                    'alpha = 0.5\n'
                    'drop = 0.3\n'
                    'seed = 77\n'
                    'weights = [0.25, 0.75]\n'
                    '[blocks]\n'
                    f'string = "{",".join(map(str, values))}"\n'
                    'OUT03 = 0.5\n')
        self.merge("--recipe", recipe)
        shorthand = self.path("shorthand.safetensors")
        self.merge(*[m.path for m in models], "--method", "dare", "--alpha", "0.5", "--drop",
                   "0.3", "--seed", "77", "--weights", "0.25,0.75", "--blocks",
                   ",".join(map(str, values)), "--alpha", "OUT03=0.5", "-o", shorthand)
        x, _ = self.same_tensors(self.path("from-recipe.safetensors"), shorthand,
                                 list(models[0].vals))
        alphas = {"text_encoder": values[0], **dict(zip(SUPERMERGER_25, values[1:])),
                  "OUT03": 0.5}
        self.assert_tensors(x, models, lambda n, xs: dare(
            n, xs, 77, 0.3, [0.25, 0.75], alphas.get(group_of("sd1", n), 0.5)))

    def test_recipe_errors_name_line_and_column(self):
        a, b = sd1("A"), sd1("B")
        recipe = self.path("bad.toml")
        with open(recipe, "w", encoding="utf-8") as f:
            f.write(f'inputs = ["{a.path}", "{b.path}"]\n'
                    'output = "bad-out.safetensors"\n'
                    'alhpa = 0.5\n')
        self.refused(["--recipe", recipe], r"(?s)(?=.*alhpa)(?=.*(:3:\d+|line 3\b))",
                     outputs=[self.path("bad-out.safetensors")])
        with open(recipe, "w", encoding="utf-8") as f:
            f.write(f'inputs = ["{a.path}", "{b.path}"]\n'
                    'output = "bad-out.safetensors"\n'
                    'alpha = "half"\n')
        self.refused(["--recipe", recipe], r"(?i)alpha",
                     outputs=[self.path("bad-out.safetensors")])


# --- 11. dry run ---------------------------------------------------------------------------------


class DryRun(MergeTest):
    def test_dry_run_writes_nothing(self):
        a, b = sd1("A"), sd1("B")
        out_path = self.path("dry.safetensors")
        before = sorted(os.listdir(self.tmp))
        report = self.merge(a.path, b.path, "--alpha", "0.4", "--alpha", "OUT02=1",
                            "--vae-from", "A", "--dry-run", "-o", out_path)
        self.assertFalse(os.path.exists(out_path))
        self.assertEqual(sorted(os.listdir(self.tmp)), before)
        counts = group_counts("sd1", a.rows)
        plan = {g["name"]: g for g in report["groups"]}
        self.assertEqual(sorted(plan), sorted(counts))
        for g, (n, _) in counts.items():
            self.assertEqual(plan[g]["tensors"], n, g)
            self.assertAlmostEqual(plan[g]["alpha"], {"OUT02": 1}.get(g, 0.4), msg=g)
        self.assertEqual(plan["OUT02"]["action"], "copied from B")
        self.assertEqual(plan["vae"]["action"], "copied from A")
        self.assertEqual(plan["IN04"]["action"], "merged")
        # Without --json the plan is printed too.
        p = run("merge", a.path, b.path, "--dry-run", "-o", out_path, *WRITE)
        self.assertIn("text_encoder", p.stdout + p.stderr)
        self.assertRegex(p.stdout + p.stderr, r"\b1143 tensors merged")
        self.assertFalse(os.path.exists(out_path))


if __name__ == "__main__":
    unittest.main()
