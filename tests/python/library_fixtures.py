"""A models folder for the model-library tests (test_library*.py): sampled checkpoints and parts
(sparse: headers only, data left as holes), LoRAs, a copy of one (a duplicate), a LoRA whose
title is an HTML script, a clean torch .ckpt and a malicious pickle (never unpickled here), a
diffusers folder, a broken symbolic link and a file that is not a model."""
import json
import os
import tempfile
import shutil

import torch_fixtures as tf
from ckpt_testlib import run, write_safetensors

XSS_TITLE = "<script>alert(1)</script>"
XSS_TRIGGER = "<img src=x onerror=alert(2)>, zorblax"


def sample(layout, path, sparse=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    args = ["sample", "--layout", layout, "-o", path, "-q", "--no-sync"]
    if sparse:
        args.append("--sparse")
    run(*args)
    return path


def make_models(root):
    """Writes the folder; returns {name: path} of the files that must index without error."""
    files = {}
    files["sd15"] = sample("sd15-ldm", os.path.join(root, "checkpoints", "sd15.safetensors"))
    files["vae"] = sample("flux1-vae", os.path.join(root, "vae", "flux-vae.safetensors"))
    files["lora_sd15"] = sample("lora-kohya-sd15", os.path.join(root, "loras", "kohya-sd15.safetensors"),
                                sparse=False)
    files["lora_sdxl"] = sample("lora-kohya-sdxl", os.path.join(root, "loras", "kohya-sdxl.safetensors"))
    files["lora_copy"] = os.path.join(root, "loras", "copies", "kohya-sd15 (1).safetensors")
    os.makedirs(os.path.dirname(files["lora_copy"]))
    shutil.copyfile(files["lora_sd15"], files["lora_copy"])
    files["xss"] = os.path.join(root, "loras", "xss.safetensors")
    run("meta", files["lora_sd15"], "--set", "modelspec.title=" + XSS_TITLE,
        "--set", "modelspec.trigger_phrase=" + XSS_TRIGGER, "-o", files["xss"], "-q", "--no-sync")
    os.makedirs(os.path.join(root, "unsafe"))
    files["clean_ckpt"] = tf.save(tf.small_state_dict(), os.path.join(root, "unsafe", "clean.ckpt"))
    evil = [c for c in tf.malicious_corpus(os.path.join(root, ".corpus"), os.path.join(root, ".canary"))
            if c.name == "os-system-p2"][0]
    files["evil"] = os.path.join(root, "unsafe", "evil.pt")
    shutil.copyfile(evil.path, files["evil"])
    shutil.rmtree(os.path.join(root, ".corpus"))
    # A diffusers folder (model_index.json and one weight file per part): one entry.
    d = os.path.join(root, "diffusers", "tiny-sd15")
    for part, cls in (("vae", "AutoencoderKL"), ("unet", "UNet2DConditionModel")):
        os.makedirs(os.path.join(d, part))
        write_safetensors(os.path.join(d, part, "diffusion_pytorch_model.safetensors"),
                          [("w", "F32", [2, 2], b"\0" * 16)])
        with open(os.path.join(d, part, "config.json"), "w") as f:
            json.dump({"_class_name": cls}, f)
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
                   "vae": ["diffusers", "AutoencoderKL"],
                   "unet": ["diffusers", "UNet2DConditionModel"]}, f)
    files["diffusers"] = d
    # Problems that must be recorded, not stop the index.
    os.symlink(os.path.join(root, "nowhere.safetensors"), os.path.join(root, "loras", "broken.safetensors"))
    with open(os.path.join(root, "checkpoints", "notes.bin"), "wb") as f:
        f.write(b"these are not weights\n" * 10)
    return files


def shared_tempdir():
    """A test class's shared folder: a TemporaryDirectory under $CKPTKIT_TEST_TMP (made if
    missing), and its real path (the index stores real paths)."""
    root = os.environ.get("CKPTKIT_TEST_TMP")
    if root:
        os.makedirs(root, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(dir=root)
    return tmp, os.path.realpath(tmp.name)
