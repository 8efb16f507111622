"""`convert MODEL -o DIR --to diffusers` and `convert DIR -o MODEL.safetensors`, against the
published layouts (data/layouts: the diffusers SD1.5 unet/text_encoder/vae, the SDXL diffusers
UNet, HF-named CLIP-G) and PyTorch:

* every part file holds exactly the published names, dtypes and shapes, metadata format: pt;
* every tensor's bytes come from the right single-file tensor (each input tensor starts with
  its own random bytes, so a wrong rename is seen), checked on a hand-written list of pairs
  taken from the rules in docs/models.md;
* single -> diffusers -> single gives back the whole file byte for byte (names, tensor bytes,
  metadata; what the folder cannot hold travels in ckptkit_extra.safetensors);
* each config.json agrees with the weight shapes, on an SD1.5 file and a 9-channel (inpaint)
  one, and on SDXL;
* the VAE's mid-block attention: the LDM 1x1 convolution and the diffusers linear layer give
  the same result in PyTorch, and the bytes are torch's own reshape;
* bad input: exit 2, a message naming the path and what was expected, nothing written.

The inputs are sparse files of the published layouts written here from the format
specification: holes except the first bytes of every tensor and a few whole tensors."""
import json
import os
import signal
import subprocess
import unittest

import numpy as np

from ckpt_testlib import (BIN, TempDirTest, layout_table, read_safetensors_header, run,
                          write_sparse_safetensors)

PREFIX = 64  # random bytes written at the start of every tensor
VAE_ATTN = [f"first_stage_model.{side}.mid.attn_1.{m}.{leaf}"
            for side in ("encoder", "decoder") for m in ("q", "k", "v", "proj_out")
            for leaf in ("weight", "bias")]
POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"

# Single-file name -> diffusers part and name, from the published conversion rules (the
# diffusers and ComfyUI converters, docs/models.md), written out by hand.
SD15_PAIRS = [
    ("model.diffusion_model.input_blocks.0.0.weight", "unet", "conv_in.weight"),
    ("model.diffusion_model.time_embed.2.bias", "unet", "time_embedding.linear_2.bias"),
    ("model.diffusion_model.input_blocks.4.0.skip_connection.weight", "unet",
     "down_blocks.1.resnets.0.conv_shortcut.weight"),
    ("model.diffusion_model.input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight", "unet",
     "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"),
    ("model.diffusion_model.input_blocks.9.0.op.weight", "unet",
     "down_blocks.2.downsamplers.0.conv.weight"),
    ("model.diffusion_model.middle_block.2.emb_layers.1.weight", "unet",
     "mid_block.resnets.1.time_emb_proj.weight"),
    ("model.diffusion_model.output_blocks.2.1.conv.weight", "unet",
     "up_blocks.0.upsamplers.0.conv.weight"),
    ("model.diffusion_model.output_blocks.5.2.conv.bias", "unet",
     "up_blocks.1.upsamplers.0.conv.bias"),
    ("model.diffusion_model.output_blocks.11.1.proj_out.weight", "unet",
     "up_blocks.3.attentions.2.proj_out.weight"),
    ("model.diffusion_model.out.0.weight", "unet", "conv_norm_out.weight"),
    ("first_stage_model.decoder.up.0.block.0.nin_shortcut.weight", "vae",
     "decoder.up_blocks.3.resnets.0.conv_shortcut.weight"),
    ("first_stage_model.decoder.up.3.upsample.conv.weight", "vae",
     "decoder.up_blocks.0.upsamplers.0.conv.weight"),
    ("first_stage_model.encoder.down.2.downsample.conv.bias", "vae",
     "encoder.down_blocks.2.downsamplers.0.conv.bias"),
    ("first_stage_model.encoder.mid.block_2.norm1.weight", "vae",
     "encoder.mid_block.resnets.1.norm1.weight"),
    ("first_stage_model.decoder.mid.attn_1.proj_out.weight", "vae",
     "decoder.mid_block.attentions.0.to_out.0.weight"),
    ("first_stage_model.encoder.mid.attn_1.norm.bias", "vae",
     "encoder.mid_block.attentions.0.group_norm.bias"),
    ("first_stage_model.decoder.norm_out.weight", "vae", "decoder.conv_norm_out.weight"),
    ("first_stage_model.post_quant_conv.weight", "vae", "post_quant_conv.weight"),
    ("cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight", "text_encoder",
     "text_model.encoder.layers.11.mlp.fc2.weight"),
]
SD15_PARTS = {
    "unet": ("unet/diffusion_pytorch_model.safetensors", "sd15-diffusers-unet"),
    "text_encoder": ("text_encoder/model.safetensors", "sd15-diffusers-text_encoder"),
    "vae": ("vae/diffusion_pytorch_model.safetensors", "sd15-diffusers-vae"),
}
EXTRA = "ckptkit_extra.safetensors"


def itemsize(dtype):
    return {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}[dtype]


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    return n * itemsize(dtype)


def make_input(path, rows, seed, metadata, full=()):
    """A sparse file of `rows` whose every tensor starts with its own random bytes; the
    tensors in `full` get random F32 values throughout (returned)."""
    rng = np.random.default_rng(seed)
    data, values = {}, {}
    for name, dtype, shape in rows:
        if name in full:
            v = rng.normal(0, 0.05, shape).astype("<f4")
            values[name] = v
            data[name] = v.tobytes()
        elif name.endswith("position_ids"):
            data[name] = np.arange(shape[-1], dtype="<i8").reshape(shape).tobytes()
        else:
            data[name] = rng.bytes(min(PREFIX, nbytes(dtype, shape)))
    write_sparse_safetensors(path, rows, data, metadata)
    return values


