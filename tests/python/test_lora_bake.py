"""`lora bake` against torch 1.13 doing the documented operations (docs/lora.md):

    w = base (F32); per LoRA in order: acc = 0; for k in 0..r-1: acc = acc + up[:, k] * down[k, :]
    w = w + acc * float32(strength * alpha / rank); finally w rounded once to the output dtype

bit for bit, on an SD1.5 base of the published layout (sparse except the targets) with a kohya
LoRA (linear, 3x3 LoCon, text encoder, full diff) and a PEFT LoRA on a shared target; and the
refusals, which write nothing."""
import json
import os
import subprocess
import unittest

import numpy as np

from ckpt_testlib import (TempDirTest, layout_table, read_safetensors_header, run,
                          write_safetensors, write_sparse_safetensors)

PY = "/usr/bin/python3"
D = "model.diffusion_model."
Q = D + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"   # F32 [320, 320]
CONV = D + "input_blocks.1.0.in_layers.2.weight"                      # F32 [320, 320, 3, 3]
PROJ = D + "input_blocks.1.1.proj_in.weight"                          # F32 [320, 320, 1, 1]
TE = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"  # [768, 768]
UNTOUCHED = D + "input_blocks.2.1.transformer_blocks.0.attn1.to_k.weight"

# Both oracles read the spec (argv[1]) and tensors through the index files index() writes.
ORACLE_PRELUDE = r"""
import json, sys, numpy as np, torch
spec = json.load(open(sys.argv[1]))
def arr(path, name):
    h = json.load(open(path + ".json"))[name]
    with open(path, "rb") as f:
        f.seek(h["start"])
        raw = f.read(h["end"] - h["start"])
    return torch.from_numpy(np.frombuffer(raw, dtype=h["np"]).astype(np.float32).reshape(h["shape"]).copy())
"""

ORACLE = ORACLE_PRELUDE + r"""
out = {}
for target, info in spec["targets"].items():
    w = arr(spec["base"], target)
    shape = w.shape
    w = w.reshape(shape[0], -1).clone()
    for p in info:
        if p["kind"] == "full":
            acc = arr(p["file"], p["diff"]).reshape(shape[0], -1)
        else:
            up = arr(p["file"], p["up"]).reshape(shape[0], -1)
            down = arr(p["file"], p["down"])
            down = down.reshape(down.shape[0], -1)
            acc = torch.zeros(up.shape[0], down.shape[1], dtype=torch.float32)
            for k in range(up.shape[1]):
                acc = acc + up[:, k:k + 1] * down[k:k + 1, :]
        w = w + acc * torch.tensor(np.float32(p["factor"]))
    w = w.reshape(shape)
    out[target] = (w.half() if spec["dtype"] == "F16" else w).numpy().tobytes().hex()
json.dump(out, open(sys.argv[2], "w"))
"""

NP = {"F32": "<f4", "F16": "<f2"}


def index(path):
    """Sidecar index for the oracle: name -> byte range and dtype (read by our own reader)."""
    h = read_safetensors_header(path)
    base = 8 + h["n"]
    idx = {n: {"start": base + b, "end": base + e, "np": NP.get(dt, "u1"), "shape": shape}
           for n, dt, shape, (b, e) in h["entries"]}
    with open(path + ".json", "w") as f:
        json.dump(idx, f)


