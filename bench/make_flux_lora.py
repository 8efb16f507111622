#!/usr/bin/python3
"""Writes a kohya FLUX.1 LoRA of the given rank for the resize benchmark: one module per weight
of the double and single blocks of data/layouts/flux1-dev-transformer.tsv (BFL names, fused
qkv, as sd-scripts' networks/lora_flux.py names them), F16 factors of N(0, 0.02), alpha = rank.

Usage: make_flux_lora.py OUT --rank R
"""
import json
import os
import struct
import sys

import numpy as np

LAYOUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                      "layouts", "flux1-dev-transformer.tsv")


def main(argv):
    out = argv[0]
    rank = int(argv[argv.index("--rank") + 1])
    mods = []
    with open(LAYOUT) as f:
        for line in f:
            name, _, dims = line.rstrip("\n").split("\t")
            shape = [int(d) for d in dims.split(",")] if dims else []
            if len(shape) == 2 and name.endswith(".weight") and \
                    (name.startswith("double_blocks.") or name.startswith("single_blocks.")):
                mods.append(("lora_unet_" + name[:-len(".weight")].replace(".", "_"), shape))
    header, off, order = {}, 0, []
    for m, (o, i) in mods:
        for key, shape in ((m + ".alpha", []), (m + ".lora_down.weight", [rank, i]),
                           (m + ".lora_up.weight", [o, rank])):
            n = 2 * int(np.prod(shape)) if shape else 2
            header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [off, off + n]}
            order.append((key, shape))
            off += n
    header["__metadata__"] = {"ss_network_module": "networks.lora_flux", "ss_network_dim": str(rank),
                              "ss_network_alpha": str(rank), "ss_base_model_version": "flux1"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    rng = np.random.default_rng(0)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for key, shape in order:
            if not shape:
                f.write(np.float16(rank).tobytes())
            else:
                f.write((rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16).tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