def entries(path):
    """{name: (dtype, shape, absolute begin, size)} and the metadata of a safetensors file."""
    h = read_safetensors_header(path)
    base = 8 + h["n"]
    return ({n: (d, s, base + b, e - b) for n, d, s, (b, e) in h["entries"]}, h["metadata"])


def read_at(path, offset, size):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def prefix_of(path, table, name):
    d, s, b, size = table[name]
    return read_at(path, b, min(PREFIX, size))


def data_segments(path):
    """[(begin, end)] of the ranges of `path` that are not holes (SEEK_DATA/SEEK_HOLE; a file
    system without them reports one range, the whole file). Holes read as zeros, so two sparse
    files are equal when they are equal on the union of their data ranges."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, at = os.fstat(fd).st_size, 0
        while at < size:
            try:
                begin = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, begin, os.SEEK_HOLE)
            out.append((begin, end))
            at = end
    finally:
        os.close(fd)
    return out


def window(segments, begin, size):
    """`segments` cut to [begin, begin + size), relative to begin."""
    return [(max(b, begin) - begin, min(e, begin + size) - begin)
            for b, e in segments if e > begin and b < begin + size]


def equal_ranges(fa, oa, fb, ob, ranges, chunk=1 << 24):
    """True when the bytes at oa + r and ob + r agree for every range r."""
    for b, e in sorted(ranges):
        for at in range(b, e, chunk):
            k = min(chunk, e - at)
            fa.seek(oa + at)
            fb.seek(ob + at)
            if fa.read(k) != fb.read(k):
                return False
    return True


def same_file(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return equal_ranges(fa, 0, fb, 0, data_segments(a) + data_segments(b))


def same_tensors(test, a, b):
    """Same names, dtypes, shapes, metadata and every tensor's bytes (the tensors may sit in
    another order)."""
    ta, ma = entries(a)
    tb, mb = entries(b)
    test.assertEqual({n: v[:2] for n, v in ta.items()}, {n: v[:2] for n, v in tb.items()})
    test.assertEqual(ma, mb)
    sa, sb = data_segments(a), data_segments(b)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for n, (_, _, oa, size) in ta.items():
            ob = tb[n][2]
            ranges = window(sa, oa, size) + window(sb, ob, size)
            test.assertTrue(equal_ranges(fa, oa, fb, ob, ranges), f"{n}: bytes differ")


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def listing(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


class Sd15(TempDirTest):
    def setUp(self):
        super().setUp()
        self.src = self.path("sd15.safetensors")
        # v1-5-pruned: the model and its EMA copy, which a diffusers folder has no place for.
        self.values = make_input(self.src, layout_table("sd15-ldm") + layout_table("sd15-ldm-ema"), 15,
                                 {"modelspec.title": "unit sd15", "format": "pt"}, VAE_ATTN)
        self.out = self.path("sd15-diffusers")
        p = run("convert", self.src, "-o", self.out, "--to", "diffusers")
        self.assertIn("kept in ckptkit_extra.safetensors", p.stderr)
        self.assertIn("tokenizer", p.stderr)

    def test_parts_have_the_published_names_dtypes_and_shapes(self):
        self.assertEqual(listing(self.out), sorted([
            EXTRA, "model_index.json", "scheduler", "scheduler/scheduler_config.json",
            "text_encoder", "text_encoder/config.json", "text_encoder/model.safetensors",
            "unet", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "vae", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]))
        for part, (rel, layout) in SD15_PARTS.items():
            table, meta = entries(os.path.join(self.out, rel))
            got = {n: (d, s) for n, (d, s, _, _) in table.items()}
            want = {n: (d, s) for n, d, s in layout_table(layout)}
            self.assertEqual(set(got) - set(want), set(), part)
            self.assertEqual(set(want) - set(got), set(), part)
            self.assertEqual(got, want, part)
            self.assertEqual(meta, {"format": "pt"}, part)

    def test_each_tensor_holds_the_bytes_of_its_single_file_tensor(self):
        src, _ = entries(self.src)
        parts = {p: entries(os.path.join(self.out, rel))[0] for p, (rel, _) in SD15_PARTS.items()}
        for ldm, part, diff in SD15_PAIRS:
            self.assertEqual(
                prefix_of(os.path.join(self.out, SD15_PARTS[part][0]), parts[part], diff),
                prefix_of(self.src, src, ldm), f"{ldm} -> {part}/{diff}")
        # Every tensor comes from exactly one input tensor (the prefixes are all different).
        by_prefix = {prefix_of(self.src, src, n): n for n in src}
        sources = []
        for part, (rel, _) in SD15_PARTS.items():
            path = os.path.join(self.out, rel)
            for n in parts[part]:
                sources.append(by_prefix.get(prefix_of(path, parts[part], n)))
        self.assertNotIn(None, sources)
        self.assertEqual(len(sources), len(set(sources)))
        # The rest (schedule buffers, EMA counters) is in the extra file under its own name.
        extra, meta = entries(os.path.join(self.out, EXTRA))
        self.assertEqual(set(extra) | set(sources), set(src))
        self.assertIn("betas", extra)
        self.assertIn("model_ema.num_updates", extra)
        self.assertEqual(len([n for n in extra if n.startswith("model_ema.diffusion_model")]), 686)
        self.assertEqual(meta.get("modelspec.title"), "unit sd15")

    def test_round_trip_is_byte_identical(self):
        back = self.path("back.safetensors")
        p = run("convert", self.out, "-o", back)
        self.assertIn("restored", p.stderr)
        a, ma = entries(self.src)
        b, mb = entries(back)
        self.assertEqual({n: v[:2] for n, v in a.items()}, {n: v[:2] for n, v in b.items()})
        self.assertEqual(ma, mb)
        for n in VAE_ATTN + ["betas", POSITION_IDS]:
            self.assertEqual(read_at(self.src, a[n][2], a[n][3]), read_at(back, b[n][2], b[n][3]), n)
        same_tensors(self, self.src, back)
        # And diffusers -> single -> diffusers gives the same folder.
        again = self.path("again")
        run("convert", back, "-o", again, "--to", "diffusers")
        self.assertEqual(listing(again), listing(self.out))
        for rel in listing(self.out):
            if os.path.isfile(os.path.join(self.out, rel)):
                self.assertTrue(same_file(os.path.join(self.out, rel), os.path.join(again, rel)), rel)

    def test_configs_agree_with_the_weights(self):
        check_configs(self, self.out, in_channels=4)
        index = load_json(os.path.join(self.out, "model_index.json"))
        self.assertEqual(index["_class_name"], "StableDiffusionPipeline")
        self.assertEqual(index["unet"], ["diffusers", "UNet2DConditionModel"])
        self.assertEqual(index["text_encoder"], ["transformers", "CLIPTextModel"])
        self.assertEqual(index["vae"], ["diffusers", "AutoencoderKL"])
        self.assertEqual(index["tokenizer"], [None, None])
        sched = load_json(os.path.join(self.out, "scheduler/scheduler_config.json"))
        self.assertEqual(index["scheduler"], ["diffusers", sched["_class_name"]])
        # The DDPM schedule SD1 was trained on.
        self.assertEqual((sched["beta_schedule"], sched["beta_start"], sched["beta_end"],
                          sched["num_train_timesteps"]), ("scaled_linear", 0.00085, 0.012, 1000))
        vae = load_json(os.path.join(self.out, "vae/config.json"))
        self.assertEqual(vae["scaling_factor"], 0.18215)
        doc = json.loads(run("inspect", self.out, "--json").stdout)
        self.assertEqual(doc["architecture"], "sd1")

    def test_vae_attention_is_the_same_operator_in_pytorch(self):
        import torch
        import torch.nn.functional as F
        table, _ = entries(os.path.join(self.out, SD15_PARTS["vae"][0]))
        path = os.path.join(self.out, SD15_PARTS["vae"][0])
        x = torch.randn(2, 512, 5, 3, generator=torch.Generator().manual_seed(3))
        for side in ("encoder", "decoder"):
            for ldm, diff in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
                w4 = torch.from_numpy(self.values[f"first_stage_model.{side}.mid.attn_1.{ldm}.weight"])
                b = torch.from_numpy(self.values[f"first_stage_model.{side}.mid.attn_1.{ldm}.bias"])
                name = f"{side}.mid_block.attentions.0.{diff}"
                dt, shape, off, size = table[name + ".weight"]
                self.assertEqual((dt, shape), ("F32", [512, 512]))
                w2 = torch.from_numpy(np.frombuffer(read_at(path, off, size), "<f4").reshape(shape).copy())
                dt, shape, off, size = table[name + ".bias"]
                self.assertEqual(shape, [512])
                b2 = torch.from_numpy(np.frombuffer(read_at(path, off, size), "<f4").copy())
                self.assertTrue(torch.equal(w2, w4[:, :, 0, 0]), name)  # diffusers' conversion
                self.assertTrue(torch.equal(w2.reshape(512, 512, 1, 1), w4), name)  # and back
                self.assertTrue(torch.equal(b2, b), name)
                conv = F.conv2d(x, w4, b)
                lin = F.linear(x.permute(0, 2, 3, 1), w2, b2).permute(0, 3, 1, 2)
                torch.testing.assert_close(conv, lin, rtol=1e-5, atol=1e-5)


def check_configs(test, out, in_channels):
    """Every dimension a loader reads from the configs, recomputed from the weight shapes."""
    u, _ = entries(os.path.join(out, "unet/diffusion_pytorch_model.safetensors"))
    cfg = load_json(os.path.join(out, "unet/config.json"))
    test.assertEqual(cfg["_class_name"], "UNet2DConditionModel")
    test.assertEqual(cfg["in_channels"], u["conv_in.weight"][1][1])
    test.assertEqual(cfg["in_channels"], in_channels)
    test.assertEqual(cfg["out_channels"], u["conv_out.weight"][1][0])
    levels = len(cfg["block_out_channels"])
    test.assertEqual(levels, len({n.split(".")[1] for n in u if n.startswith("down_blocks.")}))
    for i, ch in enumerate(cfg["block_out_channels"]):
        test.assertEqual(ch, u[f"down_blocks.{i}.resnets.0.conv1.weight"][1][0])
        has_attn = f"down_blocks.{i}.attentions.0.proj_in.weight" in u
        test.assertEqual(cfg["down_block_types"][i],
                         "CrossAttnDownBlock2D" if has_attn else "DownBlock2D")
        up_attn = f"up_blocks.{i}.attentions.0.proj_in.weight" in u
        test.assertEqual(cfg["up_block_types"][i], "CrossAttnUpBlock2D" if up_attn else "UpBlock2D")
        depth = len({n.split(".")[5] for n in u
                     if n.startswith(f"down_blocks.{i}.attentions.0.transformer_blocks.")})
        per_level = cfg.get("transformer_layers_per_block", 1)
        if isinstance(per_level, int):
            per_level = [per_level] * levels
        if has_attn:
            test.assertEqual(per_level[i], depth)
    # diffusers gives the mid block the last level's depth.
    mid = len({n.split(".")[4] for n in u
               if n.startswith("mid_block.attentions.0.transformer_blocks.")})
    test.assertEqual(per_level[-1], mid)
    test.assertEqual(cfg["layers_per_block"],
                     len({n.split(".")[3] for n in u if n.startswith("down_blocks.0.resnets.")}))
    to_k = {s[1] for n, (d, s, _, _) in u.items() if n.endswith("attn2.to_k.weight")}
    test.assertEqual(to_k, {cfg["cross_attention_dim"]})
    proj_rank = {len(s) for n, (d, s, _, _) in u.items() if n.endswith("proj_in.weight")}
    test.assertEqual(proj_rank, {2 if cfg["use_linear_projection"] else 4})
    if "add_embedding.linear_1.weight" in u:
        test.assertEqual(cfg["projection_class_embeddings_input_dim"],
                         u["add_embedding.linear_1.weight"][1][1])
    else:
        test.assertNotIn("addition_embed_type", cfg)

    v, _ = entries(os.path.join(out, "vae/diffusion_pytorch_model.safetensors"))
    cfg = load_json(os.path.join(out, "vae/config.json"))
    test.assertEqual(cfg["in_channels"], v["encoder.conv_in.weight"][1][1])
    test.assertEqual(cfg["out_channels"], v["decoder.conv_out.weight"][1][0])
    test.assertEqual(cfg["latent_channels"], v["decoder.conv_in.weight"][1][1])
    test.assertEqual(cfg["latent_channels"] * 2, v["encoder.conv_out.weight"][1][0])
    for i, ch in enumerate(cfg["block_out_channels"]):
        test.assertEqual(ch, v[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"][1][0])
    test.assertEqual(len(cfg["block_out_channels"]),
                     len({n.split(".")[2] for n in v if n.startswith("decoder.up_blocks.")}))
    test.assertEqual(cfg["layers_per_block"] + 1,
                     len({n.split(".")[4] for n in v if n.startswith("decoder.up_blocks.0.resnets.")}))

    for te in ("text_encoder", "text_encoder_2"):
        if not os.path.isdir(os.path.join(out, te)):
            continue
        t, _ = entries(os.path.join(out, te, "model.safetensors"))
        cfg = load_json(os.path.join(out, te, "config.json"))
        vocab, hidden = t["text_model.embeddings.token_embedding.weight"][1]
        test.assertEqual((cfg["vocab_size"], cfg["hidden_size"]), (vocab, hidden))
        test.assertEqual(cfg["max_position_embeddings"],
                         t["text_model.embeddings.position_embedding.weight"][1][0])
        test.assertEqual(cfg["num_hidden_layers"],
                         len({n.split(".")[3] for n in t if n.startswith("text_model.encoder.layers.")}))
        test.assertEqual(cfg["intermediate_size"],
                         t["text_model.encoder.layers.0.mlp.fc1.weight"][1][0])
        test.assertEqual(hidden % cfg["num_attention_heads"], 0)
        test.assertEqual(hidden // cfg["num_attention_heads"], 64)
        if "text_projection.weight" in t:
            test.assertEqual(cfg["architectures"], ["CLIPTextModelWithProjection"])
            test.assertEqual(cfg["projection_dim"], t["text_projection.weight"][1][0])
        else:
            test.assertEqual(cfg["architectures"], ["CLIPTextModel"])


class Inpaint(TempDirTest):
    def test_a_nine_channel_unet_gives_in_channels_9_and_the_inpaint_pipeline(self):
        rows = [(n, d, [320, 9, 3, 3] if n == "model.diffusion_model.input_blocks.0.0.weight" else s)
                for n, d, s in layout_table("sd15-ldm")]
        src = self.path("inpaint.safetensors")
        make_input(src, rows, 9, {"format": "pt"})
        out = self.path("inpaint")
        run("convert", src, "-o", out, "--to", "diffusers")
        check_configs(self, out, in_channels=9)
        index = load_json(os.path.join(out, "model_index.json"))
        self.assertEqual(index["_class_name"], "StableDiffusionInpaintPipeline")
        back = self.path("back.safetensors")
        run("convert", out, "-o", back)
        same_tensors(self, src, back)


class Sdxl(TempDirTest):
    def test_sdxl_base(self):
        src = self.path("sdxl.safetensors")
        make_input(src, layout_table("sdxl-sgm"), 20, {"modelspec.title": "unit sdxl"})
        out = self.path("sdxl")
        run("convert", src, "-o", out, "--to", "diffusers")
        table, meta = entries(os.path.join(out, "unet/diffusion_pytorch_model.safetensors"))
        self.assertEqual({n: (d, s) for n, (d, s, _, _) in table.items()},
                         {n: (d, s) for n, d, s in layout_table("sdxl-diffusers-unet")})
        self.assertEqual(meta, {"format": "pt"})
        # text_encoder_2 in Hugging Face names: the published CLIP-G table (the HF-named file).
        table, _ = entries(os.path.join(out, "text_encoder_2/model.safetensors"))
        self.assertEqual({n: (d, s) for n, (d, s, _, _) in table.items()},
                         {n: (d, s) for n, d, s in layout_table("clip-g")})
        table, _ = entries(os.path.join(out, "text_encoder/model.safetensors"))
        self.assertEqual({n: s for n, (d, s, _, _) in table.items()},
                         {n: s for n, d, s in layout_table("sd15-diffusers-text_encoder")})
        check_configs(self, out, in_channels=4)
        cfg = load_json(os.path.join(out, "unet/config.json"))
        self.assertEqual(cfg["transformer_layers_per_block"], [1, 2, 10])
        self.assertEqual(cfg["cross_attention_dim"], 2048)
        self.assertEqual(cfg["addition_embed_type"], "text_time")
        index = load_json(os.path.join(out, "model_index.json"))
        self.assertEqual(index["_class_name"], "StableDiffusionXLPipeline")
        self.assertEqual(json.loads(run("inspect", out, "--json").stdout)["architecture"],
                         "sdxl-base")
        self.assertEqual(index["text_encoder_2"], ["transformers", "CLIPTextModelWithProjection"])
        # logit_scale has no place in CLIPTextModelWithProjection: it travels in the extra file.
        extra, _ = entries(os.path.join(out, EXTRA))
        self.assertEqual(set(extra), {"conditioner.embedders.1.model.logit_scale"})
        back = self.path("back.safetensors")
        run("convert", out, "-o", back)
        same_tensors(self, src, back)

    def test_a_file_in_the_reference_order_comes_back_as_the_same_file(self):
        src = self.path("sample.safetensors")
        run("sample", "--layout", "sdxl-sgm", "--sparse", "-o", src)
        out = self.path("folder")
        run("convert", src, "-o", out, "--to", "diffusers")
        back = self.path("back.safetensors")
        run("convert", out, "-o", back)
        self.assertTrue(same_file(src, back))


class Sd2(TempDirTest):
    IN_PROJ = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
    IN_PROJ_B = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias"

    def convert(self, metadata, *flags):
        src = self.path("sd2.safetensors")
        values = make_input(src, layout_table("sd2-ldm"), 2, metadata, [self.IN_PROJ, self.IN_PROJ_B])
        out = self.path("sd2")
        p = run("convert", src, "-o", out, "--to", "diffusers", *flags)
        return src, out, values, p

    def test_sd2_keeps_its_last_text_layer_in_the_extra_file(self):
        src, out, values, p = self.convert({"modelspec.title": "unit sd2"})
        self.assertIn("v_prediction assumed", p.stderr)
        te, _ = entries(os.path.join(out, "text_encoder/model.safetensors"))
        layers = {int(n.split(".")[3]) for n in te if n.startswith("text_model.encoder.layers.")}
        self.assertEqual(layers, set(range(23)))  # diffusers' SD2 text encoder: 23 of 24
        self.assertNotIn("text_projection.weight", te)
        extra, _ = entries(os.path.join(out, EXTRA))
        last = {n for n in extra if n.startswith("cond_stage_model.model.transformer.resblocks.23.")}
        self.assertEqual(len(last), 12)  # ln_1/2, in_proj, out_proj, c_fc, c_proj: weight+bias
        self.assertIn("cond_stage_model.model.text_projection", extra)
        self.assertIn("cond_stage_model.model.logit_scale", extra)
        check_configs(self, out, in_channels=4)
        cfg = load_json(os.path.join(out, "text_encoder/config.json"))
        self.assertEqual((cfg["num_hidden_layers"], cfg["hidden_act"]), (23, "gelu"))
        cfg = load_json(os.path.join(out, "unet/config.json"))
        self.assertEqual(cfg["attention_head_dim"], [5, 10, 20, 20])
        self.assertEqual(cfg["sample_size"], 96)
        sched = load_json(os.path.join(out, "scheduler/scheduler_config.json"))
        self.assertEqual(sched["prediction_type"], "v_prediction")
        self.assertEqual(json.loads(run("inspect", out, "--json").stdout)["architecture"], "sd2")
        # The fused q/k/v, split as PyTorch's chunk does.
        import torch
        w = torch.from_numpy(values[self.IN_PROJ])
        b = torch.from_numpy(values[self.IN_PROJ_B])
        path = os.path.join(out, "text_encoder/model.safetensors")
        for k, (wq, bq) in enumerate(zip(torch.chunk(w, 3, 0), torch.chunk(b, 3, 0))):
            name = f"text_model.encoder.layers.0.self_attn.{'qkv'[k]}_proj"
            dt, shape, off, size = te[name + ".weight"]
            got = np.frombuffer(read_at(path, off, size), "<f4").reshape(shape)
            self.assertTrue(torch.equal(torch.from_numpy(got.copy()), wq), name)
            dt, shape, off, size = te[name + ".bias"]
            got = np.frombuffer(read_at(path, off, size), "<f4")
            self.assertTrue(torch.equal(torch.from_numpy(got.copy()), bq), name)
        back = self.path("back.safetensors")
        run("convert", out, "-o", back)
        same_tensors(self, src, back)

    def test_prediction_type_from_metadata_or_flag(self):
        src, out, _, p = self.convert({"modelspec.architecture": "stable-diffusion-v2-512"})
        self.assertNotIn("assumed", p.stderr)
        self.assertEqual(load_json(os.path.join(out, "scheduler/scheduler_config.json"))
                         ["prediction_type"], "epsilon")
        self.assertEqual(load_json(os.path.join(out, "unet/config.json"))["sample_size"], 64)
        run("convert", src, "-o", out, "--to", "diffusers", "--force",
            "--prediction-type", "v_prediction")
        self.assertEqual(load_json(os.path.join(out, "scheduler/scheduler_config.json"))
                         ["prediction_type"], "v_prediction")


class SdxlRefiner(TempDirTest):
    def test_sdxl_refiner(self):
        src = self.path("refiner.safetensors")
        make_input(src, layout_table("sdxl-refiner-sgm"), 21, {"modelspec.title": "unit refiner"})
        out = self.path("refiner")
        run("convert", src, "-o", out, "--to", "diffusers")
        self.assertFalse(os.path.exists(os.path.join(out, "text_encoder")))
        table, _ = entries(os.path.join(out, "text_encoder_2/model.safetensors"))
        self.assertEqual({n: (d, s) for n, (d, s, _, _) in table.items()},
                         {n: (d, s) for n, d, s in layout_table("clip-g")})
        check_configs(self, out, in_channels=4)
        cfg = load_json(os.path.join(out, "unet/config.json"))
        # stable-diffusion-xl-refiner-1.0's published values
        self.assertEqual(cfg["block_out_channels"], [384, 768, 1536, 1536])
        self.assertEqual(cfg["transformer_layers_per_block"], 4)
        self.assertEqual(cfg["cross_attention_dim"], 1280)
        self.assertEqual(cfg["projection_class_embeddings_input_dim"], 2560)
        index = load_json(os.path.join(out, "model_index.json"))
        self.assertEqual(index["_class_name"], "StableDiffusionXLImg2ImgPipeline")
        self.assertEqual(index["text_encoder"], [None, None])
        self.assertTrue(index["requires_aesthetics_score"])
        doc = json.loads(run("inspect", out, "--json").stdout)
        self.assertEqual(doc["architecture"], "sdxl-refiner")
        back = self.path("back.safetensors")
        run("convert", out, "-o", back)
        same_tensors(self, src, back)


class Tokenizers(TempDirTest):
    def test_tokenizers_are_copied_from_another_folder(self):
        src = self.path("sdxl.safetensors")
        run("sample", "--layout", "sdxl-sgm", "--sparse", "-o", src)
        ref = self.path("ref")
        files = {"tokenizer/vocab.json": b'{"a</w>": 0}', "tokenizer/merges.txt": b"#v\na b\n",
                 "tokenizer_2/vocab.json": b'{"b</w>": 1}', "tokenizer_2/special_tokens_map.json": b"{}"}
        for rel, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(ref, rel)), exist_ok=True)
            with open(os.path.join(ref, rel), "wb") as f:
                f.write(data)
        out = self.path("out")
        p = run("convert", src, "-o", out, "--to", "diffusers", "--tokenizers-from", ref)
        self.assertNotIn("not included", p.stderr)
        for rel, data in files.items():
            with open(os.path.join(out, rel), "rb") as f:
                self.assertEqual(f.read(), data, rel)
        index = load_json(os.path.join(out, "model_index.json"))
        self.assertEqual(index["tokenizer"], ["transformers", "CLIPTokenizer"])
        self.assertEqual(index["tokenizer_2"], ["transformers", "CLIPTokenizer"])
        # A folder without tokenizer_2: refused, nothing written.
        os.unlink(os.path.join(ref, "tokenizer_2/vocab.json"))
        os.unlink(os.path.join(ref, "tokenizer_2/special_tokens_map.json"))
        before = listing(self.tmp)
        p = run("convert", src, "-o", self.path("out2"), "--to", "diffusers", "--tokenizers-from",
                ref, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn(os.path.join(ref, "tokenizer_2"), p.stderr)
        self.assertEqual(listing(self.tmp), before)


class Killed(TempDirTest):
    """SIGKILL in the middle (CKPTKIT_TEST_HOLD, as test_output_safety.py does): the folder or
    file is not there, and the next run cleans up and writes it whole."""

    def hold_and_kill(self, args, point):
        env = dict(os.environ, CKPTKIT_TEST_HOLD=point)
        proc = subprocess.Popen([BIN, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                text=True, env=env)
        for line in proc.stderr:
            if f"test hold at {point}" in line:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
        proc.stderr.close()
        self.assertEqual(proc.returncode, -signal.SIGKILL, f"{args} did not reach {point}")

    def test_a_killed_conversion_leaves_no_folder(self):
        src = self.path("sd15.safetensors")
        run("sample", "--layout", "sd15-ldm", "--sparse", "-o", src)
        out = self.path("folder")
        for point in ("half", "staged"):
            self.hold_and_kill(["convert", src, "-o", out, "--to", "diffusers", "--no-sync",
                                "--threads", "1", "--max-memory", "4M"], point)
            self.assertFalse(os.path.exists(out), point)
        run("convert", src, "-o", out, "--to", "diffusers")
        self.assertEqual(sorted(os.listdir(self.tmp)), ["folder", "sd15.safetensors"])
        back = self.path("back.safetensors")
        self.hold_and_kill(["convert", out, "-o", back, "--no-sync", "--threads", "1",
                            "--max-memory", "4M"], "half")
        self.assertFalse(os.path.exists(back))
        run("convert", out, "-o", back)
        self.assertTrue(same_file(src, back))


class BadInput(TempDirTest):
    def setUp(self):
        super().setUp()
        self.src = self.path("sd15.safetensors")
        make_input(self.src, layout_table("sd15-ldm"), 1, {"format": "pt"})
        self.good = self.path("good")
        run("convert", self.src, "-o", self.good, "--to", "diffusers")

    def copy_folder(self, name):
        """A copy of the good folder (hard links: the files are never written)."""
        dst = self.path(name)
        for rel in listing(self.good):
            s, d = os.path.join(self.good, rel), os.path.join(dst, rel)
            if os.path.isdir(s):
                os.makedirs(d, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(d), exist_ok=True)
                os.link(s, d)
        return dst

    def refused(self, *args, names=()):
        before = listing(self.tmp)
        p = run(*args, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        for n in names:
            self.assertIn(n, p.stderr)
        self.assertEqual(listing(self.tmp), before)  # nothing written, no temporaries
        return p

    def test_missing_component(self):
        d = self.copy_folder("novae")
        os.unlink(os.path.join(d, "vae/diffusion_pytorch_model.safetensors"))
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=[os.path.join(d, "vae/diffusion_pytorch_model.safetensors"), "missing"])

    def test_model_index_without_a_part(self):
        d = self.copy_folder("nounet")
        index = load_json(os.path.join(d, "model_index.json"))
        del index["unet"]
        os.unlink(os.path.join(d, "model_index.json"))
        with open(os.path.join(d, "model_index.json"), "w") as f:
            json.dump(index, f)
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=["model_index.json", "'unet'", "unet/diffusion_pytorch_model.safetensors"])

    def edit_json(self, d, rel, change):
        doc = load_json(os.path.join(d, rel))
        change(doc)
        os.unlink(os.path.join(d, rel))  # a hard link: write a new file, not the shared one
        with open(os.path.join(d, rel), "w") as f:
            json.dump(doc, f)

    def test_a_config_that_disagrees_with_its_weights(self):
        d = self.copy_folder("badconfig")
        self.edit_json(d, "vae/config.json", lambda c: c.update(latent_channels=16))
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=[os.path.join(d, "vae/config.json"), "latent_channels", "16", "4"])
        d = self.copy_folder("badconfig2")
        self.edit_json(d, "text_encoder/config.json", lambda c: c.update(num_hidden_layers=11))
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=[os.path.join(d, "text_encoder/config.json"), "num_hidden_layers"])
        # An SD1 UNet whose config claims SD2's cross-attention width.
        d = self.copy_folder("badconfig3")
        self.edit_json(d, "unet/config.json", lambda c: c.update(cross_attention_dim=1024))
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=["config.json", "cross_attention_dim", "768"])

    def shard_unet(self, name, corrupt=None, variant=False):
        """A copy of the good folder whose UNet is two shards and an index, as diffusers
        writes a large part (with `variant`, as it writes the fp16 variant:
        STEM.fp16-0000k-of-00002.safetensors listed by NAME.index.fp16.json);
        `corrupt(shards, weight_map)` may spoil them first."""
        d = self.copy_folder(name)
        rel = "unet/diffusion_pytorch_model.safetensors"
        table, _ = entries(os.path.join(self.good, rel))
        names = sorted(table)
        stem = "diffusion_pytorch_model.fp16" if variant else "diffusion_pytorch_model"
        shards = {f"{stem}-00001-of-00002.safetensors": names[:300],
                  f"{stem}-00002-of-00002.safetensors": names[300:]}
        weight_map = {n: f for f, ns in shards.items() for n in ns}
        if corrupt:
            corrupt(shards, weight_map)
        for f, ns in shards.items():
            rows = [(n, table[n][0], table[n][1]) for n in ns]
            data = {n: prefix_of(os.path.join(self.good, rel), table, n) for n in ns}
            write_sparse_safetensors(os.path.join(d, "unet", f), rows, data, {"format": "pt"})
        os.unlink(os.path.join(d, rel))
        with open(os.path.join(d, rel + (".index.fp16.json" if variant else ".index.json")), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)
        return d

    def test_sharded_parts_and_fp16_variants_are_read(self):
        d = self.shard_unet("sharded")
        os.rename(os.path.join(d, "vae/diffusion_pytorch_model.safetensors"),
                  os.path.join(d, "vae/diffusion_pytorch_model.fp16.safetensors"))
        back = self.path("back.safetensors")
        p = run("convert", d, "-o", back)
        self.assertIn("fp16 variant", p.stderr)
        same_tensors(self, self.src, back)

    def test_sharded_fp16_variants_and_sharded_bin_parts_are_read(self):
        # SD3's text_encoder_3 ships this way (model.fp16-0000k-of-00002.safetensors and
        # model.safetensors.index.fp16.json); older repositories shard pytorch_model.bin.
        import torch
        d = self.shard_unet("sharded-variant", variant=True)
        self.assertFalse(os.path.exists(os.path.join(d, "unet/diffusion_pytorch_model.safetensors.index.json")))
        rel = "text_encoder/model.safetensors"
        table, _ = entries(os.path.join(self.good, rel))
        np_of = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}
        names = sorted(table)
        weight_map = {}
        for k, part in enumerate((names[:len(names) // 2], names[len(names) // 2:]), 1):
            shard = f"pytorch_model-0000{k}-of-00002.bin"
            sd = {}
            for n in part:
                dt, shape, off, size = table[n]
                a = np.frombuffer(read_at(os.path.join(self.good, rel), off, size), np_of[dt])
                sd[n] = torch.from_numpy(a.reshape(shape).copy())
                weight_map[n] = shard
            torch.save(sd, os.path.join(d, "text_encoder", shard))
        with open(os.path.join(d, "text_encoder/pytorch_model.bin.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
        os.unlink(os.path.join(d, rel))
        back = self.path("back.safetensors")
        p = run("convert", d, "-o", back)
        self.assertIn("fp16 variant's shards", p.stderr)
        self.assertIn("diffusion_pytorch_model.safetensors.index.fp16.json", p.stderr)
        self.assertIn("PyTorch shards", p.stderr)
        same_tensors(self, self.src, back)
        # A shard the variant's index names but that is not there: refused, named.
        os.unlink(os.path.join(d, "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors"))
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=["diffusion_pytorch_model.fp16-00002-of-00002.safetensors", "missing"])

    def test_pytorch_bin_parts_are_read(self):
        import torch
        d = self.copy_folder("bin")
        rel = "vae/diffusion_pytorch_model.safetensors"
        table, _ = entries(os.path.join(self.good, rel))
        sd = {}
        np_of = {"F32": "<f4", "F16": "<f2"}
        for n, (dt, shape, off, size) in table.items():
            a = np.frombuffer(read_at(os.path.join(self.good, rel), off, size), np_of[dt])
            sd[n] = torch.from_numpy(a.reshape(shape).copy())
        torch.save(sd, os.path.join(d, "vae/diffusion_pytorch_model.bin"))
        os.unlink(os.path.join(d, rel))
        back = self.path("back.safetensors")
        p = run("convert", d, "-o", back)
        self.assertIn("PyTorch file", p.stderr)
        same_tensors(self, self.src, back)

    def test_a_dangerous_bin_part_is_refused(self):
        import torch

        class Evil:
            def __reduce__(self):
                return (os.system, ("true",))  # pickling only names it; nothing runs it

        d = self.copy_folder("evil")
        os.unlink(os.path.join(d, "text_encoder/model.safetensors"))
        torch.save({"text_model.final_layer_norm.weight": torch.ones(768), "x": Evil()},
                   os.path.join(d, "text_encoder/pytorch_model.bin"))
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=[os.path.join(d, "text_encoder/pytorch_model.bin"), "dangerous"])

    def test_bad_shards(self):
        def missing_file(shards, wm):
            wm["conv_in.weight"] = "diffusion_pytorch_model-00003-of-00002.safetensors"
        d = self.shard_unet("shards1", missing_file)
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=["00003-of-00002", "missing"])

        def overlap(shards, wm):
            first, second = list(shards)
            shards[second].append(shards[first][0])
        d = self.shard_unet("shards2", overlap)
        self.refused("convert", d, "-o", self.path("out.safetensors"), names=["00002-of-00002"])

        def unlisted(shards, wm):
            del wm[sorted(wm)[5]]
        d = self.shard_unet("shards3", unlisted)
        self.refused("convert", d, "-o", self.path("out.safetensors"), names=["index.json"])

    def test_sd2_weights_in_an_sd1_folder_without_a_unet_config(self):
        d = self.copy_folder("noconfig")
        os.unlink(os.path.join(d, "unet/config.json"))
        rel = "unet/diffusion_pytorch_model.safetensors"
        os.unlink(os.path.join(d, rel))
        rows = [(n, dt, [sh[0], 1024] if n.endswith("attn2.to_k.weight") else sh)
                for n, dt, sh in layout_table("sd15-diffusers-unet")]
        write_sparse_safetensors(os.path.join(d, rel), rows, {}, {"format": "pt"})
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=[os.path.join(d, rel), "1024", "sd1"])

    def test_unknown_pipeline(self):
        d = self.copy_folder("kandinsky")
        index = load_json(os.path.join(d, "model_index.json"))
        index["_class_name"] = "KandinskyV22Pipeline"
        os.unlink(os.path.join(d, "model_index.json"))
        with open(os.path.join(d, "model_index.json"), "w") as f:
            json.dump(index, f)
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=["KandinskyV22Pipeline", "StableDiffusionPipeline"])
        # A supported pipeline whose required part is not in model_index.json.
        index["_class_name"] = "FluxPipeline"
        os.unlink(os.path.join(d, "model_index.json"))
        with open(os.path.join(d, "model_index.json"), "w") as f:
            json.dump(index, f)
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=["FluxPipeline", "transformer"])

    def test_a_tensor_without_a_single_file_name(self):
        d = self.copy_folder("strange")
        rel = "unet/diffusion_pytorch_model.safetensors"
        os.unlink(os.path.join(d, rel))
        rows = layout_table("sd15-diffusers-unet") + [("down_blocks.0.resnets.0.to_to_k.weight", "F32", [4])]
        write_sparse_safetensors(os.path.join(d, rel), rows, {}, {"format": "pt"})
        self.refused("convert", d, "-o", self.path("out.safetensors"),
                     names=[os.path.join(d, rel), "to_to_k"])

    def test_existing_output_folder_needs_force(self):
        os.makedirs(self.path("exists"))
        self.refused("convert", self.src, "-o", self.path("exists"), "--to", "diffusers",
                     names=[self.path("exists"), "exists", "--force"])
        run("convert", self.src, "-o", self.path("exists"), "--to", "diffusers", "--force")
        self.assertIn("model_index.json", os.listdir(self.path("exists")))

    def test_existing_output_file_needs_force(self):
        with open(self.path("taken.safetensors"), "wb") as f:
            f.write(b"x")
        self.refused("convert", self.good, "-o", self.path("taken.safetensors"))

    def test_a_model_without_a_diffusers_layout(self):
        src = self.path("flux.safetensors")
        write_sparse_safetensors(src, layout_table("flux1-vae"), {}, {"format": "pt"})
        self.refused("convert", src, "-o", self.path("fluxvae"), "--to", "diffusers",
                     names=[src, "supported"])

    def test_a_file_missing_its_vae(self):
        src = self.path("novae.safetensors")
        rows = [r for r in layout_table("sd15-ldm") if not r[0].startswith("first_stage_model.")]
        write_sparse_safetensors(src, rows, {}, {"format": "pt"})
        self.refused("convert", src, "-o", self.path("novae-out"), "--to", "diffusers",
                     names=[src, "VAE", "vae/"])

    def test_a_clip_without_the_text_model_level(self):
        # Old SD1 files spell CLIP without "text_model."; a diffusers text encoder needs it.
        src = self.path("old.safetensors")
        rows = [(n.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."),
                 d, s) for n, d, s in layout_table("sd15-ldm")]
        write_sparse_safetensors(src, rows, {}, {"format": "pt"})
        self.refused("convert", src, "-o", self.path("old"), "--to", "diffusers",
                     names=[src, "CLIP-L", "text_encoder/"])

    def test_to_diffusers_of_a_folder(self):
        self.refused("convert", self.good, "-o", self.path("x"), "--to", "diffusers",
                     names=[self.good, "folder"])


if __name__ == "__main__":
    unittest.main()
