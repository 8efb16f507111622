"""`lora convert` between kohya, diffusers and PEFT names, checked against torch 1.13.

For every base tensor a LoRA changes, torch computes the total ΔW by the documented formula
(docs/lora.md): ΔW = Σ over the modules on it of up · down · alpha/rank (scale 1 without alpha),
each placed on the rows it changes. Converting must leave every such ΔW unchanged (within the
rounding of a folded scale), whatever is renamed, split (FLUX's fused q/k/v) or fused (with
parts of unequal alpha/rank: the sd-scripts #2204 trap). Names are checked against the
published LoRA layouts (data/layouts/lora-*.tsv) and the documented kohya/diffusers FLUX names,
and `inspect OUT --against BASE` must place every module of every output."""
import json
import os
import subprocess
import unittest

import numpy as np

from ckpt_testlib import TempDirTest, layout_table, read_safetensors, run, write_safetensors

PY = "/usr/bin/python3"
H = 3072  # FLUX hidden size

# Reads two LoRA files and where each module lands ({module: [base, row0, row1, base_rows]}),
# computes every base tensor's total ΔW of each with torch, and reports the worst difference.
ORACLE = r"""
import json, struct, sys, numpy as np, torch
spec = json.load(open(sys.argv[1]))
DOWN = [".lora_down.weight", ".lora_A.weight", ".lora.down.weight", ".lora_linear_layer.down.weight"]
UP = [".lora_up.weight", ".lora_B.weight", ".lora.up.weight", ".lora_linear_layer.up.weight"]
def load(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8:8 + n]); meta = h.pop("__metadata__", None) or {}
    out = {}
    for k, v in h.items():
        b, e = v["data_offsets"]
        raw = data[8 + n + b:8 + n + e]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, {"F32": "<f4", "F16": "<f2"}[v["dtype"]]).astype(np.float32)
        out[k] = torch.from_numpy(a.copy()).reshape(v["shape"])
    # diffusers' adapter config in the header (loaders/lora_base.py): LoraConfig fields per
    # component; its scale lora_alpha/r (or the patterns' values) replaces alpha tensors.
    cfg = json.loads(meta.get("lora_adapter_metadata", "{}"))
    comps = {k.split(".", 1)[0] for k in cfg}
    for m in {k[:-len(s)] for k in out for s in DOWN if k.endswith(s)}:
        comp, local = m.split(".", 1) if "." in m else (m, "")
        if comp not in comps:
            continue
        r = cfg.get(comp + ".r", 8)
        a = cfg.get(comp + ".lora_alpha", 8)
        for key, v in cfg.get(comp + ".rank_pattern", {}).items():
            if local == key or local.endswith("." + key):
                r = v
        for key, v in cfg.get(comp + ".alpha_pattern", {}).items():
            if local == key or local.endswith("." + key):
                a = v
        down = next(out[m + s] for s in DOWN if m + s in out)
        assert r == down.shape[0], (m, r, down.shape)
        out[m + ".alpha"] = torch.tensor(a / r * down.shape[0])
    return out
def by_target(where):
    t = {}
    for m, (base, r0, r1, rows) in where.items():
        t.setdefault(base, (rows, []))[1].append((m, r0, r1))
    return t
def delta(tensors, rows, mods):
    acc = None
    for m, r0, r1 in mods:
        down = next(tensors[m + s] for s in DOWN if m + s in tensors)
        up = next(tensors[m + s] for s in UP if m + s in tensors)
        scale = float(tensors[m + ".alpha"]) / down.shape[0] if m + ".alpha" in tensors else 1.0
        dw = (up.flatten(1).double() @ down.flatten(1).double()) * scale
        if acc is None:
            acc = torch.zeros(rows, dw.shape[1], dtype=torch.float64)
        acc[r0:r1] += dw
    return acc
result = []
for pair in spec:
    a, b = load(pair["a"]), load(pair["b"])
    ta, tb = by_target(pair["amap"]), by_target(pair["bmap"])
    worst, worst_at, zero_only = 0.0, "", []
    for base in sorted(set(ta) | set(tb)):
        da = delta(a, *ta[base]) if base in ta else None
        db = delta(b, *tb[base]) if base in tb else None
        if da is None or db is None:
            d = da if db is None else db
            if float(d.abs().max()) != 0.0:
                worst, worst_at = float("inf"), base + " (only in one file)"
            else:
                zero_only.append(base)
            continue
        err = float((da - db).abs().max()) / max(float(da.abs().max()), 1e-30)
        if err > worst:
            worst, worst_at = err, base
    result.append({"targets": len(set(ta) | set(tb)), "worst": worst, "at": worst_at,
                   "zero_only": zero_only})
json.dump(result, open(sys.argv[2], "w"))
"""

