"""`lora resize` against torch 1.13 running kohya's rules (sd-scripts networks/resize_lora.py
@ 41de936, re-implemented below from its description in docs/lora.md): the full SVD of
W = up @ down in F32, the dynamic rank choices (sv_ratio keeps one more than the values above
max/X; sv_fro and sv_cumulative the first index reaching X), capped at --rank, a zero module
kept at rank 1; new alpha = alpha / old rank * new rank; up = U S, down = Vh. The ranks must be
equal, ΔW equal to torch's truncation in F32 tolerance; refusals write nothing."""
import json
import os
import unittest

import numpy as np
import torch

from ckpt_testlib import TempDirTest, read_safetensors, run, write_safetensors

P = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_"
# module -> (up rows, down columns (or conv in, kh, kw), rank, alpha, decay of its spectrum)
MODULES = {
    P + "attn1_to_q": (320, (320,), 16, 8.0, 0.70),
    P + "attn2_to_k": (320, (768,), 16, 8.0, 0.85),
    P + "ff_net_0_proj": (2560, (320,), 16, None, 0.55),
    P + "ff_net_2": (320, (1280,), 16, 4.0, 0.93),
    "lora_unet_down_blocks_0_resnets_0_conv1": (320, (320, 3, 3), 16, 16.0, 0.75),
    "lora_te_text_model_encoder_layers_0_mlp_fc1": (3072, (768,), 16, 1.0, 0.8),
}


def kohya_rank(S, cap, method, param):
    """kohya's rank_resize + index_* on torch singular values (float32)."""
    n = len(S)
    clamp = lambda i: max(0, min(i, n - 1))
    if method == "sv_ratio":
        new = clamp(int(torch.sum(S > S[0] / param).item())) + 1
    elif method == "sv_cumulative":
        cum = torch.cumsum(S, dim=0) / float(torch.sum(S))
        new = clamp(int(torch.searchsorted(cum, param))) + 1
    elif method == "sv_fro":
        sq = S.pow(2)
        cum = torch.cumsum(sq, dim=0) / float(torch.sum(sq))
        new = clamp(int(torch.searchsorted(cum, param ** 2))) + 1
    else:
        new = cap
    if S[0] <= 1e-6:
        return 1
    return min(new, cap)


def f32(t):
    dt, shape, raw = t
    return torch.from_numpy(np.frombuffer(raw, dtype={"F32": "<f4", "F16": "<f2"}[dt])
                            .astype(np.float32).reshape(shape).copy())


