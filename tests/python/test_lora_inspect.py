"""`inspect` of LoRA files: modules, algorithms, ranks, alphas, targets and training facts.

The published LoRA layouts (data/layouts/lora-*.tsv) are grouped into modules here, by the
key conventions written down in docs/lora.md, independently of ckptkit's tables; the LyCORIS
flavours are built with torch 1.13, whose computation of each documented ΔW formula gives the
shape ckptkit must report."""
import json
import math
import os
import struct
import subprocess
import unittest
from collections import Counter

import numpy as np

from ckpt_testlib import (TempDirTest, layout_table, read_safetensors, read_safetensors_header, run,
                          write_safetensors)

PY = "/usr/bin/python3"

FACTORS = [".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight",
           ".lora_down.weight", ".lora_up.weight", ".lora.down.weight", ".lora.up.weight",
           ".lora_A.weight", ".lora_B.weight", ".alpha"]
PREFIXES = [("lora_unet_", "diffusion_model"), ("lora_te1_", "text_encoder_1"),
            ("lora_te2_", "text_encoder_2"), ("lora_te_", "text_encoder_1"),
            ("unet.", "diffusion_model"), ("text_encoder.", "text_encoder_1")]


def inspect(path):
    return json.loads(run("inspect", path, "--json").stdout)


def expected_from_layout(layout):
    modules = {}
    for name, dtype, shape in layout_table(layout):
        suffix = max((f for f in FACTORS if name.endswith(f)), key=len)
        mod = name[:-len(suffix)]
        modules.setdefault(mod, {})[suffix] = shape
    ranks, conv, targets = Counter(), 0, Counter()
    for mod, parts in modules.items():
        down = next(v for k, v in parts.items() if "down" in k or "lora_A" in k)
        ranks[str(down[0])] += 1
        conv += len(down) == 4
        targets[next(t for p, t in PREFIXES if mod.startswith(p))] += 1
    return len(modules), dict(ranks), conv, dict(targets)


class PublishedLayouts(TempDirTest):
    def test_layouts(self):
        for layout, fmt, has_alpha in [("lora-kohya-sd15", "kohya", True),
                                       ("lora-kohya-sdxl", "kohya", True),
                                       ("lora-kohya-sdxl-conv", "kohya", True),
                                       ("lora-peft-sd15", "peft", False),
                                       ("lora-diffusers-sd15", "diffusers", False)]:
            with self.subTest(layout=layout):
                path = self.path(layout + ".safetensors")
                run("sample", "--layout", layout, "-o", path, "-q", "--no-sync")
                m = inspect(path)["lora_modules"]
                n, ranks, conv, targets = expected_from_layout(layout)
                self.assertEqual(m["format"], fmt)
                self.assertEqual(m["modules"], n)
                self.assertEqual(m["ranks"], ranks)
                self.assertEqual(m["conv_modules"], conv)
                self.assertEqual(m["targets"], targets)
                self.assertEqual(m["kinds"], {"lora": n})
                self.assertEqual(m["errors"], [])
                self.assertEqual(m["unknown_keys"], [])
                self.assertEqual(m["missing_alpha"], 0 if has_alpha else n)


# Each LyCORIS flavour as torch computes its ΔW (the formulas of docs/lora.md): the script
# writes the factors, and the shape of the ΔW torch computed from them.
LYCORIS_SCRIPT = r"""
import json, sys, torch
torch.manual_seed(0)
r = 4
f = {}
def t(name, *shape):
    f[name] = torch.randn(*shape)
    return f[name]
shapes = {}
# LoHa: (w1_a @ w1_b) * (w2_a @ w2_b)
m = "lora_unet_input_blocks_1_1_proj_in"
dw = (t(m + ".hada_w1_a", 320, r) @ t(m + ".hada_w1_b", r, 640)) * \
     (t(m + ".hada_w2_a", 320, r) @ t(m + ".hada_w2_b", r, 640))
f[m + ".alpha"] = torch.tensor(2.0)
shapes[m] = list(dw.shape)
# LoKr: kron(w1, w2_a @ w2_b)
m = "lora_unet_middle_block_1_proj_out"
dw = torch.kron(t(m + ".lokr_w1", 8, 16), t(m + ".lokr_w2_a", 40, r) @ t(m + ".lokr_w2_b", r, 80))
f[m + ".alpha"] = torch.tensor(4.0)
shapes[m] = list(dw.shape)
# LoCon with a Tucker core: up (out,r,1,1), mid (r,r,3,3), down (r,in,1,1)
m = "lora_unet_input_blocks_1_0_in_layers_2"
up, mid, down = t(m + ".lora_up.weight", 320, r, 1, 1), t(m + ".lora_mid.weight", r, r, 3, 3), \
    t(m + ".lora_down.weight", r, 640, 1, 1)
dw = torch.einsum("i j k l, j r, p i -> p r k l", mid, down.flatten(1), up.flatten(1))
f[m + ".alpha"] = torch.tensor(1.0)
shapes[m] = list(dw.shape)
# Full diff
m = "lora_unet_out_2"
shapes[m] = list(t(m + ".diff", 4, 320, 3, 3).shape)
# DoRA on a plain LoRA (up @ down), no alpha
m = "lora_te1_text_model_encoder_layers_0_mlp_fc1"
dw = t(m + ".lora_up.weight", 3072, 8) @ t(m + ".lora_down.weight", 8, 768)
t(m + ".dora_scale", 3072, 1)
shapes[m] = list(dw.shape)
from safetensors_writer import write
write(sys.argv[1], {k: v.contiguous() for k, v in f.items()})
print(json.dumps(shapes))
"""