LYCORIS_ORACLE = ORACLE_PRELUDE + r"""
def product(a, b):  # A @ B with each element summed over the rank in index order
    acc = torch.zeros(a.shape[0], b.shape[1], dtype=torch.float32)
    for k in range(a.shape[1]):
        acc = acc + a[:, k:k + 1] * b[k:k + 1, :]
    return acc
out = {}
L = spec["lora"]
for target, p in spec["targets"].items():
    w = arr(spec["base"], target)
    shape = w.shape
    m = p["module"]
    if p["kind"] == "loha":
        a1, b1 = arr(L, m + ".hada_w1_a"), arr(L, m + ".hada_w1_b")
        a2, b2 = arr(L, m + ".hada_w2_a"), arr(L, m + ".hada_w2_b")
        dw = product(a1, b1) * product(a2, b2)
    elif p["kind"] == "lokr":
        w1 = arr(L, m + ".lokr_w1")
        w2 = product(arr(L, m + ".lokr_w2_a"), arr(L, m + ".lokr_w2_b"))
        dw = torch.kron(w1, w2)
    else:  # LoCon with a Tucker core
        up = arr(L, m + ".lora_up.weight").flatten(1)
        mid = arr(L, m + ".lora_mid.weight")
        down = arr(L, m + ".lora_down.weight").flatten(1)
        M = torch.zeros(up.shape[0], mid.shape[1], mid.shape[2], mid.shape[3])
        for a in range(up.shape[1]):
            M = M + up[:, a].reshape(-1, 1, 1, 1) * mid[a].unsqueeze(0)
        dw = torch.zeros(up.shape[0], down.shape[1], mid.shape[2], mid.shape[3])
        for b in range(down.shape[0]):
            dw = dw + M[:, b].unsqueeze(1) * down[b].reshape(1, -1, 1, 1)
    w = w + dw.reshape(shape) * torch.tensor(np.float32(p["factor"]))
    out[target] = w.numpy().tobytes().hex()
json.dump(out, open(sys.argv[2], "w"))
"""


FLUX_ORACLE = r"""
import sys, numpy as np, torch
base = np.fromfile(sys.argv[1], dtype="<u2").reshape(9216, 3072)
w = torch.from_numpy((base.astype(np.uint32) << 16).view(np.float32))
a = torch.from_numpy(np.fromfile(sys.argv[2], dtype="<f4").reshape(4, 3072))
b = torch.from_numpy(np.fromfile(sys.argv[3], dtype="<f4").reshape(3072, 4))
acc = torch.zeros(3072, 3072)
for k in range(4):
    acc = acc + b[:, k:k + 1] * a[k:k + 1, :]
w = w.clone()
w[3072:6144] = w[3072:6144] + acc * torch.tensor(np.float32(0.7 * 1.0))
sys.stdout.buffer.write(w.bfloat16().view(torch.int16).numpy().tobytes())
"""


