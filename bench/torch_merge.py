#!/usr/bin/python3
"""The baseline for `ckptkit merge`: the same merge done the way the web UIs do it with PyTorch
(AUTOMATIC1111's checkpoint merger, modules/extras.py run_modelmerger; supermerger and ComfyUI's
ModelMergeSimple work on whole state dicts the same way): load every input fully, loop over the
keys, save.

  * load: every input is read completely into its own state dict before anything is merged
    (A1111: theta_0 = read_state_dict(A), theta_1 = read_state_dict(B), theta_2 = ...). Debian's
    python3-torch is 1.13 and the `safetensors` package is not installed, so this does what
    `safetensors.torch.load_file` does, by hand: parse the header (8-byte little-endian length
    + JSON), map the file, copy each tensor out of the mapping into memory torch owns
    (torch.frombuffer(...).clone()), close the mapping once the file is loaded.
  * merge: for each key of A, in place in A's state dict (theta_0[key] = ...), in F32:
        weighted-sum    r = a.float()*(1-α) + b.float()*α
        add-difference  r = a.float() + (b.float() - c.float())*α
    rounded once to A's dtype (.half() for F16 inputs). These are A1111's formulas in A1111's
    operation order — weighted_sum(a, b, α) = (1 - α)*a + α*b; add_difference(a, b - c, α)
    = a + α*(b - c) — which A1111 evaluates in the dtype of the loaded tensors, i.e. in F32
    for F32 checkpoints (for F16 ones it rounds every intermediate, B - C included, which it
    forms for all keys before the loop, to F16). Here every intermediate is F32, per key, so
    that the output can be compared bit for bit with `ckptkit merge`: each operation is a
    separate IEEE F32 operation (no fused multiply-add) and torch rounds the Python scalars
    (1-α, α, computed in double) to F32 once, which is exactly docs/merge.md's
    r = x0*f32(1-α); r = r + x1*f32(α) and d = b - c; d = d*f32(α); r = a + d, with one
    rounding to the output dtype. The memory profile is A1111's: all inputs loaded at once.
    Non-float tensors (position_ids) stay A's, as in ckptkit (A1111 skips position_ids too).
  * save: a safetensors file (JSON header padded to a multiple of 8, then the tensors in A's
    order) written to a temporary file beside OUT, flushed, os.fsync'ed and renamed: the same
    durability as ckptkit's default.

Its time includes starting Python and importing torch, as a user would see it.

--compare X Y (outside any timing): X and Y must hold the same tensor names, dtypes and shapes;
prints how many tensors are bit-identical and, for the others, the largest difference (in
units in the last place of F16/BF16/F32). Exit status 0 when all are identical, 3 otherwise.

Usage: torch_merge.py weighted-sum A B OUT [--alpha X] [--no-sync]
       torch_merge.py add-difference A B C OUT [--alpha X] [--no-sync]
       torch_merge.py --compare X Y
"""
import json
import mmap
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_convert import DTYPES, header_bytes, read_header, write_atomic, write_tensor  # noqa: E402


def load(path):
    """A state dict {name: tensor} in A's data order; every tensor a copy in torch's memory
    (what safetensors.torch.load_file returns). Also returns the file's __metadata__."""
    header, data_start = read_header(path)
    meta = header.pop("__metadata__", None)
    sd = {}
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            with warnings.catch_warnings():
                # frombuffer warns that the mapping is read-only; the clone is what is kept.
                warnings.simplefilter("ignore", UserWarning)
                for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                    dt = DTYPES[e["dtype"]]
                    begin, end = e["data_offsets"]
                    count = (end - begin) // torch.empty((), dtype=dt).element_size()
                    if count == 0:
                        t = torch.empty(e["shape"], dtype=dt)
                    else:
                        t = torch.frombuffer(mm, dtype=dt, count=count,
                                             offset=data_start + begin).reshape(e["shape"]).clone()
                    sd[name] = t
        finally:
            mm.close()
    return sd, meta


def weighted_sum(a, b, alpha):
    return a.float() * (1 - alpha) + b.float() * alpha


def add_difference(a, b, c, alpha):
    return a.float() + (b.float() - c.float()) * alpha