DOWN_SUFFIXES = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight",
                 ".lora_linear_layer.down.weight")


def modules_of(names):
    return sorted({n[:-len(s)] for n in names for s in DOWN_SUFFIXES if n.endswith(s)})


def convert(src, to, out, *extra):
    p = run("lora", "convert", src, "--to", to, "-o", out, "--no-sync", "--json", *extra)
    return json.loads(p.stdout)


class ConvertTest(TempDirTest):
    bases = {}

    def base(self, layout):
        path = self.path(layout + ".safetensors")
        if not os.path.exists(path):
            run("sample", "--layout", layout, "-o", path, "--sparse", "-q", "--no-sync")
        return path

    def where(self, lora, base_layout):
        """{module: [base tensor, row0, row1, base rows]} from `inspect --against`; every
        module must land."""
        base = self.base(base_layout)
        doc = json.loads(run("inspect", lora, "--against", base, "--json", check=False).stdout)
        self.assertEqual(doc["matched"], doc["modules"],
                         [m for m in doc["module_list"] if not m["base_tensor"]][:5])
        rows = {n: shape[0] for n, _, shape in layout_table(base_layout) if shape}
        out = {}
        for m in doc["module_list"]:
            r = m["rows"] or [0, rows[m["base_tensor"]]]
            out[m["module"]] = [m["base_tensor"], r[0], r[1], rows[m["base_tensor"]]]
        return out

    def same_delta(self, pairs, base_layout, tol):
        """Each (a, b): every base tensor's ΔW equal within `tol` of its largest value."""
        spec = [{"a": a, "b": b, "amap": self.where(a, base_layout),
                 "bmap": self.where(b, base_layout)} for a, b in pairs]
        spec_path, out_path = self.path("spec.json"), self.path("oracle.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        p = subprocess.run([PY, "-c", ORACLE, spec_path, out_path], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out_path) as f:
            res = json.load(f)
        for (a, b), r in zip(pairs, res):
            self.assertLessEqual(r["worst"], tol, f"{os.path.basename(a)} vs {os.path.basename(b)}:"
                                 f" ΔW of {r['at']} differs ({r['worst']:.3g} of its largest value)")
        return res


def random_lora(path, modules, rng, dtype="F16", alphas=None):
    """modules: {module: (down key, up key, down shape, up shape)}; alphas {module: alpha}."""
    np_dt = {"F16": "<f2", "F32": "<f4"}[dtype]
    tensors = []
    for m, (dk, uk, ds, us) in sorted(modules.items()):
        tensors.append((dk, dtype, list(ds), rng.normal(0, 0.1, ds).astype(np_dt).tobytes()))
        tensors.append((uk, dtype, list(us), rng.normal(0, 0.05, us).astype(np_dt).tobytes()))
        if alphas and m in alphas:
            tensors.append((m + ".alpha", dtype, [], np.array(alphas[m], np_dt).tobytes()))
    write_safetensors(path, tensors, {"ss_network_module": "networks.lora"})


def layout_modules(layout, rank, every=1, keep=lambda m: False):
    """The modules of a published LoRA layout at another rank: {module: (down, up, shapes)}."""
    keys = {}
    for name, _, shape in layout_table(layout):
        for s in DOWN_SUFFIXES:
            if name.endswith(s):
                keys.setdefault(name[:-len(s)], {})["down"] = (name, shape)
        for s in (".lora_up.weight", ".lora_B.weight", ".lora.up.weight",
                  ".lora_linear_layer.up.weight"):
            if name.endswith(s):
                keys.setdefault(name[:-len(s)], {})["up"] = (name, shape)
    out = {}
    for i, (m, k) in enumerate(sorted(keys.items())):
        if i % every and not keep(m):
            continue
        (dk, ds), (uk, us) = k["down"], k["up"]
        out[m] = (dk, uk, [rank] + ds[1:], [us[0], rank] + us[2:])
    return out


class PublishedNames(ConvertTest):
    """The published SD1.5 and SDXL layouts convert to each other's names exactly."""

    def names(self, path):
        return sorted(read_safetensors(path)[1])

    def test_sd15_diffusers_peft_kohya(self):
        d0, p1, k2, d3 = (self.path(n) for n in ("d0.safetensors", "p1.safetensors",
                                                 "k2.safetensors", "d3.safetensors"))
        run("sample", "--layout", "lora-diffusers-sd15", "-o", d0, "-q", "--no-sync")
        rep = convert(d0, "peft", p1)
        self.assertEqual((rep["from"], rep["family"], rep["renamed"]), ("diffusers", "sd1", 176))
        self.assertEqual(self.names(p1), sorted(n for n, _, _ in layout_table("lora-peft-sd15")))
        convert(p1, "kohya", k2)
        kohya_layout = {n for n, _, _ in layout_table("lora-kohya-sd15")}
        self.assertLessEqual(set(self.names(k2)), kohya_layout)
        self.assertEqual(len(self.names(k2)), 176 * 3)  # down, up, alpha
        convert(k2, "diffusers", d3)
        self.assertEqual(self.names(d3), self.names(d0))

    def test_sd15_kohya_round_trip(self):
        k0, d1, k2, p3 = (self.path(n) for n in ("k0.safetensors", "d1.safetensors",
                                                 "k2.safetensors", "p3.safetensors"))
        run("sample", "--layout", "lora-kohya-sd15", "-o", k0, "-q", "--no-sync")
        rep = convert(k0, "diffusers", d1)
        self.assertEqual((rep["modules_in"], rep["modules_out"]), (264, 264))
        names = set(self.names(d1))
        # The modules the published diffusers file has carry its exact keys.
        self.assertLessEqual({n for n, _, _ in layout_table("lora-diffusers-sd15")}, names)
        self.assertFalse(any(n.endswith(".alpha") for n in names))
        convert(d1, "kohya", k2)
        self.assertEqual(self.names(k2), self.names(k0))
        convert(k0, "peft", p3)
        self.assertLessEqual({n for n, _, _ in layout_table("lora-peft-sd15")}, set(self.names(p3)))
        convert(p3, "kohya", k2, "--force")
        self.assertEqual(self.names(k2), self.names(k0))
        prov = json.loads(read_safetensors(k2)[0]["ckptkit.lora_convert"])
        self.assertEqual((prov["from"], prov["to"], prov["names"]), ("peft", "kohya", "layout sd15-ldm"))

    def test_sdxl_kohya_round_trip(self):
        """SGM UNet names and OpenCLIP-G's q/k/v (rows of in_proj) both ways."""
        k0, d1, k2 = (self.path(n) for n in ("k0.safetensors", "d1.safetensors", "k2.safetensors"))
        run("sample", "--layout", "lora-kohya-sdxl", "-o", k0, "-q", "--no-sync")
        rep = convert(k0, "diffusers", d1)
        self.assertEqual((rep["family"], rep["modules_out"], rep["split"], rep["fused"]),
                         ("sdxl", 986, 0, 0))
        d1_names = set(self.names(d1))
        for n in ("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight",
                  "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight",
                  "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight",
                  "unet.mid_block.attentions.0.proj_in.lora_A.weight"):
            self.assertIn(n, d1_names)
        convert(d1, "kohya", k2)
        self.assertEqual(self.names(k2), self.names(k0))


class DeltaUnchanged(ConvertTest):
    def test_sd15_alphas_survive_every_format(self):
        """kohya F16 with several alphas (and a module without), linear, 1x1 and 3x3 conv, TE:
        through diffusers and PEFT (alpha folded into the factors) and back."""
        rng = np.random.default_rng(5)
        mods = layout_modules("lora-kohya-sd15", 8, every=9)
        mods["lora_unet_down_blocks_0_resnets_0_conv1"] = (
            "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight",
            "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", [4, 320, 3, 3], [320, 4, 1, 1])
        alphas = {m: [1.0, 4.0, 8.0, 16.0][i % 4] for i, m in enumerate(sorted(mods)) if i % 7}
        k0 = self.path("k0.safetensors")
        random_lora(k0, mods, rng, "F16", alphas)
        d1, k2, p3, k4 = (self.path(n) for n in ("d1.safetensors", "k2.safetensors",
                                                 "p3.safetensors", "k4.safetensors"))
        rep = convert(k0, "diffusers", d1)
        rank = {m: ds[0] for m, (_, _, ds, _) in mods.items()}
        self.assertEqual(rep["scale_folded"],
                         sum(1 for m in mods if alphas.get(m, rank[m]) != rank[m]))
        convert(d1, "kohya", k2)
        convert(k0, "peft", p3)
        convert(p3, "kohya", k4)
        self.same_delta([(k0, d1), (k0, k2), (k0, p3), (k0, k4)], "sd15-ldm", 2e-3)
        # diffusers builds each component's LoraConfig from the header: every module at its own
        # rank with lora_alpha = rank (the scale is in the factors); the conv module's rank 4
        # differs from the rest, so it needs the patterns.
        cfg = json.loads(read_safetensors(d1)[0]["lora_adapter_metadata"])
        self.assertEqual((cfg["unet.r"], cfg["unet.lora_alpha"]), (8, 8))
        self.assertEqual(cfg["unet.rank_pattern"], {"down_blocks.0.resnets.0.conv1": 4})
        self.assertEqual(cfg["unet.alpha_pattern"], {"down_blocks.0.resnets.0.conv1": 4})
        d1_modules = modules_of(read_safetensors(d1)[1])
        self.assertEqual(sorted(cfg["text_encoder.target_modules"] + cfg["unet.target_modules"]),
                         sorted(m.split(".", 1)[1] for m in d1_modules))
        meta = read_safetensors(k2)[0]
        self.assertEqual(meta["ss_network_module"], "networks.lora")  # training facts kept
        # The same keys, and an alpha now for every module (the scale made explicit).
        self.assertEqual(sorted(read_safetensors(k2)[1]),
                         sorted(set(read_safetensors(k0)[1]) | {m + ".alpha" for m in mods}))

    def test_sdxl_subset_with_te2_slices(self):
        rng = np.random.default_rng(6)
        mods = layout_modules("lora-kohya-sdxl", 4, every=23,
                              keep=lambda m: m.startswith("lora_te2_text_model_encoder_layers_0_"))
        alphas = {m: [2.0, 4.0, 1.0][i % 3] for i, m in enumerate(sorted(mods))}
        k0, d1, k2 = (self.path(n) for n in ("k0.safetensors", "d1.safetensors", "k2.safetensors"))
        random_lora(k0, mods, rng, "F16", alphas)
        convert(k0, "diffusers", d1)
        convert(d1, "kohya", k2)
        self.same_delta([(k0, d1), (k0, k2)], "sdxl-sgm", 2e-3)

    def test_comfy_in_proj_splits_into_q_k_v(self):
        """A ComfyUI-named module on OpenCLIP-G's whole in_proj: kohya and diffusers name its
        thirds, so it is split (down copied, up by rows, alpha kept / folded)."""
        rng = np.random.default_rng(11)
        m = "conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj"
        c0, k1, d2 = (self.path(n) for n in ("c0.safetensors", "k1.safetensors", "d2.safetensors"))
        random_lora(c0, {m: (m + ".lora_down.weight", m + ".lora_up.weight", [4, 1280],
                             [3840, 4])}, rng, "F32", {m: 2.0})
        base = self.base("sdxl-sgm")
        rep = convert(c0, "kohya", k1, "--base", base)
        self.assertEqual([(x["module"], x["action"], x["rank"], x["alpha"]) for x in rep["modules"]],
                         [(f"lora_te2_text_model_encoder_layers_3_self_attn_{p}_proj", "split", 4, 2.0)
                          for p in "qkv"])
        convert(c0, "diffusers", d2, "--base", base)
        self.same_delta([(c0, k1), (c0, d2)], "sdxl-sgm", 1e-6)


FLUX_DIFFUSERS = {
    # module: (rank, alpha or None)
    "transformer.transformer_blocks.0.attn.to_q": (4, 4.0),
    "transformer.transformer_blocks.0.attn.to_k": (4, 2.0),
    "transformer.transformer_blocks.0.attn.to_v": (4, 8.0),
    "transformer.transformer_blocks.0.attn.add_q_proj": (2, None),
    "transformer.transformer_blocks.0.attn.add_k_proj": (2, None),  # no add_v_proj: zero rows
    "transformer.transformer_blocks.0.ff.net.0.proj": (4, 2.0),
    "transformer.single_transformer_blocks.0.attn.to_q": (4, 4.0),
    "transformer.single_transformer_blocks.0.attn.to_k": (4, 4.0),
    "transformer.single_transformer_blocks.0.attn.to_v": (4, 4.0),
    "transformer.single_transformer_blocks.0.proj_mlp": (8, 4.0),
    "transformer.single_transformer_blocks.0.proj_out": (4, 1.0),
}
# Where each lands in the BFL model, written down from docs/lora.md (diffusers' FLUX names).
FLUX_ROWS = {
    "transformer.transformer_blocks.0.attn.to_q": ("lora_unet_double_blocks_0_img_attn_qkv", 0),
    "transformer.transformer_blocks.0.attn.to_k": ("lora_unet_double_blocks_0_img_attn_qkv", H),
    "transformer.transformer_blocks.0.attn.to_v": ("lora_unet_double_blocks_0_img_attn_qkv", 2 * H),
    "transformer.transformer_blocks.0.attn.add_q_proj": ("lora_unet_double_blocks_0_txt_attn_qkv", 0),
    "transformer.transformer_blocks.0.attn.add_k_proj": ("lora_unet_double_blocks_0_txt_attn_qkv", H),
    "transformer.transformer_blocks.0.ff.net.0.proj": ("lora_unet_double_blocks_0_img_mlp_0", 0),
    "transformer.single_transformer_blocks.0.attn.to_q": ("lora_unet_single_blocks_0_linear1", 0),
    "transformer.single_transformer_blocks.0.attn.to_k": ("lora_unet_single_blocks_0_linear1", H),
    "transformer.single_transformer_blocks.0.attn.to_v": ("lora_unet_single_blocks_0_linear1", 2 * H),
    "transformer.single_transformer_blocks.0.proj_mlp": ("lora_unet_single_blocks_0_linear1", 3 * H),
    "transformer.single_transformer_blocks.0.proj_out": ("lora_unet_single_blocks_0_linear2", 0),
}
FLUX_SHAPES = {"attn.to_q": (H, H), "attn.to_k": (H, H), "attn.to_v": (H, H),
               "add_q_proj": (H, H), "add_k_proj": (H, H), "ff.net.0.proj": (4 * H, H),
               "proj_mlp": (4 * H, H), "proj_out": (H, 5 * H)}

# Independent of ckptkit's tables: the fused kohya module's ΔW from the diffusers parts at the
# rows written down above, against the kohya file's own.
FLUX_FUSE_ORACLE = r"""
import json, struct, sys, numpy as np, torch
spec = json.load(open(sys.argv[1]))
def load(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8:8 + n]); h.pop("__metadata__", None)
    out = {}
    for k, v in h.items():
        b, e = v["data_offsets"]
        a = np.frombuffer(data[8 + n + b:8 + n + e], {"F32": "<f4", "F16": "<f2"}[v["dtype"]])
        out[k] = torch.from_numpy(a.astype(np.float64)).reshape(v["shape"])
    return out
d, k = load(spec["diffusers"]), load(spec["kohya"])
res = {}
for km in sorted({v[0] for v in spec["rows"].values()}):
    down, up = k[km + ".lora_down.weight"], k[km + ".lora_up.weight"]
    got = up @ down * (float(k[km + ".alpha"]) / down.shape[0])
    want = torch.zeros_like(got)
    for dm, (kk, r0) in spec["rows"].items():
        if kk != km:
            continue
        a, b = d[dm + ".lora_A.weight"], d[dm + ".lora_B.weight"]
        s = float(d[dm + ".alpha"]) / a.shape[0] if dm + ".alpha" in d else 1.0
        want[r0:r0 + b.shape[0]] += b @ a * s
    # kohya's split_qkv save: the parts' alpha kept while the rank is their sum.
    bug = up @ down * (spec["part_alpha"] / down.shape[0])
    res[km] = {"err": float((got - want).abs().max() / want.abs().max()),
               "bug_err": float((bug - want).abs().max() / want.abs().max())}
json.dump(res, open(sys.argv[2], "w"))
"""


class FluxFuseSplit(ConvertTest):
    def flux_diffusers(self, path, rng):
        tensors = []
        for m, (r, alpha) in sorted(FLUX_DIFFUSERS.items()):
            out, inp = next(v for k, v in FLUX_SHAPES.items() if m.endswith(k))
            tensors.append((m + ".lora_A.weight", "F32", [r, inp],
                            rng.normal(0, 0.1, (r, inp)).astype("<f4").tobytes()))
            tensors.append((m + ".lora_B.weight", "F32", [out, r],
                            rng.normal(0, 0.05, (out, r)).astype("<f4").tobytes()))
            if alpha is not None:
                tensors.append((m + ".alpha", "F32", [], np.float32(alpha).tobytes()))
        write_safetensors(path, tensors)

    def test_fuse_unequal_alphas_then_split_back(self):
        rng = np.random.default_rng(7)
        d0, k1, d2, p3 = (self.path(n) for n in ("d0.safetensors", "k1.safetensors",
                                                 "d2.safetensors", "p3.safetensors"))
        self.flux_diffusers(d0, rng)
        rep = convert(d0, "kohya", k1)
        self.assertEqual(rep["family"], "flux")
        out = {m["module"]: m for m in rep["modules"]}
        self.assertEqual(sorted(out), sorted({v[0] for v in FLUX_ROWS.values()}))
        qkv = out["lora_unet_double_blocks_0_img_attn_qkv"]
        # Unequal alpha/rank (1, 0.5, 2): each part's scale folded, alpha = the fused rank.
        self.assertEqual((qkv["action"], qkv["rank"], qkv["alpha"], qkv["scale_folded"]),
                         ("fused", 12, 12.0, True))
        lin1 = out["lora_unet_single_blocks_0_linear1"]
        # Equal alpha/rank (4/4 and 4/8 differ: folded too); txt qkv without alphas: scale 1.
        self.assertEqual((lin1["rank"], lin1["alpha"]), (20, 20.0))
        txt = out["lora_unet_double_blocks_0_txt_attn_qkv"]
        self.assertEqual((txt["rank"], txt["alpha"], txt["scale_folded"]), (4, 4.0, False))
        mlp = out["lora_unet_double_blocks_0_img_mlp_0"]
        self.assertEqual((mlp["action"], mlp["alpha"], mlp["scale_folded"]), ("renamed", 2.0, False))
        # The fused ΔW from the parts, computed by torch from the documented rows.
        spec = {"diffusers": d0, "kohya": k1, "rows": FLUX_ROWS, "part_alpha": 4.0}
        spec_path, out_path = self.path("fspec.json"), self.path("foracle.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        p = subprocess.run([PY, "-c", FLUX_FUSE_ORACLE, spec_path, out_path], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out_path) as f:
            res = json.load(f)
        for km, r in res.items():
            self.assertLess(r["err"], 1e-5, km)
        # What kohya's split_qkv save does (alpha kept while the rank triples) is far off: the
        # check above would catch it.
        self.assertGreater(res["lora_unet_double_blocks_0_img_attn_qkv"]["bug_err"], 0.1)
        # Back to diffusers: the block-diagonal ups split into the original parts and ranks.
        rep = convert(k1, "diffusers", d2)
        self.assertEqual(rep["split"], 9)  # add_v_proj changes nothing: not written
        self.assertEqual(modules_of(read_safetensors(d2)[1]), sorted(FLUX_DIFFUSERS))
        ranks = {m["module"]: m["rank"] for m in rep["modules"]}
        self.assertEqual(ranks, {m: r for m, (r, _) in FLUX_DIFFUSERS.items()})
        convert(k1, "peft", p3)
        self.same_delta([(d0, k1), (d0, d2), (d0, p3)], "flux1-dev-transformer", 1e-5)

    def test_sd3_kohya_diffusers_round_trip(self):
        # kohya's MMDiT names (fused qkv) to diffusers' (to_q/to_k/to_v, add_*_proj as rows of
        # the fused tensors) and back: same ΔW on every base tensor.
        rng = np.random.default_rng(12)
        J = "lora_unet_joint_blocks_"
        mods = {J + "0_x_block_attn_qkv": (4608, 1536), J + "0_context_block_attn_qkv": (4608, 1536),
                J + "3_x_block_mlp_fc1": (6144, 1536), J + "3_context_block_mlp_fc2": (1536, 6144),
                J + "7_x_block_adaLN_modulation_1": (9216, 1536)}
        k0, d1, k2 = (self.path(n) for n in ("k0.safetensors", "d1.safetensors", "k2.safetensors"))
        random_lora(k0, {m: (m + ".lora_down.weight", m + ".lora_up.weight", [4, i], [o, 4])
                         for m, (o, i) in mods.items()}, rng, dtype="F32",
                    alphas={m: 2.0 for m in mods})
        rep = convert(k0, "diffusers", d1)
        self.assertEqual(rep["family"], "sd3")
        names = modules_of(read_safetensors(d1)[1])
        T = "transformer.transformer_blocks."
        for n in (T + "0.attn.to_q", T + "0.attn.to_v", T + "0.attn.add_k_proj",
                  T + "3.ff.net.0.proj", T + "3.ff_context.net.2", T + "7.norm1.linear"):
            self.assertIn(n, names)
        convert(d1, "kohya", k2)
        self.same_delta([(k0, d1), (k0, k2)], "sd3-medium", 1e-5)

    def test_kohya_fused_splits_with_shared_down(self):
        """A kohya FLUX LoRA's dense qkv up (trained fused): each part gets the whole down and
        its rows of up, the same alpha/rank (folded for diffusers); back to kohya it is fused
        again, rank 3r, the same ΔW."""
        rng = np.random.default_rng(8)
        m = "lora_unet_double_blocks_1_img_attn_qkv"
        s = "lora_unet_single_blocks_3_linear1"
        k0, d1, k2 = (self.path(n) for n in ("k0.safetensors", "d1.safetensors", "k2.safetensors"))
        write_safetensors(k0, [
            (m + ".lora_down.weight", "BF16", [8, H], self.bf16(rng, (8, H))),
            (m + ".lora_up.weight", "BF16", [3 * H, 8], self.bf16(rng, (3 * H, 8))),
            (m + ".alpha", "BF16", [], self.bf16(None, 4.0)),
            (s + ".lora_down.weight", "BF16", [4, H], self.bf16(rng, (4, H))),
            (s + ".lora_up.weight", "BF16", [7 * H, 4], self.bf16(rng, (7 * H, 4))),
            (s + ".alpha", "BF16", [], self.bf16(None, 4.0))])
        rep = convert(k0, "diffusers", d1)
        self.assertEqual(rep["split"], 7)
        self.assertEqual(modules_of(read_safetensors(d1)[1]), sorted(
            [f"transformer.transformer_blocks.1.attn.to_{x}" for x in "qkv"] +
            [f"transformer.single_transformer_blocks.3.attn.to_{x}" for x in "qkv"] +
            ["transformer.single_transformer_blocks.3.proj_mlp"]))
        rep = convert(d1, "kohya", k2)
        out = {x["module"]: x for x in rep["modules"]}
        self.assertEqual((out[m]["rank"], out[m]["alpha"]), (24, 24.0))
        self.assertEqual((out[s]["rank"], out[s]["alpha"]), (16, 16.0))
        self.same_delta([(k0, d1), (k0, k2)], "flux1-dev-transformer", 1e-2)

    def test_family_from_matching_and_text_encoders(self):
        """diffusers FLUX names without single blocks do not tell the family by their keys; the
        only reference every module lands in does. CLIP-L and T5 modules convert too."""
        rng = np.random.default_rng(9)
        d0, k1 = self.path("d0.safetensors"), self.path("k1.safetensors")
        te = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
        t5 = "text_encoder_2.encoder.block.0.layer.0.SelfAttention.q"
        mods = {m: (m + ".lora_A.weight", m + ".lora_B.weight", [4, n], [n, 4])
                for m, n in (("transformer.transformer_blocks.2.attn.to_k", H), (te, 768),
                             (t5, 4096))}
        random_lora(d0, mods, rng, "F32", {te: 2.0})
        rep = convert(d0, "kohya", k1)
        self.assertEqual(rep["family"], "flux")
        self.assertIn("the only one whose reference layout", rep["notes"][0])
        self.assertEqual(sorted(m["module"] for m in rep["modules"]), [
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
            "lora_te3_encoder_block_0_layer_0_SelfAttention_q",
            "lora_unet_double_blocks_2_img_attn_qkv"])
        qkv = next(m for m in rep["modules"] if m["module"].startswith("lora_unet"))
        self.assertEqual((qkv["action"], qkv["rank"], qkv["alpha"]), ("fused", 4, 4.0))

    def test_onetrainer_and_comfyui_names_convert(self):
        """The conventions convert reads but does not write: OneTrainer's lora_transformer_ q/k/v
        (fused for kohya) and ComfyUI's diffusion_model. fused qkv (split for diffusers)."""
        rng = np.random.default_rng(10)
        ot = "lora_transformer_single_transformer_blocks_5_attn_to_"
        mods = {ot + x: (ot + x + ".lora_down.weight", ot + x + ".lora_up.weight", [4, H], [H, 4])
                for x in "qkv"}
        o0, k1 = self.path("ot.safetensors"), self.path("ot-k.safetensors")
        random_lora(o0, mods, rng, "F16", {ot + "q": 4.0, ot + "k": 4.0, ot + "v": 4.0})
        rep = convert(o0, "kohya", k1)
        self.assertEqual([(m["module"], m["action"], m["rank"], m["alpha"]) for m in rep["modules"]],
                         [("lora_unet_single_blocks_5_linear1", "fused", 12, 12.0)])
        cm = "diffusion_model.double_blocks.4.txt_attn.qkv"
        c0, d1 = self.path("comfy.safetensors"), self.path("comfy-d.safetensors")
        random_lora(c0, {cm: (cm + ".lora_down.weight", cm + ".lora_up.weight", [8, H], [3 * H, 8])},
                    rng, "F16", {cm: 16.0})
        rep = convert(c0, "diffusers", d1)
        self.assertEqual(sorted(m["module"] for m in rep["modules"]), [
            f"transformer.transformer_blocks.4.attn.add_{x}_proj" for x in "kqv"])
        self.same_delta([(o0, k1)], "flux1-dev-transformer", 2e-3)
        # ComfyUI's names are a full model's (model.diffusion_model. / diffusion_model.).
        self.same_delta([(c0, d1)], "flux1-dev-comfy-fp8-aio", 2e-3)

    @staticmethod
    def bf16(rng, shape_or_value):
        x = (np.atleast_1d(np.float32(shape_or_value)) if rng is None
             else rng.normal(0, 0.05, shape_or_value).astype("<f4"))
        bits = x.view("<u4").astype(np.uint64)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()


class Refusals(ConvertTest):
    def test_refused_inputs_write_nothing(self):
        lokr = self.path("lokr.safetensors")
        m = "lora_unet_down_blocks_0_attentions_0_proj_out"
        write_safetensors(lokr, [(m + ".lokr_w1", "F32", [8, 8], bytes(256)),
                                 (m + ".lokr_w2", "F32", [40, 40, 1, 1], bytes(6400))])
        stray = self.path("stray.safetensors")
        write_safetensors(stray, [
            ("lora_unet_down_blocks_0_attentions_0_proj_out.lora_down.weight", "F32", [2, 320, 1, 1],
             bytes(2560)),
            ("lora_unet_down_blocks_0_attentions_0_proj_out.lora_up.weight", "F32", [320, 2, 1, 1],
             bytes(2560)),
            ("lora_unet_no_such_module.lora_down.weight", "F32", [2, 4], bytes(32)),
            ("lora_unet_no_such_module.lora_up.weight", "F32", [4, 2], bytes(32))])
        nan = self.path("nan.safetensors")
        bad = np.zeros((2, 320, 1, 1), "<f4")
        bad[1, 5] = np.nan
        write_safetensors(nan, [(m + ".lora_down.weight", "F32", [2, 320, 1, 1], bad.tobytes()),
                                (m + ".lora_up.weight", "F32", [320, 2, 1, 1], bytes(2560)),
                                (m + ".alpha", "F32", [], np.float32(1).tobytes())])
        sd3 = self.path("sd3.safetensors")
        # The last joint block's context adaLN: diffusers stores its halves swapped, no name.
        s3 = "lora_unet_joint_blocks_23_context_block_adaLN_modulation_1"
        write_safetensors(sd3, [(s3 + ".lora_down.weight", "F32", [2, 1536], bytes(12288)),
                                (s3 + ".lora_up.weight", "F32", [3072, 2], bytes(24576))])
        zero = self.path("zero-alpha.safetensors")
        write_safetensors(zero, [(m + ".lora_down.weight", "F32", [2, 320, 1, 1], bytes(2560)),
                                 (m + ".lora_up.weight", "F32", [320, 2, 1, 1], bytes(2560)),
                                 (m + ".alpha", "F32", [], np.float32(0).tobytes())])
        base = self.path("sd15-ldm.safetensors")
        run("sample", "--layout", "sd15-ldm", "-o", base, "--sparse", "-q", "--no-sync")
        # diffusers' adapter config in the header holds the scale: read only when it is 1.
        peft = self.path("peft-meta.safetensors")
        pm = "unet.down_blocks.0.attentions.0.proj_out"
        peft_tensors = [(pm + ".lora_A.weight", "F32", [2, 320, 1, 1], bytes(2560)),
                        (pm + ".lora_B.weight", "F32", [320, 2, 1, 1], bytes(2560))]
        write_safetensors(peft, peft_tensors, {"lora_adapter_metadata": json.dumps(
            {"unet.r": 3, "unet.lora_alpha": 4, "unet.alpha_pattern": {}})})
        exists = self.path("exists.safetensors")
        with open(exists, "wb") as f:
            f.write(b"keep")
        before = sorted(os.listdir(self.tmp))
        for args, expect in [
                ([lokr, "--to", "diffusers", "--base", base], "only kohya naming"),
                ([stray, "--to", "diffusers", "--base", base], "lora_unet_no_such_module"),
                ([nan, "--to", "peft", "--base", base], "NaN"),
                ([base, "--to", "kohya"], "not a LoRA"),
                ([lokr, "--to", "kohya", "--base", base, "-o", exists], "exists"),
                ([lokr, "--to", "kohya"], "(its modules fit sd1, sd2)"),
                ([sd3, "--to", "diffusers"], "swapped"),
                ([zero, "--to", "diffusers", "--base", base], "alpha 0"),
                ([peft, "--to", "kohya", "--base", base], "rank 3 where its factors have rank 2"),
        ]:
            with self.subTest(args=args[:3]):
                out = [] if "-o" in args else ["-o", self.path("out.safetensors")]
                p = run("lora", "convert", *args, *out, "--no-sync", check=False)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(expect, p.stderr)
                self.assertEqual(sorted(os.listdir(self.tmp)), before)
        with open(exists, "rb") as f:
            self.assertEqual(f.read(), b"keep")
        # kohya to kohya copies alpha 0 as it is.
        rep = convert(zero, "kohya", self.path("zero-k.safetensors"), "--base", base)
        self.assertEqual((rep["modules"][0]["action"], rep["modules"][0]["alpha"]), ("kept", 0))
        # LyCORIS modules keep every factor under kohya names.
        out = self.path("lokr-kohya.safetensors")
        write_safetensors(peft, peft_tensors, {"lora_adapter_metadata": json.dumps(
            {"unet.r": 8, "unet.lora_alpha": 8, "unet.rank_pattern": {pm[len("unet."):]: 2},
             "unet.alpha_pattern": {"attentions.0.proj_out": 6}})})
        rep = convert(peft, "kohya", self.path("peft-kohya.safetensors"), "--base", base)
        self.assertEqual(rep["modules"][0]["alpha"], 6.0)  # the pattern's scale, 6/2
        self.assertNotIn("lora_adapter_metadata",
                         read_safetensors(self.path("peft-kohya.safetensors"))[0])
        rep = convert(lokr, "kohya", out, "--base", base)
        self.assertEqual(rep["kept"], 1)
        self.assertEqual(sorted(read_safetensors(out)[1]), [m + ".lokr_w1", m + ".lokr_w2"])

    def test_help_has_examples(self):
        p = run("lora", "convert", "--help")
        self.assertIn("--to", p.stdout)
        self.assertIn("Examples:", p.stdout)


if __name__ == "__main__":
    unittest.main()
