"""Every command as a function (ckptkit.convert, split, ..., lora_*): the result equals the
command's --json for the same call, the files written are byte for byte the command's,
arguments are checked by name, missing inputs raise FileNotFoundError, bad files FormatError,
and a progress callback sees increasing byte counts.

Run by ctest with pytest (PYTHONPATH names the build's python/ folder, CKPTKIT_BIN the program)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_testlib as tl  # noqa: E402

import ckptkit  # noqa: E402

LORA_PREFIX = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return str(tmp_path_factory.mktemp("pymodule_commands"))


@pytest.fixture(scope="module")
def small(tmp):
    """A small safetensors file with float and integer tensors and metadata."""
    path = os.path.join(tmp, "small.safetensors")
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 33)).astype(np.float32)
    h = rng.standard_normal((7, 5)).astype(np.float16)
    ids = np.arange(77, dtype=np.int64)
    tl.write_safetensors(path, [("b.weight", "F32", w.shape, w.tobytes()),
                                ("a.half", "F16", h.shape, h.tobytes()),
                                ("ids", "I64", ids.shape, ids.tobytes())], {"k": "v"})
    return path


@pytest.fixture(scope="module")
def sd15(tmp):
    """A full-size SD 1.5 layout, sparse (holes but for the tiny tensors)."""
    path = os.path.join(tmp, "sd15.safetensors")
    tl.run("sample", "--layout", "sd15-ldm", "-o", path, "--sparse", "-q")
    return path


@pytest.fixture(scope="module")
def lora(tmp):
    """A two-module kohya LoRA for SD 1.x (rank 4)."""
    path = os.path.join(tmp, "lora.safetensors")
    rng = np.random.default_rng(9)
    rows = []
    for mod, (out, inp) in {"attn1_to_q": (320, 320), "ff_net_2": (320, 1280)}.items():
        up = (rng.standard_normal((out, 4)) * 0.01).astype(np.float16)
        down = (rng.standard_normal((4, inp)) * 0.01).astype(np.float16)
        rows += [(f"{LORA_PREFIX}{mod}.lora_up.weight", "F16", up.shape, up.tobytes()),
                 (f"{LORA_PREFIX}{mod}.lora_down.weight", "F16", down.shape, down.tobytes()),
                 (f"{LORA_PREFIX}{mod}.alpha", "F32", (), np.float32(2.0).tobytes())]
    tl.write_safetensors(path, rows, {"ss_network_module": "networks.lora"})
    return path


def without_seconds(v):
    if isinstance(v, dict):
        return {k: without_seconds(x) for k, x in v.items() if k != "seconds"}
    if isinstance(v, list):
        return [without_seconds(x) for x in v]
    return v


def data_ranges(path):
    """The (begin, end) ranges of a file that are not holes."""
    out = []
    with open(path, "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                begin = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, begin, os.SEEK_HOLE)
            out.append((begin, end))
            pos = end
    return out


def same_bytes(a, b):
    """Byte-for-byte equality; for sparse files, reading only where either has data."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    ranges = sorted(data_ranges(a) + data_ranges(b))
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for begin, end in ranges:
            fa.seek(begin)
            fb.seek(begin)
            while begin < end:
                n = min(end - begin, 1 << 24)
                if fa.read(n) != fb.read(n):
                    return False
                begin += n
    return True


# The program restarts itself with faster OpenBLAS kernels on a CPU OpenBLAS does not know
# (lora extract/resize, docs/lora.md); a Python process keeps the kernels it loaded. The SVDs'
# last bits depend on the kernels, so the program is compared running this process's.
CLI_ENV = dict(os.environ, OPENBLAS_CORETYPE=ckptkit._native.blas_core())


def cli_then_py(outputs, cli_args, call):
    """Runs `ckptkit CLI_ARGS --json`, moves its outputs aside, runs call() writing the same
    paths; asserts equal reports (timings aside) and byte-identical outputs."""
    for o in outputs:
        shutil.rmtree(o, ignore_errors=True) if os.path.isdir(o) else (
            os.path.exists(o) and os.unlink(o))
    p = tl.run(*cli_args, "--json", env=CLI_ENV)
    cli = json.loads(p.stdout)
    for o in outputs:
        os.rename(o, o + ".cli")
    py = call()
    assert without_seconds(py) == without_seconds(cli)
    for o in outputs:
        if os.path.isdir(o):
            for root, _, files in os.walk(o):
                for f in files:
                    mine = os.path.join(root, f)
                    theirs = os.path.join(o + ".cli", os.path.relpath(mine, o))
                    assert same_bytes(mine, theirs), mine
        else:
            assert same_bytes(o, o + ".cli"), o
    return py