class Lycoris(TempDirTest):
    def test_flavours_kinds_ranks_and_delta_shapes(self):
        # torch computes ΔW; the factors go into a safetensors file through our test writer.
        helper = self.path("safetensors_writer.py")
        with open(helper, "w") as fh:
            fh.write(
                "import json, struct\n"
                "def write(path, tensors):\n"
                "    header, off, blobs = {}, 0, []\n"
                "    for k, v in tensors.items():\n"
                "        raw = v.to(dtype=__import__('torch').float32).numpy().tobytes()\n"
                "        header[k] = {'dtype': 'F32', 'shape': list(v.shape),\n"
                "                     'data_offsets': [off, off + len(raw)]}\n"
                "        off += len(raw); blobs.append(raw)\n"
                "    h = json.dumps(header).encode(); h += b' ' * ((8 - len(h) % 8) % 8)\n"
                "    with open(path, 'wb') as f:\n"
                "        f.write(struct.pack('<Q', len(h))); f.write(h)\n"
                "        for b in blobs: f.write(b)\n")
        path = self.path("lycoris.safetensors")
        p = subprocess.run([PY, "-c", LYCORIS_SCRIPT, path], capture_output=True, text=True,
                           cwd=self.tmp, env=dict(os.environ, PYTHONPATH=self.tmp))
        self.assertEqual(p.returncode, 0, p.stderr)
        shapes = json.loads(p.stdout)
        m = inspect(path)["lora_modules"]
        mods = {x["name"]: x for x in m["module_list"]}
        self.assertEqual(set(mods), set(shapes))
        for name, shape in shapes.items():
            self.assertEqual(mods[name]["delta_shape"], shape, name)
        self.assertEqual(mods["lora_unet_input_blocks_1_1_proj_in"]["kind"], "loha")
        self.assertEqual(mods["lora_unet_input_blocks_1_1_proj_in"]["rank"], 4)
        self.assertEqual(mods["lora_unet_input_blocks_1_1_proj_in"]["alpha"], 2.0)
        self.assertEqual(mods["lora_unet_middle_block_1_proj_out"]["kind"], "lokr")
        self.assertEqual(mods["lora_unet_input_blocks_1_0_in_layers_2"]["kind"], "locon-tucker")
        self.assertTrue(mods["lora_unet_input_blocks_1_0_in_layers_2"]["conv"])
        self.assertEqual(mods["lora_unet_out_2"]["kind"], "full")
        dora = mods["lora_te1_text_model_encoder_layers_0_mlp_fc1"]
        self.assertEqual((dora["dora"], dora["rank"], dora["alpha"]), (True, 8, None))
        self.assertEqual(m["format"], "lycoris")
        self.assertEqual(m["dora_modules"], 1)
        self.assertEqual(m["missing_alpha"], 1)
        self.assertEqual(m["alphas"], {"1": 1, "2": 1, "4": 1, "none": 1})
        self.assertEqual(m["targets"], {"diffusion_model": 4, "text_encoder_1": 1})


