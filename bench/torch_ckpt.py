#!/usr/bin/python3
"""PyTorch side of the .ckpt benchmark (bench/run, section g).

  torch_ckpt.py make IN.safetensors OUT.ckpt
      Writes OUT.ckpt with torch.save the way training code leaves an SD checkpoint:
      {"state_dict": <every tensor of IN>, "global_step": 840000, "epoch": 5}.
  torch_ckpt.py inspect X.ckpt
      What a Python user does to learn what is inside: torch.load, then count tensors and
      parameters and list dtypes. (torch 1.13 reads every storage into memory to do it.)
  torch_ckpt.py convert X.ckpt OUT.safetensors [--dtype f16] [--no-sync]
      The torch route of `ckptkit convert X.ckpt -o OUT --dtype f16`: torch.load, take the
      state dict, `.to(float16)` the float tensors, write a safetensors file (the same writer as
      bench/torch_convert.py), fsync, rename.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_convert as tc  # noqa: E402


def make(src, dst):
    _, tensors, keep = tc.open_tensors(src)
    sd = {name: t.clone() for name, t in tensors}
    keep[1].close()
    keep[0].close()
    torch.save({"state_dict": sd, "global_step": 840000, "epoch": 5}, dst)


def state_dict_of(obj):
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj["state_dict"]
    return obj


def inspect(path):
    sd = state_dict_of(torch.load(path, map_location="cpu"))
    params = sum(t.numel() for t in sd.values() if torch.is_tensor(t))
    dtypes = sorted({str(t.dtype) for t in sd.values() if torch.is_tensor(t)})
    print(f"{len(sd)} tensors, {params} parameters, {', '.join(dtypes)}")


def convert(src, dst, target, sync):
    sd = state_dict_of(torch.load(src, map_location="cpu"))
    out = {k: tc.cast(v, target) for k, v in sorted(sd.items()) if torch.is_tensor(v)}
    tc.write_atomic(dst, sync, lambda f: tc.write_state_dict(f, out, None))


def main(argv):
    if len(argv) >= 3 and argv[0] == "make":
        make(argv[1], argv[2])
    elif len(argv) >= 2 and argv[0] == "inspect":
        inspect(argv[1])
    elif len(argv) >= 3 and argv[0] == "convert":
        dt = "f16"
        if "--dtype" in argv:
            dt = argv[argv.index("--dtype") + 1]
        convert(argv[1], argv[2], tc.TARGETS[dt], "--no-sync" not in argv)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