def test_convert_equals_cli(small, tmp):
    out = os.path.join(tmp, "conv.safetensors")
    r = cli_then_py([out], ["convert", small, "-o", out, "--dtype", "bf16"],
                    lambda: ckptkit.convert(small, out, dtype="bf16"))
    assert r["tensors_converted"] == 2 and r["kept_not_float"] == {"I64": 1}


def test_convert_gguf_equals_cli(small, tmp):
    out = os.path.join(tmp, "conv.gguf")
    r = cli_then_py([out], ["convert", small, "-o", out, "--quant", "f16", "--target", "sdcpp"],
                    lambda: ckptkit.convert(small, out, quant="f16", target="sdcpp"))
    assert r["gguf"]["target"] == "sdcpp"


def test_convert_to_diffusers_and_back_equals_cli(sd15, tmp):
    folder = os.path.join(tmp, "sd15-diffusers")
    r = cli_then_py([folder], ["convert", sd15, "-o", folder, "--to", "diffusers"],
                    lambda: ckptkit.convert(sd15, folder, to="diffusers"))
    assert r["architecture"] and {o["part"] for o in r["outputs"]} >= {"unet", "vae"}
    back = os.path.join(tmp, "sd15-back.safetensors")
    cli_then_py([back], ["convert", folder, "-o", back],
                lambda: ckptkit.convert(folder, back))


def test_split_assemble_swap_prune_equal_cli(sd15, tmp):
    parts = os.path.join(tmp, "parts")
    r = cli_then_py([parts], ["split", sd15, "-o", parts, "--name", "m"],
                    lambda: ckptkit.split(sd15, parts, name="m"))
    by_part = {o["part"]: o["path"] for o in r["outputs"]}
    unet, vae = by_part["diffusion_model"], by_part["vae"]
    clip = by_part["clip_l"]
    out = os.path.join(tmp, "assembled.safetensors")
    cli_then_py([out], ["assemble", "--unet", unet, "--clip-l", clip, "--vae", vae, "-o", out],
                lambda: ckptkit.assemble(unet, out, clip_l=clip, vae=vae))
    out = os.path.join(tmp, "swapped.safetensors")
    cli_then_py([out], ["swap", sd15, "--vae", vae, "-o", out],
                lambda: ckptkit.swap(sd15, out, vae=vae))
    out = os.path.join(tmp, "pruned.safetensors")
    cli_then_py([out], ["prune", sd15, "-o", out, "--ema", "drop", "--dtype", "f16"],
                lambda: ckptkit.prune(sd15, out, ema="drop", dtype="f16"))


def test_merge_equals_cli(tmp):
    # Two CLIP-L text encoders (a known architecture; merge refuses unknown ones), one sparse.
    a, b = os.path.join(tmp, "clip-a.safetensors"), os.path.join(tmp, "clip-b.safetensors")
    ckptkit.sample("clip-l", a, sparse=True)
    ckptkit.sample("clip-l", b, seed=1)
    out = os.path.join(tmp, "merged.safetensors")
    r = cli_then_py([out], ["merge", a, b, "-o", out, "--alpha", "0.25"],
                    lambda: ckptkit.merge([a, b], out, alpha=0.25))
    assert r["architecture"] == "clip-l"


def test_meta_equals_cli(small, tmp):
    assert ckptkit.meta(small) == json.loads(tl.run("meta", small, "--json").stdout)
    out = os.path.join(tmp, "meta.safetensors")
    r = cli_then_py([out], ["meta", small, "--set", "title=x y", "--delete", "k", "-o", out],
                    lambda: ckptkit.meta(small, set={"title": "x y"}, delete=["k"], output=out))
    assert r == {"title": "x y"}


def test_sample_equals_cli(tmp):
    out = os.path.join(tmp, "sample.safetensors")
    cli_then_py([out], ["sample", "--layout", "sd15-ldm", "-o", out, "--sparse", "--seed", "3"],
                lambda: ckptkit.sample("sd15-ldm", out, sparse=True, seed=3))
    assert ckptkit.sample(list=True) == json.loads(tl.run("sample", "--list", "--json").stdout)


