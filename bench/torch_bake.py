#!/usr/bin/python3
"""The baseline for `ckptkit lora bake`: the same bake the way the Python tools do it with
PyTorch (kohya's networks/sdxl_merge_lora.py and A1111/ComfyUI's "save with LoRA" work on whole
state dicts): load the base fully, load each LoRA fully, and for every module
W = W + (up @ down) * strength * alpha / rank in F32 on the CPU (torch.mm, the convolutions on
their flattened factors), rounded back to W's dtype, then save.

Module names are kohya's SDXL ones (`lora_unet_` + the SGM path, `lora_te1_` CLIP-L,
`lora_te2_` CLIP-G in Hugging Face names, its q/k/v on thirds of the OpenCLIP in_proj) — the
published layouts lora-kohya-sdxl and lora-kohya-sdxl-conv. Loading and saving are
bench/torch_merge.py's (what safetensors.torch.load_file/save_file do, saved durably).

Usage: torch_bake.py BASE LORA[:STRENGTH]... OUT [--no-sync]
"""
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_convert import header_bytes, write_atomic, write_tensor  # noqa: E402
from torch_merge import load  # noqa: E402

HF_TO_OPENCLIP = {"self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc",
                  "mlp.fc2": "mlp.c_proj"}


def key_map(sd):
    """kohya module name -> (base key, row slice or None)."""
    m = {}
    for k, v in sd.items():
        if not k.endswith(".weight") or v.dim() < 2:
            continue
        local = k[:-len(".weight")]
        if local.startswith("model.diffusion_model."):
            m["lora_unet_" + local[len("model.diffusion_model."):].replace(".", "_")] = (k, None)
        elif local.startswith("conditioner.embedders.0.transformer."):
            m["lora_te1_" + local[len("conditioner.embedders.0.transformer."):].replace(".", "_")] = (k, None)
    for k, v in sd.items():
        r = re.match(r"conditioner\.embedders\.1\.model\.transformer\.resblocks\.(\d+)\.(.*)$", k)
        if not r:
            continue
        layer, rest = r.groups()
        hf = f"lora_te2_text_model_encoder_layers_{layer}_"
        if rest == "attn.in_proj_weight":
            h = v.shape[0] // 3
            for i, p in enumerate(("q_proj", "k_proj", "v_proj")):
                m[hf + "self_attn_" + p] = (k, (i * h, (i + 1) * h))
        for a, b in HF_TO_OPENCLIP.items():
            if rest == b + ".weight":
                m[hf + a.replace(".", "_")] = (k, None)
    return m


def bake(base, loras, out, sync):
    sd, meta = load(base)
    kmap = key_map(sd)
    for path, strength in loras:
        lora, _ = load(path)
        modules = {k[:-len(".lora_down.weight")] for k in lora if k.endswith(".lora_down.weight")}
        for mod in modules:
            if mod not in kmap:
                continue
            key, rows = kmap[mod]
            down = lora[mod + ".lora_down.weight"].float()
            up = lora[mod + ".lora_up.weight"].float()
            rank = down.shape[0]
            alpha = lora[mod + ".alpha"].item() if mod + ".alpha" in lora else rank
            delta = torch.mm(up.flatten(1), down.flatten(1)) * (strength * alpha / rank)
            w = sd[key]
            if rows is None:
                sd[key] = (w.float() + delta.reshape(w.shape)).to(w.dtype)
            else:
                part = w[rows[0]:rows[1]].float() + delta.reshape(rows[1] - rows[0], -1)
                w[rows[0]:rows[1]] = part.to(w.dtype)
        del lora

    def fill(f):
        f.write(header_bytes([(k, v.dtype, v.shape) for k, v in sd.items()], meta))
        for v in sd.values():
            write_tensor(f, v)

    write_atomic(out, sync, fill)


def main(argv):
    sync = "--no-sync" not in argv
    pos = [a for a in argv if a != "--no-sync"]
    if len(pos) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    loras = []
    for a in pos[1:-1]:
        path, _, s = a.rpartition(":")
        loras.append((path, float(s)) if path and s.replace(".", "", 1).isdigit() else (a, 1.0))
    bake(pos[0], loras, pos[-1], sync)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
