#!/usr/bin/python3
"""The baseline for `ckptkit lora resize`: kohya's networks/resize_lora.py on a CPU: load the
LoRA as F32, and per module W = up @ down, torch.linalg.svd(W, full_matrices=False) (every
singular value; kohya's call also forms the full square U, slower still), the new rank, up =
U[:, :k] diag(S[:k]), down = Vh[:k], alpha = alpha / r * k, saved in the input's precision.

FLUX modules are up to 3072 x 21504, and their full SVDs take long on a small machine, so with
--sample K only every K-th module is decomposed and the SVD time scaled by the number of
modules (printed as SVD_SCALED; TOTAL_ESTIMATE adds the measured load and scaled save).

Usage: torch_resize.py IN OUT --rank R [--sample K]
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_convert import header_bytes, write_atomic, write_tensor  # noqa: E402
from torch_merge import load  # noqa: E402


def main(argv):
    rank = int(argv[argv.index("--rank") + 1])
    sample = int(argv[argv.index("--sample") + 1]) if "--sample" in argv else 1
    pos = [a for i, a in enumerate(argv) if not a.startswith("--") and
           (i == 0 or argv[i - 1] not in ("--rank", "--sample"))]
    src, out = pos[:2]
    t0 = time.time()
    sd, meta = load(src)
    sd = {k: v.float() for k, v in sd.items()}
    modules = sorted(k[:-len(".lora_down.weight")] for k in sd if k.endswith(".lora_down.weight"))
    t1 = time.time()
    res, done = {}, 0
    with torch.no_grad():
        for i, m in enumerate(modules):
            if i % sample:
                continue
            down, up = sd[m + ".lora_down.weight"], sd[m + ".lora_up.weight"]
            r = down.shape[0]
            alpha = float(sd[m + ".alpha"]) if m + ".alpha" in sd else float(r)
            W = up.reshape(up.shape[0], -1) @ down.reshape(r, -1)
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            k = min(rank, r)
            res[m + ".lora_up.weight"] = (U[:, :k] @ torch.diag(S[:k])).half().contiguous()
            res[m + ".lora_down.weight"] = Vh[:k].half().contiguous()
            res[m + ".alpha"] = torch.tensor(alpha / r * k).half()
            done += 1
    t2 = time.time()

    def fill(f):
        f.write(header_bytes([(k, v.dtype, v.shape) for k, v in res.items()], meta))
        for v in res.values():
            write_tensor(f, v)

    write_atomic(out, True, fill)
    t3 = time.time()
    scale = len(modules) / max(1, done)
    print(f"LOAD {t1 - t0:.3f}\nSVD_MEASURED {t2 - t1:.3f}\nMODULES {done} of {len(modules)}\n"
          f"SVD_SCALED {(t2 - t1) * scale:.3f}\nSAVE {t3 - t2:.3f}\n"
          f"TOTAL_ESTIMATE {t1 - t0 + (t2 - t1) * scale + (t3 - t2) * scale:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