def test_hash_verify_equal_cli(small):
    cli = json.loads(tl.run("hash", small, "--algo", "all", "--json").stdout)
    assert ckptkit.hash(small, algo="all") == cli[0]
    assert ckptkit.hash([small, small], algo="all") == cli * 2
    cli = json.loads(tl.run("verify", small, "--json", check=False).stdout)
    assert without_seconds(ckptkit.verify(small)) == without_seconds(cli[0])


def test_lora_ops_equal_cli(sd15, lora, tmp):
    out = os.path.join(tmp, "peft.safetensors")
    cli_then_py([out], ["lora", "convert", lora, "--to", "peft", "--base", sd15, "-o", out],
                lambda: ckptkit.lora_convert(lora, out, to="peft", base=sd15))
    out = os.path.join(tmp, "resized.safetensors")
    cli_then_py([out], ["lora", "resize", lora, "--rank", "2", "-o", out],
                lambda: ckptkit.lora_resize(lora, out, rank=2))
    out = os.path.join(tmp, "baked.safetensors")
    cli_then_py([out], ["lora", "bake", sd15, lora + ":0.5", "-o", out],
                lambda: ckptkit.lora_bake(sd15, [(lora, 0.5)], out))


def test_wrong_types_name_the_parameter(small, tmp):
    out = os.path.join(tmp, "never.safetensors")
    cases = [
        (lambda: ckptkit.convert(small, out, dtype=16), "dtype"),
        (lambda: ckptkit.convert(small, out, force="yes"), "force"),
        (lambda: ckptkit.convert(small, out, threads=1.5), "threads"),
        (lambda: ckptkit.convert(small, out, progress=3), "progress"),
        (lambda: ckptkit.convert(12, out), "input"),
        (lambda: ckptkit.split(small, None or 5), "output"),
        (lambda: ckptkit.merge([small, small], out, alpha=[1, 2]), "alpha"),
        (lambda: ckptkit.hash(small, jobs="2"), "jobs"),
        (lambda: ckptkit.lora_resize(small, out, rank="4"), "rank"),
        (lambda: ckptkit.lora_bake(small, [(small, "x")], out), "loras"),
        (lambda: ckptkit.meta(small, set=3, output=out), "set"),
    ]
    for call, name in cases:
        with pytest.raises(TypeError, match=rf"\b{name} must be"):
            call()
    assert not os.path.exists(out)


def test_missing_input_is_file_not_found(tmp):
    missing = os.path.join(tmp, "nope.safetensors")
    out = os.path.join(tmp, "never.safetensors")
    for call in (lambda: ckptkit.convert(missing, out), lambda: ckptkit.hash(missing),
                 lambda: ckptkit.prune(missing, out), lambda: ckptkit.lora_resize(missing, out,
                                                                                   rank=2)):
        with pytest.raises(FileNotFoundError):
            call()
    assert not os.path.exists(out)


def test_bad_file_is_format_error_with_path_and_offset(small, tmp):
    bad = os.path.join(tmp, "truncated.safetensors")
    with open(small, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[:-10])
    out = os.path.join(tmp, "never.safetensors")
    with pytest.raises(ckptkit.FormatError) as e:
        ckptkit.convert(bad, out)
    assert e.value.path == bad and isinstance(e.value.offset, int)
    assert isinstance(e.value, ValueError)
    assert not os.path.exists(out)


def test_bad_value_raises_error_and_writes_nothing(small, tmp):
    out = os.path.join(tmp, "never.safetensors")
    with pytest.raises(ckptkit.Error, match="f13"):
        ckptkit.convert(small, out, dtype="f13")
    assert not os.path.exists(out)


def test_progress_callback_sees_increasing_counts(sd15, tmp):
    out = os.path.join(tmp, "progress.safetensors")
    seen = []
    ckptkit.convert(sd15, out, dtype="f32", max_memory="8M", threads=1, force=True,
                    progress=lambda done, total: seen.append((done, total)))
    assert seen, "never called"
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and len(set(dones)) == len(dones)
    assert seen[-1][0] == seen[-1][1] > 0