def merge(method, paths, out, alpha, sync):
    # Load every input fully first, as the web UIs do.
    theta_0, meta = load(paths[0])
    others = [load(p)[0] for p in paths[1:]]
    for key in list(theta_0.keys()):
        a = theta_0[key]
        if not a.is_floating_point() or any(key not in t for t in others):
            continue  # non-float (position_ids) or missing elsewhere: A's tensor, unchanged
        xs = [t[key] for t in others]
        if any(tuple(x.shape) != tuple(a.shape) for x in xs):
            continue
        if method == "weighted-sum":
            r = weighted_sum(a, xs[0], alpha)
        else:
            r = add_difference(a, xs[0], xs[1], alpha)
        theta_0[key] = r.to(a.dtype)
    del others
    meta = dict(meta or {})
    meta["merge_recipe"] = json.dumps({"method": method, "alpha": alpha,
                                       "inputs": [os.path.basename(p) for p in paths]})

    def fill(f):
        f.write(header_bytes([(k, v.dtype, v.shape) for k, v in theta_0.items()], meta))
        for v in theta_0.values():
            write_tensor(f, v)

    write_atomic(out, sync, fill)


def ulps(x, y):
    """Largest distance between x and y in units in the last place of their float dtype (the
    bit patterns as sign-magnitude integers, mapped to a monotonic scale)."""
    bits = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
            torch.float64: torch.int64}[x.dtype]

    def key(t):
        i = t.contiguous().reshape(-1).view(bits).to(torch.int64)
        top = 1 << (8 * torch.empty((), dtype=bits).element_size() - 1)
        return torch.where(i < 0, -(i + top), i)

    return int((key(x) - key(y)).abs().max())


def compare(pa, pb):
    ha, sa = read_header(pa)
    hb, sb = read_header(pb)
    ha.pop("__metadata__", None)
    hb.pop("__metadata__", None)
    if ha.keys() != hb.keys():
        diff = sorted(ha.keys() ^ hb.keys())
        print(f"DIFFER: tensor names differ ({len(diff)}), e.g. {diff[:3]}")
        return 3
    fa, fb = open(pa, "rb"), open(pb, "rb")
    ma = mmap.mmap(fa.fileno(), 0, access=mmap.ACCESS_READ)
    mb = mmap.mmap(fb.fileno(), 0, access=mmap.ACCESS_READ)
    same, differ, worst, worst_key, meta_bad = 0, 0, 0, None, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for k in sorted(ha):
            ea, eb = ha[k], hb[k]
            if ea["dtype"] != eb["dtype"] or ea["shape"] != eb["shape"]:
                meta_bad.append(f"{k}: {ea['dtype']}{ea['shape']} vs {eb['dtype']}{eb['shape']}")
                continue
            (a0, a1), (b0, b1) = ea["data_offsets"], eb["data_offsets"]
            if a1 - a0 == 0 or ma[sa + a0:sa + a1] == mb[sb + b0:sb + b1]:
                same += 1
                continue
            differ += 1
            dt = DTYPES[ea["dtype"]]
            if dt.is_floating_point:
                n = (a1 - a0) // torch.empty((), dtype=dt).element_size()
                x = torch.frombuffer(ma, dtype=dt, count=n, offset=sa + a0)
                y = torch.frombuffer(mb, dtype=dt, count=n, offset=sb + b0)
                u = ulps(x, y)
                if u > worst:
                    worst, worst_key = u, k
    ma.close()
    mb.close()
    fa.close()
    fb.close()
    total = len(ha)
    msg = f"{same}/{total} tensors bit-identical"
    if differ:
        msg += f"; {differ} differ, largest difference {worst} ulp ({worst_key})"
    if meta_bad:
        msg += f"; {len(meta_bad)} with other dtype/shape, e.g. {meta_bad[0]}"
    print(msg)
    return 0 if same == total else 3


def usage():
    print("usage:" + __doc__.split("Usage:")[1].rstrip(), file=sys.stderr)
    return 2


def main(argv):
    if len(argv) == 3 and argv[0] == "--compare":
        return compare(argv[1], argv[2])
    alpha, sync, pos = None, True, []
    i = 0
    while i < len(argv):
        if argv[i] == "--alpha" and i + 1 < len(argv):
            alpha = float(argv[i + 1])
            i += 2
            continue
        if argv[i] == "--no-sync":
            sync = False
        elif argv[i].startswith("-"):
            return usage()
        else:
            pos.append(argv[i])
        i += 1
    if not pos or pos[0] not in ("weighted-sum", "add-difference"):
        return usage()
    method, files = pos[0], pos[1:]
    need = 3 if method == "weighted-sum" else 4
    if len(files) != need:
        return usage()
    if alpha is None:
        alpha = 0.5 if method == "weighted-sum" else 1.0
    merge(method, files[:-1], files[-1], alpha, sync)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
