"""`lora extract` against torch 1.13: on deltas shaped like real finetunes (a decaying low-rank
part plus noise), each module's relative reconstruction error is within 1% of the optimum that
torch.linalg.svd truncation gives at the same rank; `--exact` equals that truncation; the clamp
is kohya's (torch.quantile of up and down together at 0.99); the module names, dtypes and
shapes are those of published kohya LoRAs (SD1.5, SDXL with LoCon); bad inputs write nothing."""
import json
import os
import unittest

import numpy as np
import torch

from ckpt_testlib import (TempDirTest, layout_table, read_safetensors, read_safetensors_header,
                          run, write_sparse_safetensors)

D = "model.diffusion_model."
TB = D + "input_blocks.1.1.transformer_blocks.0."
TARGETS = {  # base tensor -> kohya module (SD1: diffusers paths)
    TB + "attn1.to_q.weight": "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    TB + "attn2.to_k.weight": "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
    TB + "ff.net.0.proj.weight": "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj",
    TB + "ff.net.2.weight": "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2",
    D + "input_blocks.1.1.proj_in.weight": "lora_unet_down_blocks_0_attentions_0_proj_in",
    D + "input_blocks.1.0.in_layers.2.weight": "lora_unet_down_blocks_0_resnets_0_conv1",
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight":
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
}


def finetune_delta(rng, shape, true_rank=24, noise=0.15):
    """A delta like a finetune's: singular values decaying over a low-rank part, plus noise."""
    m = shape[0]
    n = int(np.prod(shape[1:]))
    u, _ = np.linalg.qr(rng.normal(size=(m, true_rank)))
    v, _ = np.linalg.qr(rng.normal(size=(n, true_rank)))
    s = 8.0 * 0.8 ** np.arange(true_rank)
    low = (u * s) @ v.T
    dw = low + noise * np.linalg.norm(low) / np.sqrt(m * n) * rng.normal(size=(m, n))
    return dw.reshape(shape).astype(np.float32)


def tensor(path, name):
    meta, tensors, _ = read_safetensors(path)
    dt, shape, raw = tensors[name]
    npdt = {"F32": "<f4", "F16": "<f2"}[dt]
    return torch.from_numpy(np.frombuffer(raw, dtype=npdt).astype(np.float32).reshape(shape).copy())