class Bake(TempDirTest):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(3)
        self.base_vals = {Q: rng.normal(0, 0.05, (320, 320)), CONV: rng.normal(0, 0.05, (320, 320, 3, 3)),
                          PROJ: rng.normal(0, 0.05, (320, 320, 1, 1)), TE: rng.normal(0, 0.05, (768, 768)),
                          UNTOUCHED: rng.normal(0, 0.05, (320, 320))}
        self.base = write_sparse_safetensors(
            self.path("sd15.safetensors"), layout_table("sd15-ldm"),
            {k: v.astype("<f4").tobytes() for k, v in self.base_vals.items()},
            {"modelspec.title": "base"})
        r = 8
        k = {}

        def put(name, shape, scale=0.1):
            k[name] = ("F16", list(shape), rng.normal(0, scale, shape).astype("<f2").tobytes())

        put("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight", (r, 320))
        put("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight", (320, r))
        put("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", (4, 320, 3, 3))
        put("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", (320, 4, 1, 1))
        put("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", (r, 768))
        put("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", (768, r))
        put("lora_unet_down_blocks_0_attentions_0_proj_in.diff", (320, 320, 1, 1), 0.01)
        alphas = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": 4.0,
                  "lora_unet_down_blocks_0_resnets_0_conv1": 1.0,
                  "lora_te_text_model_encoder_layers_0_self_attn_q_proj": 8.0}
        tensors = [(n, dt, sh, raw) for n, (dt, sh, raw) in sorted(k.items())]
        tensors += [(m + ".alpha", "F16", [], np.float16(a).tobytes()) for m, a in alphas.items()]
        self.kohya = self.path("kohya.safetensors")
        write_safetensors(self.kohya, tensors, {"ss_network_module": "networks.lora"})
        self.alphas = alphas
        # A PEFT LoRA (no alpha: scale 1) on the same to_q.
        self.peft = self.path("peft.safetensors")
        write_safetensors(self.peft, [
            ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", "F32",
             [2, 320], rng.normal(0, 0.1, (2, 320)).astype("<f4").tobytes()),
            ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight", "F32",
             [320, 2], rng.normal(0, 0.1, (320, 2)).astype("<f4").tobytes())])

    def oracle(self, out_dtype, s1, s_te, s2):
        for p in (self.base, self.kohya, self.peft):
            index(p)
        kq = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
        kc = "lora_unet_down_blocks_0_resnets_0_conv1"
        kt = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
        pq = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"

        def lo(name, strength, rank):
            return {"kind": "lora", "file": self.kohya, "up": name + ".lora_up.weight",
                    "down": name + ".lora_down.weight",
                    "factor": strength * self.alphas[name] / rank}
        spec = {"base": self.base, "dtype": out_dtype, "targets": {
            Q: [lo(kq, s1, 8), {"kind": "lora", "file": self.peft, "up": pq + ".lora_B.weight",
                                "down": pq + ".lora_A.weight", "factor": s2 * 1.0}],
            CONV: [lo(kc, s1, 4)],
            TE: [lo(kt, s_te, 8)],
            PROJ: [{"kind": "full", "file": self.kohya,
                    "diff": "lora_unet_down_blocks_0_attentions_0_proj_in.diff", "factor": s1}],
        }}
        spec_path, out_path = self.path("spec.json"), self.path("oracle.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        p = subprocess.run([PY, "-c", ORACLE, spec_path, out_path], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out_path) as f:
            return {k: bytes.fromhex(v) for k, v in json.load(f).items()}

    def baked(self, path):
        h = read_safetensors_header(path)
        out = {}
        with open(path, "rb") as f:
            for n, dt, shape, (b, e) in h["entries"]:
                if n in (Q, CONV, PROJ, TE, UNTOUCHED):
                    f.seek(8 + h["n"] + b)
                    out[n] = (dt, f.read(e - b))
        return out, h["metadata"]

    def test_bit_identical_to_torch(self):
        for dtype, flags in (("F32", []), ("F16", ["--dtype", "f16"])):
            with self.subTest(dtype=dtype):
                out = self.path(f"baked-{dtype}.safetensors")
                p = run("lora", "bake", self.base, self.kohya + ":0.75", self.peft + ":1.5",
                        "--strength-te", "0.5", "-o", out, "--no-sync", "--json", *flags)
                rep = json.loads(p.stdout)
                self.assertEqual([l["applied"] for l in rep["loras"]], [4, 1])
                self.assertEqual(rep["tensors_changed"], 4)
                want = self.oracle(dtype, 0.75, 0.5, 1.5)
                got, meta = self.baked(out)
                for name, raw in want.items():
                    self.assertEqual(got[name][0], dtype, name)
                    self.assertEqual(got[name][1], raw, f"{name} differs from torch")
                untouched = self.base_vals[UNTOUCHED].astype("<f4")
                if dtype == "F16":
                    untouched = untouched.astype("<f2")
                self.assertEqual(got[UNTOUCHED][1], untouched.tobytes())
                prov = json.loads(meta["ckptkit.lora_bake"])
                self.assertEqual([(x["file"], x["strength"]) for x in prov],
                                 [("kohya.safetensors", 0.75), ("peft.safetensors", 1.5)])
                self.assertEqual(meta["modelspec.title"], "base")

    def test_loha_lokr_tucker_bit_identical_to_torch(self):
        rng = np.random.default_rng(9)
        K = D + "input_blocks.1.1.transformer_blocks.0.attn1.to_k.weight"  # [320, 320]
        V = D + "input_blocks.1.1.transformer_blocks.0.attn1.to_v.weight"  # [320, 320]
        vals = {K: rng.normal(0, 0.05, (320, 320)), V: rng.normal(0, 0.05, (320, 320)),
                CONV: rng.normal(0, 0.05, (320, 320, 3, 3))}
        base = write_sparse_safetensors(self.path("sd15-ly.safetensors"), layout_table("sd15-ldm"),
                                        {k: v.astype("<f4").tobytes() for k, v in vals.items()})
        mk = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"
        mv = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v"
        mc = "lora_unet_down_blocks_0_resnets_0_conv1"
        t = []

        def put(name, shape, scale=0.2):
            t.append((name, "F32", list(shape), rng.normal(0, scale, shape).astype("<f4").tobytes()))
        for f in ("hada_w1_a", "hada_w2_a"):
            put(f"{mk}.{f}", (320, 4))
        for f in ("hada_w1_b", "hada_w2_b"):
            put(f"{mk}.{f}", (4, 320))
        put(mk + ".alpha", ())
        t[-1] = (mk + ".alpha", "F32", [], np.float32(2.0).tobytes())
        put(mv + ".lokr_w1", (8, 8))
        put(mv + ".lokr_w2_a", (40, 3))
        put(mv + ".lokr_w2_b", (3, 40))
        t.append((mv + ".alpha", "F32", [], np.float32(6.0).tobytes()))
        put(mc + ".lora_up.weight", (320, 4, 1, 1))
        put(mc + ".lora_mid.weight", (4, 4, 3, 3))
        put(mc + ".lora_down.weight", (4, 320, 1, 1))
        t.append((mc + ".alpha", "F32", [], np.float32(1.0).tobytes()))
        lora = self.path("lycoris.safetensors")
        write_safetensors(lora, t)
        out = self.path("ly-baked.safetensors")
        rep = json.loads(run("lora", "bake", base, lora + ":0.9", "-o", out, "--no-sync",
                             "--json").stdout)
        self.assertEqual(rep["loras"][0]["applied"], 3)
        index(base)
        index(lora)
        spec = {"base": base, "lora": lora, "targets": {
            K: {"module": mk, "kind": "loha", "factor": 0.9 * 2.0 / 4},
            V: {"module": mv, "kind": "lokr", "factor": 0.9 * 6.0 / 3},
            CONV: {"module": mc, "kind": "tucker", "factor": 0.9 * 1.0 / 4}}}
        spec_path, oracle_out = self.path("ly-spec.json"), self.path("ly-oracle.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        p = subprocess.run([PY, "-c", LYCORIS_ORACLE, spec_path, oracle_out], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(oracle_out) as f:
            want = {k: bytes.fromhex(v) for k, v in json.load(f).items()}
        h = read_safetensors_header(out)
        with open(out, "rb") as f:
            for n, dt, shape, (b, e) in h["entries"]:
                if n in want:
                    f.seek(8 + h["n"] + b)
                    self.assertEqual(f.read(e - b), want[n], f"{n} differs from torch")

    def test_flux_diffusers_names_land_on_slices(self):
        """A PEFT FLUX LoRA in diffusers names: to_k is the middle third of the BFL qkv; the
        bake changes those rows only, as torch computes them, and rounds to BF16 once."""
        rng = np.random.default_rng(13)
        QKV = "double_blocks.0.img_attn.qkv.weight"  # BF16 [9216, 3072]
        bits = rng.normal(0, 0.02, (9216, 3072)).astype("<f4").view("<u4").astype(np.uint64)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
        base = write_sparse_safetensors(self.path("flux.safetensors"),
                                        layout_table("flux1-dev-transformer"),
                                        {QKV: bits.tobytes()})
        r = 4
        mk = "transformer.transformer_blocks.0.attn.to_k"
        a = rng.normal(0, 0.1, (r, 3072)).astype("<f4")
        b = rng.normal(0, 0.1, (3072, r)).astype("<f4")
        lora = self.path("flux-lora.safetensors")
        write_safetensors(lora, [
            (mk + ".lora_A.weight", "F32", [r, 3072], a.tobytes()),
            (mk + ".lora_B.weight", "F32", [3072, r], b.tobytes()),
            ("transformer.norm_out.linear.lora_A.weight", "F32", [r, 3072], bytes(r * 3072 * 4)),
            ("transformer.norm_out.linear.lora_B.weight", "F32", [6144, r], bytes(6144 * r * 4))])
        doc = json.loads(run("inspect", lora, "--against", base, "--json", check=False).stdout)
        got = {m["module"]: m for m in doc["module_list"]}
        self.assertEqual((got[mk]["base_tensor"], got[mk]["rows"]), (QKV, [3072, 6144]))
        self.assertIn("swapped", got["transformer.norm_out.linear"]["why_not"])
        out = self.path("flux-baked.safetensors")
        p = run("lora", "bake", base, lora + ":0.7", "-o", out, "--no-sync")
        self.assertIn("not applied: transformer.norm_out.linear", p.stderr)
        paths = []
        for name, arr in (("base.u2", bits), ("a.f4", a), ("b.f4", b)):
            paths.append(self.path(name))
            arr.tofile(paths[-1])
        want = subprocess.run([PY, "-c", FLUX_ORACLE, *paths], capture_output=True,
                              check=True).stdout
        h = read_safetensors_header(out)
        entry = next(e for e in h["entries"] if e[0] == QKV)
        with open(out, "rb") as f:
            f.seek(8 + h["n"] + entry[3][0])
            self.assertEqual(f.read(entry[3][1] - entry[3][0]), want)

    def test_refusals_write_nothing(self):
        sdxl_lora = self.path("sdxl-lora.safetensors")
        run("sample", "--layout", "lora-kohya-sdxl", "-o", sdxl_lora, "-q", "--no-sync")
        nan = self.path("nan.safetensors")
        bad = np.zeros((2, 320), "<f4")
        bad[1, 7] = np.nan
        write_safetensors(nan, [
            ("lora_unet_down_blocks_0_attentions_0_proj_out.lora_down.weight", "F32", [2, 320],
             bad.tobytes()),
            ("lora_unet_down_blocks_0_attentions_0_proj_out.lora_up.weight", "F32", [320, 2],
             np.zeros((320, 2), "<f4").tobytes())])
        stray = self.path("stray.safetensors")
        write_safetensors(stray, [
            ("lora_unet_no_such_module.lora_down.weight", "F32", [2, 4], bytes(32)),
            ("lora_unet_no_such_module.lora_up.weight", "F32", [4, 2], bytes(32))])
        dora = self.path("dora.safetensors")
        m = "lora_unet_down_blocks_0_attentions_0_proj_out"
        write_safetensors(dora, [(m + ".lora_down.weight", "F32", [2, 320], bytes(2560)),
                                 (m + ".lora_up.weight", "F32", [320, 2], bytes(2560)),
                                 (m + ".dora_scale", "F32", [320, 1], bytes(1280))])
        before = sorted(os.listdir(self.tmp))
        for args, rc, expect in [
                ([sdxl_lora], 2, "cannot be baked into a sd1 model"),
                ([nan], 2, "NaN"),
                ([stray, "--strict"], 1, "land nowhere"),
                ([dora], 2, "DoRA's norm is undefined"),  # its rows of W + ΔW are all zero
                ([self.kohya, "-o", self.path("x.gguf")], 2, "not GGUF"),
        ]:
            with self.subTest(args=args):
                out = [] if "-o" in args else ["-o", self.path("out.safetensors")]
                p = run("lora", "bake", self.base, *args, *out, "--no-sync", check=False)
                self.assertEqual(p.returncode, rc, p.stderr)
                self.assertIn(expect, p.stderr)
                self.assertEqual(sorted(os.listdir(self.tmp)), before)
        # Without --strict a module that lands nowhere is reported, the rest applied.
        out = self.path("lenient.safetensors")
        p = run("lora", "bake", self.base, stray, self.kohya, "-o", out, "--no-sync")
        self.assertIn("not applied: lora_unet_no_such_module", p.stderr)


if __name__ == "__main__":
    unittest.main()