class Against(TempDirTest):
    """Where each module lands in a base: every module of the published LoRA layouts lands in
    the published base of its family, on a tensor of its ΔW's shape, no two on the same place;
    spot checks against the diffusers<->LDM correspondence ComfyUI and kohya use."""

    def against(self, lora_layout, base_layout, sparse_base=True):
        lora = self.path(lora_layout + ".safetensors")
        base = self.path(base_layout + ".safetensors")
        if not os.path.exists(lora):
            run("sample", "--layout", lora_layout, "-o", lora, "-q", "--no-sync")
        if not os.path.exists(base):
            run("sample", "--layout", base_layout, "-o", base, "--sparse", "-q", "--no-sync")
        p = run("inspect", lora, "--against", base, "--json", check=False)
        return p.returncode, json.loads(p.stdout)

    def check_layout(self, lora_layout, base_layout, spot):
        rc, doc = self.against(lora_layout, base_layout)
        self.assertEqual((rc, doc["unmatched"]), (0, 0), [m for m in doc["module_list"]
                                                           if m["base_tensor"] is None][:3])
        base = {n: shape for n, _, shape in layout_table(base_layout)}
        factors = {}
        for name, _, shape in layout_table(lora_layout):
            suffix = max((f for f in FACTORS if name.endswith(f)), key=len)
            factors.setdefault(name[:-len(suffix)], {})[suffix] = shape
        places = set()
        for m in doc["module_list"]:
            f = factors[m["module"]]
            up = next(v for k, v in f.items() if "up" in k or "lora_B" in k)
            down = next(v for k, v in f.items() if "down" in k or "lora_A" in k)
            delta = [up[0], down[1]] + down[2:]
            want = list(base[m["base_tensor"]])
            if m["rows"]:
                want[0] = m["rows"][1] - m["rows"][0]
            for v in (want, delta):  # a 1x1 convolution takes a linear ΔW and vice versa
                while len(v) > 2 and v[-1] == 1:
                    v.pop()
            self.assertEqual(delta, want, m)
            place = (m["base_tensor"], tuple(m["rows"] or ()))
            self.assertNotIn(place, places, m)
            places.add(place)
        got = {m["module"]: (m["base_tensor"], m["rows"]) for m in doc["module_list"]}
        for module, target in spot.items():
            self.assertEqual(got[module], target, module)

    def test_sd15_kohya_diffusers_names(self):
        d = "model.diffusion_model."
        self.check_layout("lora-kohya-sd15", "sd15-ldm", {
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k":
                (d + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", None),
            "lora_unet_up_blocks_3_attentions_2_proj_out":
                (d + "output_blocks.11.1.proj_out.weight", None),
            "lora_unet_mid_block_attentions_0_proj_in": (d + "middle_block.1.proj_in.weight", None),
            "lora_te_text_model_encoder_layers_11_mlp_fc2":
                ("cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight", None),
        })

    def test_sd15_peft_and_diffusers(self):
        d = "model.diffusion_model."
        self.check_layout("lora-peft-sd15", "sd15-ldm", {
            "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q":
                (d + "output_blocks.3.1.transformer_blocks.0.attn1.to_q.weight", None)})
        self.check_layout("lora-diffusers-sd15", "sd15-ldm", {
            "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_out.0":
                (d + "input_blocks.8.1.transformer_blocks.0.attn1.to_out.0.weight", None)})

    def test_sdxl_kohya_sgm_names_and_openclip_slices(self):
        g = "conditioner.embedders.1.model.transformer.resblocks.5.attn."
        self.check_layout("lora-kohya-sdxl-conv", "sdxl-sgm", {
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q":
                ("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
                 None),
            "lora_te2_text_model_encoder_layers_5_self_attn_k_proj":
                (g + "in_proj_weight", [1280, 2560]),
            "lora_te2_text_model_encoder_layers_5_self_attn_out_proj":
                (g + "out_proj.weight", None),
            "lora_te2_text_model_encoder_layers_5_mlp_fc1":
                ("conditioner.embedders.1.model.transformer.resblocks.5.mlp.c_fc.weight", None),
        })

    def lora_file(self, name, modules):
        """A LoRA of lora_A/lora_B (or XLabs down/up) F32 factors: {module: (out, in)}."""
        rng = np.random.default_rng(2)
        t = []
        for m, (o, i) in modules.items():
            a, b = (".down.weight", ".up.weight") if ".processor." in m else (".lora_A.weight", ".lora_B.weight")
            t.append((m + a, "F32", [4, i], rng.normal(0, 0.1, (4, i)).astype(np.float32).tobytes()))
            t.append((m + b, "F32", [o, 4], rng.normal(0, 0.1, (o, 4)).astype(np.float32).tobytes()))
        path = self.path(name)
        write_safetensors(path, t)
        return path

    def test_sd3_diffusers_names_land_on_mmdit_rows(self):
        base = self.path("sd3.safetensors")
        run("sample", "--layout", "sd3-medium", "-o", base, "--sparse", "-q", "--no-sync")
        T, J = "transformer.transformer_blocks.", "model.diffusion_model.joint_blocks."
        lora = self.lora_file("sd3-lora.safetensors", {
            T + "0.attn.to_k": (1536, 1536), T + "0.attn.add_v_proj": (1536, 1536),
            T + "0.attn.to_out.0": (1536, 1536), T + "5.ff_context.net.2": (1536, 6144),
            T + "0.norm1_context.linear": (9216, 1536), T + "23.norm1_context.linear": (3072, 1536),
            "transformer.time_text_embed.text_embedder.linear_1": (1536, 2048),
            "transformer.norm_out.linear": (3072, 1536)})
        doc = json.loads(run("inspect", lora, "--against", base, "--json", check=False).stdout)
        got = {m["module"]: (m["base_tensor"], m["rows"], m["why_not"]) for m in doc["module_list"]}
        self.assertEqual(got[T + "0.attn.to_k"][:2], (J + "0.x_block.attn.qkv.weight", [1536, 3072]))
        self.assertEqual(got[T + "0.attn.add_v_proj"][:2], (J + "0.context_block.attn.qkv.weight", [3072, 4608]))
        self.assertEqual(got[T + "0.attn.to_out.0"][:2], (J + "0.x_block.attn.proj.weight", None))
        self.assertEqual(got[T + "5.ff_context.net.2"][:2], (J + "5.context_block.mlp.fc2.weight", None))
        self.assertEqual(got[T + "0.norm1_context.linear"][:2], (J + "0.context_block.adaLN_modulation.1.weight", None))
        self.assertEqual(got["transformer.time_text_embed.text_embedder.linear_1"][:2],
                         ("model.diffusion_model.y_embedder.mlp.0.weight", None))
        for m in (T + "23.norm1_context.linear", "transformer.norm_out.linear"):
            self.assertIsNone(got[m][0])
            self.assertIn("swapped", got[m][2])
        # Baked: only the k rows of the fused projection change, by up @ down.
        only = self.lora_file("k.safetensors", {T + "0.attn.to_k": (1536, 1536)})
        out = self.path("baked.safetensors")
        run("lora", "bake", base, only, "-o", out, "-q", "--dtype", "f32")
        h = read_safetensors_header(out)
        (b, e), = [r for n, _, _, r in h["entries"] if n == J + "0.x_block.attn.qkv.weight"]
        with open(out, "rb") as f:
            f.seek(8 + h["n"] + b)
            w = np.frombuffer(f.read(e - b), "<f4").reshape(4608, 1536)
        _, lt, _ = read_safetensors(only)
        up = np.frombuffer(lt[T + "0.attn.to_k.lora_B.weight"][2], "<f4").reshape(1536, 4)
        down = np.frombuffer(lt[T + "0.attn.to_k.lora_A.weight"][2], "<f4").reshape(4, 1536)
        np.testing.assert_allclose(w[1536:3072], up @ down, rtol=1e-5, atol=1e-7)
        self.assertEqual(np.abs(w[:1536]).max(), 0)
        self.assertEqual(np.abs(w[3072:]).max(), 0)

    def test_xlabs_flux_processors(self):
        base = self.path("flux.safetensors")
        run("sample", "--layout", "flux1-dev-transformer", "-o", base, "--sparse", "-q", "--no-sync")
        lora = self.lora_file("xlabs.safetensors", {
            "double_blocks.3.processor.qkv_lora1": (9216, 3072),
            "double_blocks.3.processor.qkv_lora2": (9216, 3072),
            "double_blocks.3.processor.proj_lora1": (3072, 3072),
            "double_blocks.3.processor.proj_lora2": (3072, 3072)})
        p = run("inspect", lora, "--against", base, "--json", check=False)
        doc = json.loads(p.stdout)
        got = {m["module"]: m["base_tensor"] for m in doc["module_list"]}
        self.assertEqual(p.returncode, 0)
        for m, t in (("qkv_lora1", "img_attn.qkv"), ("qkv_lora2", "txt_attn.qkv"),
                     ("proj_lora1", "img_attn.proj"), ("proj_lora2", "txt_attn.proj")):
            self.assertEqual(got["double_blocks.3.processor." + m], f"double_blocks.3.{t}.weight")

    def test_wrong_family_is_reported(self):
        self.against("lora-kohya-sd15", "sd15-ldm")
        rc, doc = self.against("lora-kohya-sd15", "sdxl-sgm")
        self.assertEqual(rc, 1)
        self.assertEqual(doc["note"], "the LoRA looks made for sd1, the base is sdxl")
        # SD1's CLIP-L is SDXL's first text encoder: those modules do land.
        te = [m for m in doc["module_list"] if m["module"].startswith("lora_te_")]
        self.assertTrue(te and all(m["base_tensor"] for m in te))
        unet = [m for m in doc["module_list"] if m["module"].startswith("lora_unet_")]
        self.assertTrue(unet and not any(m["base_tensor"] for m in unet))
        self.assertEqual(doc["unmatched"], len(unet))

    def test_not_a_lora(self):
        base = self.path("sd15-ldm.safetensors")
        run("sample", "--layout", "sd15-ldm", "-o", base, "--sparse", "-q", "--no-sync")
        p = run("inspect", base, "--against", base, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a LoRA", p.stderr)


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


class Problems(TempDirTest):
    def test_bad_factors_are_listed(self):
        path = self.path("bad.safetensors")
        write_safetensors(path, [
            ("lora_unet_a.lora_down.weight", "F32", [4, 8], f32(*[0.0] * 32)),
            ("lora_unet_a.lora_up.weight", "F32", [8, 3], f32(*[0.0] * 24)),   # rank 3 != 4
            ("lora_unet_a.alpha", "F32", [], f32(4.0)),
            ("lora_unet_b.lora_down.weight", "F32", [2, 8], f32(*[0.0] * 16)),  # no up
            ("lora_unet_c.lora_down.weight", "F32", [2, 8], f32(*[0.0] * 16)),
            ("lora_unet_c.lora_up.weight", "F32", [8, 2], f32(*[0.0] * 16)),
            ("lora_unet_c.alpha", "F32", [], f32(math.nan)),
            ("something_else.weight", "F32", [2], f32(1.0, 2.0)),
        ])
        m = inspect(path)["lora_modules"]
        errors = {e["key"]: e["message"] for e in m["errors"]}
        self.assertIn("rank", errors["lora_unet_a"])
        self.assertIn("no up factor", errors["lora_unet_b"])
        self.assertIn("not a finite number", errors["lora_unet_c"])
        self.assertEqual(m["unknown_keys"], ["something_else.weight"])
        text = run("inspect", path).stdout
        self.assertIn("error", text)
        self.assertIn("something_else.weight", text)


class Training(TempDirTest):
    def test_training_metadata(self):
        tags = {"10_style": {"red": 5, "blue": 2, "cat": 9}, "5_more": {"blue": 8, "dog": 1}}
        path = self.path("t.safetensors")
        write_safetensors(path, [
            ("lora_unet_a.lora_down.weight", "F32", [2, 4], f32(*[0.0] * 8)),
            ("lora_unet_a.lora_up.weight", "F32", [4, 2], f32(*[0.0] * 8)),
            ("lora_unet_a.alpha", "F32", [], f32(1.0)),
        ], {"ss_tag_frequency": json.dumps(tags), "ss_network_module": "networks.lora",
            "ss_network_dim": "2", "ss_network_alpha": "1.0", "ss_sd_model_name": "base.ckpt",
            "ss_epoch": "7", "modelspec.trigger_phrase": "zzstyle"})
        t = inspect(path)["lora_modules"]["training"]
        total = Counter()
        for d in tags.values():
            total.update(d)
        want = sorted(total.items(), key=lambda kv: -kv[1])
        self.assertEqual([(x["tag"], x["count"]) for x in t["top_tags"]], want)
        self.assertEqual((t["network"], t["network_dim"], t["network_alpha"], t["base_model"],
                          t["epochs"], t["trigger"]),
                         ("networks.lora", "2", "1.0", "base.ckpt", "7", "zzstyle"))
        text = run("inspect", path).stdout
        self.assertIn("trigger: zzstyle", text)
        self.assertIn("blue (10)", text)


if __name__ == "__main__":
    unittest.main()