class Resize(TempDirTest):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(11)
        tensors = []
        for name, (m, cols, r, alpha, decay) in MODULES.items():
            n = int(np.prod(cols))
            u, _ = np.linalg.qr(rng.normal(size=(m, r)))
            v, _ = np.linalg.qr(rng.normal(size=(n, r)))
            s = 0.5 * decay ** np.arange(r)
            up = (u * s).astype(np.float32)
            down = v.T.astype(np.float32)
            conv = len(cols) == 3
            tensors.append((name + ".lora_down.weight", "F32", [r, *cols], down.tobytes()))
            tensors.append((name + ".lora_up.weight", "F32", [m, r] + ([1, 1] if conv else []), up.tobytes()))
            if alpha is not None:
                tensors.append((name + ".alpha", "F32", [], np.float32(alpha).tobytes()))
        self.lora = self.path("in.safetensors")
        write_safetensors(self.lora, tensors, {"ss_network_dim": "16", "ss_network_alpha": "8",
                                               "ss_training_comment": "trained",
                                               "sshs_model_hash": "stale"})
        _, self.t, _ = read_safetensors(self.lora)

    def resize(self, *args):
        out = self.path("out.safetensors")
        if os.path.exists(out):
            os.remove(out)
        p = run("lora", "resize", self.lora, "-o", out, "--json", *args)
        meta, t, _ = read_safetensors(out)
        return json.loads(p.stdout), meta, t

    def check(self, method, param, cap, conv_cap=None):
        rep, meta, t = self.resize("--rank", str(cap), *(["--conv-rank", str(conv_cap)] if conv_cap else []),
                                   *(["--dynamic", f"{method}={param}"] if method else []))
        got = {m["name"]: m for m in rep["modules"]}
        for name, (m, cols, r, alpha, _) in MODULES.items():
            up, down = f32(self.t[name + ".lora_up.weight"]), f32(self.t[name + ".lora_down.weight"])
            W = up.reshape(m, -1) @ down.reshape(r, -1)
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)  # S as with full matrices
            c = conv_cap if conv_cap and len(cols) == 3 else cap
            k = min(kohya_rank(S, c, method, param), r)
            scale = (alpha / r) if alpha is not None else 1.0
            self.assertEqual(got[name]["new_rank"], k, f"{name} {method}={param}")
            self.assertAlmostEqual(got[name]["new_alpha"], scale * k, places=5)
            nd, nu = f32(t[name + ".lora_down.weight"]), f32(t[name + ".lora_up.weight"])
            self.assertEqual(list(nd.shape), [k, *cols])
            self.assertEqual(list(nu.shape), [m, k] + ([1, 1] if len(cols) == 3 else []))
            new_scale = float(f32(t[name + ".alpha"])) / k if alpha is not None else 1.0
            ours = nu.reshape(m, k) @ nd.reshape(k, -1) * new_scale
            want = (U[:, :k] * S[:k]) @ Vh[:k] * scale
            err = float(torch.linalg.norm(ours - want) / torch.linalg.norm(want))
            self.assertLess(err, 1e-4, name)
            fro = float(torch.sqrt(torch.sum(S[:k] ** 2) / torch.sum(S ** 2)))
            self.assertAlmostEqual(got[name]["fro_kept"], fro, places=4)
        return meta, rep

    def test_fixed_rank(self):
        meta, _ = self.check(None, None, 4, conv_cap=2)
        self.assertEqual(meta["ss_network_dim"], "4")
        self.assertTrue(meta["ss_training_comment"].startswith("dimension is resized from 16 to 4 (conv: 2)"))
        self.assertNotIn("sshs_model_hash", meta)

    def test_dynamic_rules_choose_kohyas_ranks(self):
        chosen = set()
        for method, params in (("sv_ratio", (4.0, 10.0, 60.0)), ("sv_fro", (0.8, 0.95, 0.99)),
                               ("sv_cumulative", (0.5, 0.8, 0.97))):
            for param in params:
                meta, rep = self.check(method, param, 12)
                self.assertEqual(meta["ss_network_dim"], "Dynamic")
                chosen |= {m["new_rank"] for m in rep["modules"]}
        self.assertGreater(len(chosen), 5, "the spectra must make the rules choose many ranks")

    def test_refusals_write_nothing(self):
        out = self.path("bad.safetensors")
        name = next(iter(MODULES))
        bad_up = f32(self.t[name + ".lora_up.weight"]).numpy().copy()
        bad_up[0, 0] = np.nan
        tensors = [(n, dt, shape, bad_up.tobytes() if n == name + ".lora_up.weight" else raw)
                   for n, (dt, shape, raw) in self.t.items()]
        nan = self.path("nan.safetensors")
        write_safetensors(nan, tensors)
        dora = self.path("dora.safetensors")
        write_safetensors(dora, [(n, dt, shape, raw) for n, (dt, shape, raw) in self.t.items()] +
                          [(name + ".dora_scale", "F32", [320, 1], np.ones(320, np.float32).tobytes())])
        model = self.path("model.safetensors")
        run("sample", "--layout", "clip-l", "-o", model, "--sparse", "-q")
        for src, want in ((nan, "NaN"), (dora, "DoRA"), (model, "not a LoRA")):
            p = run("lora", "resize", src, "-o", out, "--rank", "4", check=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(want, p.stderr)
            self.assertFalse(os.path.exists(out))
        p = run("lora", "resize", self.lora, "-o", out, "--rank", "4", "--dynamic", "sv_fro", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
