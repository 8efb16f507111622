#!/usr/bin/python3
"""The baseline for `ckptkit lora extract`: kohya's networks/extract_lora_from_models.py done
the way it runs on a CPU: load both models fully, and for every module kohya targets (SDXL:
the attention and MLP projections and proj_in/proj_out of the transformer blocks) ΔW = tuned -
base in F32, torch.linalg.svd(ΔW, full_matrices=False) (every singular value; kohya's call also
forms the full square U, which only makes it slower), up = U[:, :r] diag(S[:r]),
down = Vh[:r], both clamped at torch.quantile(cat(up, down), 0.99), alpha = rank, saved F16.

A full SVD of every module of a full-size SDXL takes long on a small machine, so with
--sample K only every K-th module (in name order; every shape occurs) is decomposed and the
SVD time is scaled by the number of modules: the printed line "SVD_SCALED s" is the estimate of
the whole job's SVD part, which bench/run adds to the measured load time.

Usage: torch_extract.py TUNED BASE OUT --rank R [--sample K]
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_convert import header_bytes, write_atomic, write_tensor  # noqa: E402
from torch_merge import load  # noqa: E402

UNET = "model.diffusion_model."


def targets(sd):
    """SDXL (SGM names): the weights of the transformer blocks' projections and proj_in/out."""
    out = []
    for k, v in sd.items():
        if not k.startswith(UNET) or not k.endswith(".weight") or v.dim() < 2:
            continue
        local = k[len(UNET):-len(".weight")]
        if ".transformer_blocks." in local and "norm" not in local:
            out.append(k)
        elif local.endswith(".proj_in") or local.endswith(".proj_out"):
            out.append(k)
    return sorted(out)


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    rank = int(argv[argv.index("--rank") + 1])
    sample = int(argv[argv.index("--sample") + 1]) if "--sample" in argv else 1
    args = [a for a in args if a not in (str(rank), str(sample))]
    tuned_path, base_path, out = args[:3]
    t0 = time.time()
    tuned, _ = load(tuned_path)
    base, _ = load(base_path)
    keys = targets(base)
    t1 = time.time()
    lora = {}
    done = 0
    with torch.no_grad():
        for i, k in enumerate(keys):
            if i % sample:
                continue
            mat = (tuned[k].float() - base[k].float())
            shape = mat.shape
            mat = mat.reshape(shape[0], -1)
            r = min(rank, mat.shape[0], mat.shape[1])
            U, S, Vh = torch.linalg.svd(mat, full_matrices=False)
            U = U[:, :r] @ torch.diag(S[:r])
            Vh = Vh[:r, :]
            hi = torch.quantile(torch.cat([U.flatten(), Vh.flatten()]), 0.99)
            U, Vh = U.clamp(-hi, hi), Vh.clamp(-hi, hi)
            name = "lora_unet_" + k[len(UNET):-len(".weight")].replace(".", "_")
            if len(shape) == 4:
                U = U.reshape(shape[0], r, 1, 1)
                Vh = Vh.reshape(r, *shape[1:])
            lora[name + ".lora_up.weight"] = U.half().contiguous()
            lora[name + ".lora_down.weight"] = Vh.half().contiguous()
            lora[name + ".alpha"] = torch.tensor(float(r)).half()
            done += 1
    t2 = time.time()
    del tuned, base

    def fill(f):
        f.write(header_bytes([(k, v.dtype, v.shape) for k, v in lora.items()], {}))
        for v in lora.values():
            write_tensor(f, v)

    write_atomic(out, True, fill)
    t3 = time.time()
    svd_scaled = (t2 - t1) * len(keys) / max(1, done)
    print(f"LOAD {t1 - t0:.3f}\nSVD_MEASURED {t2 - t1:.3f}\nMODULES {done} of {len(keys)}\n"
          f"SVD_SCALED {svd_scaled:.3f}\nSAVE {t3 - t2:.3f}\n"
          f"TOTAL_ESTIMATE {t1 - t0 + svd_scaled + (t3 - t2) * len(keys) / max(1, done):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
