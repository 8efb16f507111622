"""Issue 18: samples are faithful stand-ins and the claims match what the tool writes.

* `sample` writes the noise-schedule buffers the original training code registers (ldm's
  DDPM.register_schedule, computed here with torch/NumPy as that code does) and SD3's flow
  sigmas (ComfyUI's ModelSamplingDiscreteFlow, shift 3, computed with torch).
* `verify` flags a shuffled, a negative and an inconsistent schedule, and passes the real one.
* The loader table in docs/models.md names only part files that `split` writes, and the
  stable-diffusion.cpp flags it names take the file `split` names after them."""
import json
import math
import os
import re
import struct
import unittest

import numpy as np
import torch

from ckpt_testlib import (TempDirTest, layout_table, read_safetensors_header, run,
                          write_sparse_safetensors)

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "docs")
DDPM = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"]
TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def register_schedule(linear_start=0.00085, linear_end=0.012, n=1000, v_posterior=0.0):
    """The buffers as ldm's DDPM.register_schedule registers them (make_beta_schedule
    'linear', then NumPy in float64, then torch.tensor(..., dtype=float32))."""
    betas = (torch.linspace(linear_start ** 0.5, linear_end ** 0.5, n, dtype=torch.float64) ** 2
             ).numpy()
    alphas = 1. - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1., alphas_cumprod[:-1])
    posterior_variance = (1 - v_posterior) * betas * (1. - alphas_cumprod_prev) / (
        1. - alphas_cumprod) + v_posterior * betas
    out = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1. - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1. - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1. / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1. / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1. - alphas_cumprod),
        "posterior_mean_coef2": (1. - alphas_cumprod_prev) * np.sqrt(alphas) / (
            1. - alphas_cumprod),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