def test_hash_and_verify_report_progress(tmp):
    path = os.path.join(tmp, "clip-progress.safetensors")
    ckptkit.sample("clip-l", path, seed=2, force=True)
    seen = []
    ckptkit.hash(path, algo="blake3", progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (os.path.getsize(path), os.path.getsize(path))
    seen.clear()
    ckptkit.verify(path, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_dangerous_input_raises_with_the_scan_report(tmp):
    import torch_fixtures as tf
    canaries = os.path.join(tmp, "canaries")
    os.makedirs(canaries, exist_ok=True)
    cases = [c for c in tf.malicious_corpus(os.path.join(tmp, "malicious"), canaries)
             if c.verdict == "dangerous" and not c.malformed]
    assert cases
    out = os.path.join(tmp, "never.safetensors")
    for c in cases:
        with pytest.raises(ckptkit.DangerousPickleError) as e:
            ckptkit.convert(c.path, out)
        assert e.value.report["verdict"] == "dangerous" and e.value.path == c.path, c.name
        assert not os.path.exists(out), c.name
        try:
            ckptkit.convert(c.path, out, allow_dangerous=True, force=True)
        except ckptkit.Error:
            pass  # no state dict to take: refused, never run
        if os.path.exists(out):
            os.unlink(out)
    assert os.listdir(canaries) == [], "a payload ran"


def test_library_functions_equal_cli(sd15, tmp):
    import signal
    models = os.path.join(tmp, "library-models")
    os.makedirs(os.path.join(models, "loras"), exist_ok=True)
    ckpt = os.path.join(models, "sd15.safetensors")
    tl.run("sample", "--layout", "sd15-ldm", "--sparse", "-o", ckpt, "-q")  # not a 4 GB copy
    lora = os.path.join(models, "loras", "a.safetensors")
    tl.run("sample", "--layout", "lora-kohya-sd15", "--sparse", "-o", lora, "-q")
    shutil.copy(lora, os.path.join(models, "loras", "a copy.safetensors"))  # a duplicate
    with open(os.path.join(models, "broken.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    db_py, db_cli = os.path.join(tmp, "py.sqlite"), os.path.join(tmp, "cli.sqlite")
    handler = signal.getsignal(signal.SIGINT)
    summary = ckptkit.library_index(models, db=db_py)
    # In-process the caller's Ctrl-C handler is left alone (the command installs its own).
    assert signal.getsignal(signal.SIGINT) is handler
    cli = json.loads(tl.run("library", "index", models, "--db", db_cli, "--json",
                            check=False).stdout)
    drop = ("db", "header_seconds", "hash_seconds")
    assert {k: v for k, v in summary.items() if k not in drop} == \
        {k: v for k, v in cli.items() if k not in drop}
    assert summary["found"] == 4 and summary["errors"] == 1
    assert any("broken.safetensors" in m for m in summary["error_messages"])

    def no_ids(v):  # row ids follow the order the index's threads finished in
        if isinstance(v, dict):
            return {k: no_ids(x) for k, x in v.items() if k not in ("id", "model_id")}
        if isinstance(v, list):
            return [no_ids(x) for x in v]
        return v

    def same(py, *args):
        out = json.loads(tl.run("library", *args, "--db", db_cli, "--json").stdout)
        assert json.dumps(no_ids(py), sort_keys=True) == json.dumps(no_ids(out), sort_keys=True)
        return out

    listed = same(ckptkit.library_list(db=db_py, kind="LoRA", sort="path", desc=True),
                  "list", "--kind", "LoRA", "--sort", "path", "--desc")
    assert [m["name"] for m in listed["models"]] == ["a.safetensors", "a copy.safetensors"]
    dupes = same(ckptkit.library_dupes(db=db_py), "dupes")
    assert len(dupes["files"]) == 1
    shown = ckptkit.library_show(ckpt, db=db_py)
    assert shown["model"]["kind"] == "checkpoint"
    assert shown["hashes"]["sha256"] == ckptkit.hash(ckpt)["hashes"]["sha256"]
    loras = same(ckptkit.library_loras(sd15, db=db_py), "loras", "--for", sd15)
    assert len(loras["loras"]) == 2
    with pytest.raises(ckptkit.Error) as e:
        ckptkit.library_show(sd15, db=db_py)  # the original, outside the indexed folder
    assert "not in the library" in str(e.value)
    with pytest.raises(TypeError, match="deep"):
        ckptkit.library_index(models, db=db_py, deep="yes")
    with pytest.raises(FileNotFoundError):
        ckptkit.library_index(os.path.join(tmp, "no-such-folder"), db=db_py)