class Extract(TempDirTest):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(7)
        rows = layout_table("sd15-ldm")
        shapes = {n: s for n, _, s in rows}
        self.base_vals, self.delta = {}, {}
        for name in TARGETS:
            self.base_vals[name] = rng.normal(0, 0.05, shapes[name]).astype(np.float32)
            self.delta[name] = finetune_delta(rng, shapes[name])
        self.base = write_sparse_safetensors(
            self.path("base.safetensors"), rows, {n: v.tobytes() for n, v in self.base_vals.items()})
        self.tuned = write_sparse_safetensors(
            self.path("tuned.safetensors"), rows,
            {n: (self.base_vals[n] + self.delta[n]).astype(np.float32).tobytes() for n in TARGETS})

    def extract(self, out, *extra):
        p = run("lora", "extract", self.tuned, self.base, "-o", self.path(out), "--json", *extra)
        return json.loads(p.stdout)

    def delta_of(self, name):
        # What ckptkit sees: tuned and base as stored (F32), subtracted in F32.
        return torch.from_numpy((self.base_vals[name] + self.delta[name]).astype(np.float32)) - \
            torch.from_numpy(self.base_vals[name])

    def factors(self, path, module, alpha=True):
        up = tensor(path, module + ".lora_up.weight")
        down = tensor(path, module + ".lora_down.weight")
        prod = up.flatten(1) @ down.flatten(1)
        if alpha:
            a = float(tensor(path, module + ".alpha"))
            prod = prod * (a / down.shape[0])
        return up, down, prod

    def test_randomized_within_one_percent_of_optimum(self):
        rep = self.extract("r.safetensors", "--rank", "8", "--conv-rank", "8", "--text-encoders",
                           "--no-clamp", "--dtype", "f32")
        for name, module in TARGETS.items():
            dw = self.delta_of(name).flatten(1)
            _, _, prod = self.factors(self.path("r.safetensors"), module)
            U, S, Vh = torch.linalg.svd(dw, full_matrices=False)
            best = (U[:, :8] * S[:8]) @ Vh[:8]
            e_opt = float(torch.linalg.norm(dw - best) / torch.linalg.norm(dw))
            e = float(torch.linalg.norm(dw - prod) / torch.linalg.norm(dw))
            self.assertGreater(e_opt, 0.05, "the delta must not be exactly low-rank")
            self.assertLessEqual(e, 1.01 * e_opt, f"{module}: {e} vs optimum {e_opt}")
        # The modules that did not change are written (as zeros) and counted.
        self.assertEqual(rep["modules"] - rep["unchanged"], len(TARGETS))

    def test_exact_equals_torch_truncation(self):
        self.extract("e.safetensors", "--rank", "8", "--conv-rank", "4", "--text-encoders",
                     "--no-clamp", "--exact", "--dtype", "f32")
        for name, module in TARGETS.items():
            k = 4 if "in_layers" in name else 8
            dw = self.delta_of(name).flatten(1)
            _, _, prod = self.factors(self.path("e.safetensors"), module)
            U, S, Vh = torch.linalg.svd(dw, full_matrices=False)
            best = (U[:, :k] * S[:k]) @ Vh[:k]
            err = float(torch.linalg.norm(prod - best) / torch.linalg.norm(best))
            self.assertLess(err, 1e-4, module)

    def test_clamp_is_kohyas_quantile(self):
        self.extract("n.safetensors", "--rank", "8", "--no-clamp", "--dtype", "f32")
        self.extract("c.safetensors", "--rank", "8", "--dtype", "f32")
        clamped_some = False
        for name, module in TARGETS.items():
            if "in_layers" in name or "cond_stage" in name:
                continue
            up, down, _ = self.factors(self.path("n.safetensors"), module)
            cup, cdown, _ = self.factors(self.path("c.safetensors"), module)
            hi = torch.quantile(torch.cat([up.flatten(), down.flatten()]), 0.99)
            torch.testing.assert_close(cup, up.clamp(-hi, hi), rtol=0, atol=1e-6)
            torch.testing.assert_close(cdown, down.clamp(-hi, hi), rtol=0, atol=1e-6)
            clamped_some = clamped_some or bool((up.abs() > hi).any()) or bool((down.abs() > hi).any())
        self.assertTrue(clamped_some)

    def test_alpha_keeps_the_delta(self):
        self.extract("a1.safetensors", "--rank", "8", "--no-clamp", "--dtype", "f32")
        self.extract("a2.safetensors", "--rank", "8", "--no-clamp", "--dtype", "f32", "--alpha", "1")
        for module in list(TARGETS.values())[:4]:
            _, _, p1 = self.factors(self.path("a1.safetensors"), module)
            _, _, p2 = self.factors(self.path("a2.safetensors"), module)
            self.assertEqual(float(tensor(self.path("a2.safetensors"), module + ".alpha")), 1.0)
            torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-7)

    def test_names_are_the_published_kohya_layout(self):
        self.extract("k.safetensors", "--rank", "32", "--text-encoders")
        h = read_safetensors_header(self.path("k.safetensors"))
        ours = sorted((n, dt, list(s)) for n, dt, s, _ in h["entries"])
        published = sorted((n, dt, list(s)) for n, dt, s in layout_table("lora-kohya-sd15"))
        self.assertEqual(ours, published)
        self.assertEqual(h["metadata"]["ss_network_dim"], "32")
        self.assertEqual(h["metadata"]["ss_base_model_version"], "sd_v1")
        # Every module lands on its base tensor.
        p = run("inspect", self.path("k.safetensors"), "--against", self.base, "--json")
        self.assertEqual(p.returncode, 0)

    def test_diffusers_and_peft_names_are_the_published_ones(self):
        # diffusers' own LoRAs (attention only, rank 4, F32) name every module the way ckptkit
        # names the same modules, in diffusers' older keys (lora-diffusers-sd15) and PEFT's
        # (lora-peft-sd15); ckptkit also writes the MLP and projections.
        for fmt, layout in (("diffusers", "lora-diffusers-sd15"), ("peft", "lora-peft-sd15")):
            out = f"{fmt}.safetensors"
            self.extract(out, "--rank", "4", "--text-encoders", "--format", fmt, "--dtype", "f32")
            h = read_safetensors_header(self.path(out))
            ours = {(n, dt, tuple(s)) for n, dt, s, _ in h["entries"]}
            published = {(n, dt, tuple(s)) for n, dt, s in layout_table(layout)}
            self.assertEqual(published - ours, set(), fmt)
            self.assertFalse(any(n.endswith(".alpha") for n, _, _ in ours))
            meta = json.loads(h["metadata"]["lora_adapter_metadata"])
            self.assertEqual(meta["unet.r"], 4)
            self.assertEqual(meta["unet.lora_alpha"], 4)

    def test_unchanged_text_encoder_is_left_out(self):
        rows = layout_table("sd15-ldm")
        te = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
        tuned = write_sparse_safetensors(
            self.path("tuned2.safetensors"), rows,
            {n: ((self.base_vals[n] + self.delta[n]) if n != te else self.base_vals[n])
             .astype(np.float32).tobytes() for n in TARGETS})
        p = run("lora", "extract", tuned, self.base, "-o", self.path("u.safetensors"), "--rank", "4",
                "--text-encoders", "--json")
        rep = json.loads(p.stdout)
        self.assertTrue(any("text encoder" in n and "left out" in n for n in rep["notes"]))
        names = [n for n, *_ in read_safetensors_header(self.path("u.safetensors"))["entries"]]
        self.assertFalse(any(n.startswith("lora_te") for n in names))
        self.assertTrue(any(n.startswith("lora_unet") for n in names))

    def test_bad_inputs_write_nothing(self):
        out = self.path("bad.safetensors")
        other = write_sparse_safetensors(self.path("sdxl.safetensors"), layout_table("sdxl-sgm"), {})
        cases = [
            ([self.tuned, other], "sd1"),                     # families differ
            ([self.tuned, self.base, "--alpha", "4", "--format", "diffusers"], "alpha"),
        ]
        # NaN in the tuned model.
        rows = layout_table("sd15-ldm")
        name = next(iter(TARGETS))
        bad = (self.base_vals[name] + self.delta[name]).astype(np.float32)
        bad[3, 5] = np.nan
        nan = write_sparse_safetensors(self.path("nan.safetensors"), rows, {name: bad.tobytes()})
        cases.append(([nan, self.base], "not finite"))
        # A tensor of another shape.
        short = [(n, dt, s if n != name else [s[0], s[1] // 2]) for n, dt, s in rows]
        shaped = write_sparse_safetensors(self.path("shape.safetensors"), short, {})
        cases.append(([shaped, self.base], "in the tuned model"))
        for args, want in cases:
            p = run("lora", "extract", *args, "-o", out, "--rank", "4", check=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(want, p.stderr)
            self.assertFalse(os.path.exists(out))
            self.assertEqual(sorted(os.listdir(self.tmp)),
                             sorted(f for f in os.listdir(self.tmp) if not f.startswith(".")))


class ExtractSdxl(TempDirTest):
    def test_sdxl_locon_names_are_the_published_layout(self):
        rows = layout_table("sdxl-sgm")
        shapes = {n: s for n, _, s in rows}
        rng = np.random.default_rng(1)
        te1 = "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
        te2 = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
        dt = {n: d for n, d, _ in rows}
        vals = {n: rng.normal(0, 0.05, shapes[n]).astype(np.float16 if dt[n] == "F16" else np.float32).tobytes()
                for n in (te1, te2)}
        base = write_sparse_safetensors(self.path("base.safetensors"), rows, {})
        tuned = write_sparse_safetensors(self.path("tuned.safetensors"), rows, vals)
        out = self.path("x.safetensors")
        p = run("lora", "extract", tuned, base, "-o", out, "--rank", "32", "--conv-rank", "32",
                "--text-encoders", "--json")
        rep = json.loads(p.stdout)
        h = read_safetensors_header(out)
        ours = sorted((n, d, list(s)) for n, d, s, _ in h["entries"])
        published = sorted((n, d, list(s)) for n, d, s in layout_table("lora-kohya-sdxl-conv"))
        self.assertEqual(ours, published)
        self.assertEqual(h["metadata"]["ss_base_model_version"], "sdxl_base_v1-0")
        # CLIP-L's q_proj, and OpenCLIP's fused in_proj as three modules (q, k and v rows).
        self.assertEqual(rep["modules"] - rep["unchanged"], 4)


if __name__ == "__main__":
    unittest.main()