def flow_sigmas(shift=3.0, timesteps=1000, multiplier=1000):
    """ComfyUI's ModelSamplingDiscreteFlow.set_parameters."""
    t = (torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier
    t = t / multiplier
    return shift * t / (1 + (shift - 1) * t)


def read_tensor(path, name):
    h = read_safetensors_header(path)
    for n, dtype, shape, (b, e) in h["entries"]:
        if n == name:
            with open(path, "rb") as f:
                f.seek(8 + h["n"] + b)
                raw = f.read(e - b)
            t = torch.frombuffer(bytearray(raw), dtype=TORCH[dtype] if dtype in TORCH else
                                 torch.int64)
            return dtype, t.reshape(shape) if shape else t.reshape(())
    raise KeyError(name)


class FaithfulSamples(TempDirTest):
    def sample(self, layout, dtype):
        p = self.path(f"{layout}-{dtype}.safetensors")
        run("sample", "--layout", layout, "--sparse", "--dtype", dtype, "-o", p, "-q", "--no-sync")
        return p

    def test_ddpm_schedule_equals_the_training_code(self):
        want = register_schedule()
        for layout in ("sd15-ldm", "sd2-ldm"):
            for dtype in ("f32", "f16", "bf16"):
                p = self.sample(layout, dtype)
                for name in DDPM:
                    with self.subTest(layout=layout, dtype=dtype, buffer=name):
                        st, got = read_tensor(p, name)
                        expect = want[name].to(TORCH[st])  # the output dtype's rounding
                        self.assertTrue(torch.equal(got, expect),
                                        f"{name}: first differences "
                                        f"{(got != expect).nonzero()[:3].flatten().tolist()}")

    def test_schedule_is_sound(self):
        p = self.sample("sd15-ldm", "f32")
        _, ac = read_tensor(p, "alphas_cumprod")
        self.assertTrue(bool((ac > 0).all() and (ac <= 1).all()))
        self.assertTrue(bool((ac[1:] < ac[:-1]).all()))
        self.assertAlmostEqual(float(ac[0]), 1 - 0.00085, places=7)

    def test_sd3_flow_sigmas(self):
        p = self.sample("sd3-medium", "f32")
        _, got = read_tensor(p, "model.model_sampling.sigmas")
        self.assertTrue(torch.equal(got, flow_sigmas()))
        self.assertAlmostEqual(float(got[-1]), 1.0)

    def test_other_fixed_values(self):
        p = self.sample("sdxl-sgm", "f16")
        _, pos = read_tensor(p, "conditioner.embedders.0.transformer.text_model.embeddings.position_ids")
        self.assertEqual(pos.flatten().tolist(), list(range(77)))
        _, scale = read_tensor(p, "conditioner.embedders.1.model.logit_scale")
        self.assertAlmostEqual(float(scale), math.log(100), places=2)  # CLIP's trained value

    def test_learned_weights_stay_random(self):
        # The schedule does not depend on the seed; learned weights do (a LoRA: small enough to
        # write in full).
        a, b = self.path("a.safetensors"), self.path("b.safetensors")
        run("sample", "--layout", "sd15-ldm", "--sparse", "-o", a, "-q", "--no-sync")
        run("sample", "--layout", "sd15-ldm", "--sparse", "--seed", "5", "-o", b, "-q", "--no-sync")
        self.assertTrue(torch.equal(read_tensor(a, "alphas_cumprod")[1],
                                    read_tensor(b, "alphas_cumprod")[1]))
        a, b = self.path("la.safetensors"), self.path("lb.safetensors")
        run("sample", "--layout", "lora-kohya-sd15", "-o", a, "-q", "--no-sync")
        run("sample", "--layout", "lora-kohya-sd15", "--seed", "5", "-o", b, "-q", "--no-sync")
        name = next(e[0] for e in read_safetensors_header(a)["entries"]
                    if e[0].endswith("lora_down.weight"))
        self.assertFalse(torch.equal(read_tensor(a, name)[1], read_tensor(b, name)[1]))


class VerifySchedule(TempDirTest):
    def write(self, name, values):
        """An SD1 file (sparse) whose schedule buffers are `values` {name: float32 array}."""
        data = {k: np.asarray(v, dtype="<f4").tobytes() for k, v in values.items()}
        return write_sparse_safetensors(self.path(name + ".safetensors"), layout_table("sd15-ldm"),
                                        data)

    def findings(self, path):
        p = run("verify", path, "--structure-only", "--json", check=False)
        doc = json.loads(p.stdout)
        return p.returncode, [f for f in doc[0]["findings"] if f["code"] == "schedule-invalid"]

    def good(self):
        return {k: v.numpy() for k, v in register_schedule().items()}

    def test_real_schedule_passes(self):
        rc, found = self.findings(self.write("good", self.good()))
        self.assertEqual(found, [])

    def test_sampled_files_pass_in_every_dtype(self):
        for dtype in ("f32", "f16", "bf16"):
            p = self.path(f"s-{dtype}.safetensors")
            run("sample", "--layout", "sd2-ldm", "--sparse", "--dtype", dtype, "-o", p, "-q",
                "--no-sync")
            rc, found = self.findings(p)
            self.assertEqual(found, [], dtype)
            self.assertEqual(rc, 0)

    def test_shuffled(self):
        v = self.good()
        rng = np.random.default_rng(1)
        v["alphas_cumprod"] = rng.permutation(v["alphas_cumprod"])
        rc, found = self.findings(self.write("shuffled", v))
        self.assertEqual(rc, 1)
        self.assertIn("alphas_cumprod", [f["tensor"] for f in found])
        msg = next(f["message"] for f in found if f["tensor"] == "alphas_cumprod")
        self.assertIn("not strictly decreasing", msg)
        self.assertIn("stable-diffusion.cpp", msg)

    def test_negative(self):
        v = self.good()
        v["alphas_cumprod"] = v["alphas_cumprod"].copy()
        v["alphas_cumprod"][500:] *= -1
        rc, found = self.findings(self.write("negative", v))
        self.assertEqual(rc, 1)
        msg = next(f["message"] for f in found if f["tensor"] == "alphas_cumprod")
        self.assertIn("500 of 1000 values outside (0, 1]", msg)
        self.assertIn("index 500", msg)

    def test_random_like_the_old_sampler(self):
        v = self.good()
        v["alphas_cumprod"] = np.random.default_rng(2).normal(0, 0.02, 1000)
        rc, found = self.findings(self.write("random", v))
        self.assertEqual(rc, 1)

    def test_inconsistent_with_betas(self):
        # betas of another schedule (DDPM's linear 1e-4 .. 2e-2), the rest from SD's.
        v = self.good()
        v["betas"] = np.linspace(1e-4, 2e-2, 1000)
        rc, found = self.findings(self.write("inconsistent", v))
        self.assertEqual(rc, 1)
        names = {f["tensor"] for f in found}
        self.assertIn("alphas_cumprod", names)
        self.assertTrue(any("does not follow from betas" in f["message"] for f in found))

    def test_one_derived_buffer_off(self):
        v = self.good()
        v["posterior_mean_coef2"] = v["posterior_mean_coef2"].copy()
        v["posterior_mean_coef2"][700] *= 1.01
        rc, found = self.findings(self.write("coef2", v))
        self.assertEqual([f["tensor"] for f in found], ["posterior_mean_coef2"])
        self.assertIn("index 700", found[0]["message"])


class LoaderTable(TempDirTest):
    """The table in docs/models.md against what split writes."""
    SAMPLES = {"SD1.x": "sd15-ldm", "SD2.x": "sd2-ldm", "SDXL base": "sdxl-sgm",
               "SDXL refiner": "sdxl-refiner-sgm", "SD3 / SD3.5": "sd3-medium",
               "FLUX.1 dev / schnell": "flux1-dev-comfy-fp8-aio"}
    TOKENS = {"DM": "diffusion_models/{n}.safetensors", "L": "text_encoders/{n}-clip_l.safetensors",
              "G": "text_encoders/{n}-clip_g.safetensors", "H": "text_encoders/{n}-clip_h.safetensors",
              "T5": "text_encoders/{n}-t5xxl.safetensors", "VAE": "vae/{n}-vae.safetensors"}

    def rows(self):
        with open(os.path.join(DOCS, "models.md"), encoding="utf-8") as f:
            text = f.read()
        section = text.split("## Which loader takes which files", 1)[1].split("\n## ", 1)[0]
        rows = {}
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 5 and cells[0] in self.SAMPLES:
                rows[cells[0]] = cells
        return rows

    def test_every_family_has_a_row(self):
        self.assertEqual(set(self.rows()), set(self.SAMPLES))

    def test_named_parts_are_what_split_writes(self):
        for family, cells in self.rows().items():
            with self.subTest(family=family):
                layout = self.SAMPLES[family]
                src = self.path(layout + ".safetensors")
                run("sample", "--layout", layout, "--sparse", "-o", src, "-q", "--no-sync")
                out = self.path("parts-" + layout)
                run("split", src, "-o", out, "-q", "--no-sync")
                written = set()
                for root, _, files in os.walk(out):
                    for f in files:
                        written.add(os.path.relpath(os.path.join(root, f), out))
                # ComfyUI's parts recipe names exactly the files split writes.
                comfy = cells[1]
                named = set(re.findall(r"`(DM|L|G|H|T5|VAE)`", comfy.split("parts:", 1)[1]))
                self.assertEqual({self.TOKENS[t].format(n=layout) for t in named}, written)
                # Every stable-diffusion.cpp flag given a part names a part split writes, and
                # the flag's own name is the part's file tag.
                for flag, token in re.findall(r"--(diffusion-model|clip_l|clip_g|t5xxl|vae) "
                                              r"(DM|L|G|H|T5|VAE)\b", cells[2]):
                    path = self.TOKENS[token].format(n=layout)
                    self.assertIn(path, written, (family, flag))
                    if flag != "diffusion-model":
                        self.assertTrue(path.endswith(f"-{flag}.safetensors"), (flag, path))


if __name__ == "__main__":
    unittest.main()
