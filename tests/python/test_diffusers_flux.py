"""`convert --to diffusers` and back for FLUX.1 (dev and schnell) and SD3, on sparse full-size
files of the published layouts (data/layouts: the BFL transformer, CLIP-L, T5-XXL, the FLUX VAE, the
ComfyUI all-in-one FP8 file):

* the transformer's names are diffusers' FluxTransformer2DModel names, written out here from
  diffusers' scripts/convert_flux_to_diffusers.py (docs/models.md), and every output tensor
  starts with the bytes of the rows it comes from: the q/k/v thirds, linear1's q, k, v and MLP
  ranges, the final layer's halves in swapped order;
* the same split, concatenation and swap done by PyTorch on random biases give the same bytes;
* parts above the shard size are written as shards with an index, as save_pretrained does
  (23.8 GB transformer: 3 shards of at most 10 GB; 9.8 GB T5: 2 of at most 5 GB);
* the configs agree with the weights; inspect names the family;
* single -> diffusers -> single and diffusers -> single -> diffusers are byte-identical, for an
  all-in-one file and for a bare transformer file (written back without a prefix);
* bad input: exit 2 and nothing written."""
import json
import os
import tempfile
import unittest

import numpy as np

from ckpt_testlib import TempDirTest, layout_table, run, write_sparse_safetensors
from test_diffusers_folder import entries, listing, load_json, read_at, same_file, same_tensors

WIDTH = 3072  # FLUX.1's hidden size
WINDOW = 256  # random bytes at the start of every row range a rule cuts

# diffusers' convert_flux_to_diffusers.py, rule by rule: single-file module -> diffusers module.
TOP = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
}
DOUBLE_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out"}
SINGLE_NORMS = {"norm.query_norm.scale": "attn.norm_q.weight",
                "norm.key_norm.scale": "attn.norm_k.weight"}


def flux_rules(name, rows):
    """[(diffusers name, first row, row count)] that the BFL tensor `name` (of `rows` rows)
    becomes; a swapped tensor is [(name, half, half), (name, 0, half)] under one name."""
    parts = name.split(".")
    leaf = "." + parts[-1]
    if parts[0] == "double_blocks":
        head, rest = f"transformer_blocks.{parts[1]}.", ".".join(parts[2:])
        if rest in DOUBLE_NORMS:
            return [(head + DOUBLE_NORMS[rest], 0, rows)]
        module = rest[: -len(leaf)]
        if module in ("img_attn.qkv", "txt_attn.qkv"):
            names = (["attn.to_q", "attn.to_k", "attn.to_v"] if module == "img_attn.qkv" else
                     ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"])
            return [(head + n + leaf, k * rows // 3, rows // 3) for k, n in enumerate(names)]
        return [(head + DOUBLE[module] + leaf, 0, rows)]
    if parts[0] == "single_blocks":
        head, rest = f"single_transformer_blocks.{parts[1]}.", ".".join(parts[2:])
        if rest in SINGLE_NORMS:
            return [(head + SINGLE_NORMS[rest], 0, rows)]
        module = rest[: -len(leaf)]
        if module == "linear1":
            return [(head + "attn.to_q" + leaf, 0, WIDTH), (head + "attn.to_k" + leaf, WIDTH, WIDTH),
                    (head + "attn.to_v" + leaf, 2 * WIDTH, WIDTH),
                    (head + "proj_mlp" + leaf, 3 * WIDTH, rows - 3 * WIDTH)]
        return [(head + SINGLE[module] + leaf, 0, rows)]
    module = name[: -len(leaf)]
    if module == "final_layer.adaLN_modulation.1":
        return [("norm_out.linear" + leaf, rows // 2, rows // 2), ("norm_out.linear" + leaf, 0, rows // 2)]
    return [(TOP[module] + leaf, 0, rows)]


def itemsize(dtype):
    return {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}[dtype]


def row_bytes(dtype, shape):
    n = itemsize(dtype)
    for d in shape[1:]:
        n *= d
    return n


def make_flux(path, parts, seed, metadata, bias_values=(), rules=None):
    """A sparse all-in-one file: `parts` [(prefix, layout)]. Every tensor starts with random
    bytes; every row range a transformer rule cuts starts with WINDOW random bytes; the biases in
    `bias_values` (transformer names) are random throughout. Returns {name: data written}."""
    rng = np.random.default_rng(seed)
    rows, writes = [], {}
    for prefix, layout in parts:
        for name, dtype, shape in layout_table(layout):
            rows.append((prefix + name, dtype, shape))
    write_sparse_safetensors(path, rows, {}, metadata)
    h = json.loads(read_at(path, 8, int.from_bytes(read_at(path, 0, 8), "little")))
    base = 8 + int.from_bytes(read_at(path, 0, 8), "little")
    with open(path, "r+b") as f:
        for full, dtype, shape in rows:
            begin, end = h[full]["data_offsets"]
            local = full[len("model.diffusion_model."):] if full.startswith("model.diffusion_model.") else None
            offsets = {0}
            if local is not None and shape:
                pieces = (rules or flux_rules)(local, shape[0])
                for _, r0, _ in pieces:
                    offsets.add(r0 * row_bytes(dtype, shape))
                # A cut tensor with data is rebuilt through buffers on the way back, not
                # copied in the kernel: only the first blocks' carry data, the rest stay
                # holes (read as zeros on both sides), to keep the test quick.
                if len(pieces) > 1 and local.split(".")[1] not in ("0", "adaLN_modulation"):
                    offsets = set()
            if local in bias_values:
                data = rng.bytes(end - begin)
                writes[full] = data
                f.seek(base + begin)
                f.write(data)
                continue
            for off in sorted(offsets):
                k = min(WINDOW, end - begin - off)
                f.seek(base + begin + off)
                f.write(rng.bytes(k))
    return writes


DEV_PARTS = [("model.diffusion_model.", "flux1-dev-transformer"),
             ("text_encoders.clip_l.transformer.", "clip-l"),
             ("text_encoders.t5xxl.transformer.", "t5xxl-encoder"),
             ("vae.", "flux1-vae")]


def part_tables(folder, part, weights):
    """{name: (dtype, shape, absolute begin, size, file)} of a part, sharded or not, and the
    index (None when not sharded)."""
    d = os.path.join(folder, part)
    index = os.path.join(d, weights + ".index.json")
    if os.path.exists(index):
        idx = load_json(index)
        files = sorted(set(idx["weight_map"].values()))
    else:
        idx, files = None, [weights]
    out = {}
    for f in files:
        table, meta = entries(os.path.join(d, f))
        assert meta == {"format": "pt"}, meta
        for n, v in table.items():
            out[n] = v + (os.path.join(d, f),)
    return out, idx


class FluxDev(TempDirTest):
    """One conversion of the all-in-one file, shared by the tests (each has its own folder
    for what it writes)."""

    @classmethod
    def setUpClass(cls):
        root = os.environ.get("CKPTKIT_TEST_TMP")
        if root:
            os.makedirs(root, exist_ok=True)
        cls._shared = tempfile.TemporaryDirectory(dir=root)
        cls.src = os.path.join(cls._shared.name, "flux1-dev.safetensors")
        biases = {"double_blocks.0.img_attn.qkv.bias", "double_blocks.0.txt_attn.qkv.bias",
                  "single_blocks.0.linear1.bias", "final_layer.adaLN_modulation.1.bias"}
        cls.written = make_flux(cls.src, DEV_PARTS, 7, {"modelspec.title": "unit flux"}, biases)
        cls.out = os.path.join(cls._shared.name, "flux-diffusers")
        run("convert", cls.src, "-o", cls.out, "--to", "diffusers")

    @classmethod
    def tearDownClass(cls):
        cls._shared.cleanup()

    def test_transformer_names_shards_and_bytes(self):
        src_table, _ = entries(self.src)
        table, idx = part_tables(self.out, "transformer", "diffusion_pytorch_model.safetensors")
        # 23.8 GB in shards of at most 10 GB (diffusers' default), named and indexed as
        # save_pretrained does.
        self.assertIsNotNone(idx)
        shards = sorted(set(idx["weight_map"].values()))
        self.assertEqual(shards, [f"diffusion_pytorch_model-0000{k}-of-00003.safetensors"
                                  for k in (1, 2, 3)])
        self.assertEqual(set(idx["weight_map"]), set(table))
        sizes = [os.path.getsize(os.path.join(self.out, "transformer", s)) for s in shards]
        self.assertTrue(all(s <= 10_000_000_000 + (1 << 20) for s in sizes), sizes)
        self.assertEqual(idx["metadata"]["total_size"], sum(v[3] for v in table.values()))
        expected = {}
        for name, dtype, shape in layout_table("flux1-dev-transformer"):
            for n, r0, count in flux_rules(name, shape[0]):
                expected.setdefault(n, []).append((name, r0, count, dtype, shape))
        self.assertEqual(set(table), set(expected))
        self.assertEqual(len(table), 1160)
        for n, pieces in expected.items():
            dtype, shape, begin, size, path = table[n]
            self.assertEqual(dtype, pieces[0][3])
            self.assertEqual(shape, [sum(p[2] for p in pieces)] + pieces[0][4][1:], n)
            # Each piece of the output starts with the bytes of its source rows.
            at = begin
            for src_name, r0, count, sdtype, sshape in pieces:
                _, _, sbegin, _ = src_table["model.diffusion_model." + src_name]
                rb = row_bytes(sdtype, sshape)
                k = min(WINDOW, count * rb)
                self.assertEqual(read_at(path, at, k), read_at(self.src, sbegin + r0 * rb, k),
                                 f"{n} <- {src_name} rows {r0}+{count}")
                at += count * rb

    def test_splits_and_swap_are_pytorchs(self):
        import torch
        table, _ = part_tables(self.out, "transformer", "diffusion_pytorch_model.safetensors")

        def src(name):
            raw = self.written["model.diffusion_model." + name]
            return torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)

        def out(name):
            _, _, begin, size, path = table[name]
            return read_at(path, begin, size)

        def raw(t):
            return t.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()

        q, k, v = torch.chunk(src("double_blocks.0.img_attn.qkv.bias"), 3, dim=0)
        self.assertEqual(out("transformer_blocks.0.attn.to_q.bias"), raw(q))
        self.assertEqual(out("transformer_blocks.0.attn.to_k.bias"), raw(k))
        self.assertEqual(out("transformer_blocks.0.attn.to_v.bias"), raw(v))
        q, k, v = torch.chunk(src("double_blocks.0.txt_attn.qkv.bias"), 3, dim=0)
        self.assertEqual(out("transformer_blocks.0.attn.add_v_proj.bias"), raw(v))
        q, k, v, mlp = torch.split(src("single_blocks.0.linear1.bias"),
                                   (WIDTH, WIDTH, WIDTH, 4 * WIDTH), dim=0)
        self.assertEqual(out("single_transformer_blocks.0.attn.to_q.bias"), raw(q))
        self.assertEqual(out("single_transformer_blocks.0.attn.to_k.bias"), raw(k))
        self.assertEqual(out("single_transformer_blocks.0.attn.to_v.bias"), raw(v))
        self.assertEqual(out("single_transformer_blocks.0.proj_mlp.bias"), raw(mlp))
        shift, scale = src("final_layer.adaLN_modulation.1.bias").chunk(2, dim=0)
        self.assertEqual(out("norm_out.linear.bias"), raw(torch.cat([scale, shift], dim=0)))

    def test_parts_configs_and_inspect(self):
        # T5: 9.8 GB in shards of at most 5 GB (transformers' default); shared.weight kept,
        # its tied copy encoder.embed_tokens.weight in the extra file.
        t5, idx = part_tables(self.out, "text_encoder_2", "model.safetensors")
        self.assertIsNotNone(idx)
        self.assertEqual(len(set(idx["weight_map"].values())), 2)
        want = {n: (d, s) for n, d, s in layout_table("t5xxl-encoder")}
        del want["encoder.embed_tokens.weight"]
        self.assertEqual({n: v[:2] for n, v in t5.items()}, want)
        extra, _ = entries(os.path.join(self.out, "ckptkit_extra.safetensors"))
        self.assertEqual(set(extra), {"text_encoders.t5xxl.transformer.encoder.embed_tokens.weight"})
        clip, _ = entries(os.path.join(self.out, "text_encoder/model.safetensors"))
        self.assertEqual({n: v[:2] for n, v in clip.items()},
                         {n: (d, s) for n, d, s in layout_table("clip-l")})
        vae, _ = entries(os.path.join(self.out, "vae/diffusion_pytorch_model.safetensors"))
        self.assertIn("decoder.mid_block.attentions.0.to_q.weight", vae)
        self.assertEqual(len(vae), len(layout_table("flux1-vae")))

        cfg = load_json(os.path.join(self.out, "transformer/config.json"))
        self.assertEqual(cfg["_class_name"], "FluxTransformer2DModel")
        for k, v in {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
                     "num_attention_heads": 24, "joint_attention_dim": 4096,
                     "pooled_projection_dim": 768, "in_channels": 64, "guidance_embeds": True,
                     "patch_size": 1}.items():
            self.assertEqual(cfg[k], v, k)
        t5cfg = load_json(os.path.join(self.out, "text_encoder_2/config.json"))
        for k, v in {"d_model": 4096, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
                     "d_kv": 64, "feed_forward_proj": "gated-gelu", "vocab_size": 32128,
                     "relative_attention_num_buckets": 32, "torch_dtype": "float16"}.items():
            self.assertEqual(t5cfg[k], v, k)
        self.assertEqual(t5cfg["architectures"], ["T5EncoderModel"])
        vcfg = load_json(os.path.join(self.out, "vae/config.json"))
        for k, v in {"latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159,
                     "use_quant_conv": False, "use_post_quant_conv": False,
                     "block_out_channels": [128, 256, 512, 512]}.items():
            self.assertEqual(vcfg[k], v, k)
        sched = load_json(os.path.join(self.out, "scheduler/scheduler_config.json"))
        self.assertEqual(sched["_class_name"], "FlowMatchEulerDiscreteScheduler")
        self.assertEqual((sched["shift"], sched["use_dynamic_shifting"]), (3.0, True))
        self.assertNotIn("prediction_type", sched)
        index = load_json(os.path.join(self.out, "model_index.json"))
        self.assertEqual(index["_class_name"], "FluxPipeline")
        self.assertEqual(index["transformer"], ["diffusers", "FluxTransformer2DModel"])
        self.assertEqual(index["text_encoder_2"], ["transformers", "T5EncoderModel"])
        self.assertEqual(index["tokenizer_2"], [None, None])
        self.assertEqual(json.loads(run("inspect", self.out, "--json").stdout)["architecture"],
                         "flux1-dev")

    def test_round_trips_are_byte_identical(self):
        back = self.path("back.safetensors")
        run("convert", self.out, "-o", back)
        same_tensors(self, self.src, back)
        again = self.path("again")
        run("convert", back, "-o", again, "--to", "diffusers")
        self.assertEqual(listing(again), listing(self.out))
        for rel in listing(self.out):
            a = os.path.join(self.out, rel)
            if os.path.isfile(a):
                self.assertTrue(same_file(a, os.path.join(again, rel)), rel)

    def test_bad_input(self):
        def refused(*args):
            before = listing(self.tmp)
            p = run(*args, check=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertEqual(listing(self.tmp), before)
            return p

        # The output exists.
        refused("convert", self.src, "-o", self.out, "--to", "diffusers")
        # A folder copy (hard links) whose transformer config disagrees with the weights.
        bad = self.path("bad")
        for rel in listing(self.out):
            s, d = os.path.join(self.out, rel), os.path.join(bad, rel)
            if os.path.isdir(s):
                os.makedirs(d, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(d), exist_ok=True)
                os.link(s, d)
        cfg_path = os.path.join(bad, "transformer/config.json")
        cfg = load_json(cfg_path)
        cfg["num_single_layers"] = 37
        os.unlink(cfg_path)
        with open(cfg_path, "w", encoding="utf-8") as f:
            json.dump(cfg, f)
        p = refused("convert", bad, "-o", self.path("x.safetensors"))
        self.assertIn("num_single_layers", p.stderr)
        # A missing shard of the transformer.
        os.unlink(cfg_path)
        os.link(os.path.join(self.out, "transformer/config.json"), cfg_path)
        shard = os.path.join(bad, "transformer/diffusion_pytorch_model-00002-of-00003.safetensors")
        os.unlink(shard)
        p = refused("convert", bad, "-o", self.path("x.safetensors"))
        self.assertIn("missing", p.stderr)
        # --prediction-type has no meaning for a flow-matching scheduler.
        refused("convert", self.src, "-o", self.path("new"), "--to", "diffusers",
                "--prediction-type", "epsilon")


class FluxSamples(TempDirTest):
    def round_trip(self, layout, arch):
        src = self.path(layout + ".safetensors")
        run("sample", "--layout", layout, "--sparse", "-o", src)
        out = self.path("folder")
        run("convert", src, "-o", out, "--to", "diffusers", "--max-shard-size", "4GB")
        self.assertEqual(json.loads(run("inspect", out, "--json").stdout)["architecture"], arch)
        back = self.path("back.safetensors")
        run("convert", out, "-o", back)
        self.assertTrue(same_file(src, back), layout)
        return out

    def test_bare_schnell_transformer(self):
        out = self.round_trip("flux1-schnell-transformer", "flux1-schnell")
        index = load_json(os.path.join(out, "model_index.json"))
        for part in ("text_encoder", "text_encoder_2", "vae"):
            self.assertEqual(index[part], [None, None])
            self.assertFalse(os.path.exists(os.path.join(out, part)))
        sched = load_json(os.path.join(out, "scheduler/scheduler_config.json"))
        self.assertEqual((sched["shift"], sched["use_dynamic_shifting"]), (1.0, False))
        self.assertFalse(load_json(os.path.join(out, "transformer/config.json"))["guidance_embeds"])
        # --max-shard-size 4GB: 23.8 GB in shards of at most 4 GB each (tensors are whole, so
        # more than 6), every tensor in the shard the index names.
        idx = load_json(os.path.join(out, "transformer/diffusion_pytorch_model.safetensors.index.json"))
        shards = sorted(set(idx["weight_map"].values()))
        self.assertGreater(len(shards), 6)
        for k, name in enumerate(shards):
            self.assertEqual(name, f"diffusion_pytorch_model-{k + 1:05d}-of-{len(shards):05d}.safetensors")
            table, _ = entries(os.path.join(out, "transformer", name))
            self.assertLessEqual(sum(v[3] for v in table.values()), 4_000_000_000)
            self.assertEqual({n for n, f in idx["weight_map"].items() if f == name}, set(table))

    def test_comfy_fp8_all_in_one(self):
        out = self.round_trip("flux1-dev-comfy-fp8-aio", "flux1-dev")
        extra, _ = entries(os.path.join(out, "ckptkit_extra.safetensors"))
        # What CLIPTextModel and T5EncoderModel have no place for.
        self.assertEqual(set(extra), {"text_encoders.clip_l.transformer.text_projection.weight",
                                      "text_encoders.clip_l.logit_scale",
                                      "text_encoders.t5xxl.logit_scale"})

    def test_transformer_with_part_files(self):
        # ComfyUI's parts of a FLUX model: the transformer and --clip-l/--t5xxl/--vae make the
        # folder the all-in-one file makes (only the extra file, which carries the single
        # file's metadata, differs), and that folder converts back to what assemble writes.
        src = self.path("aio.safetensors")
        run("sample", "--layout", "flux1-dev-comfy-fp8-aio", "--sparse", "-o", src)
        parts = self.path("parts")
        run("split", src, "-o", parts, "--name", "f", "--no-sync")
        dm = os.path.join(parts, "diffusion_models/f.safetensors")
        te = os.path.join(parts, "text_encoders")
        given = ["--clip-l", os.path.join(te, "f-clip_l.safetensors"),
                 "--t5xxl", os.path.join(te, "f-t5xxl.safetensors"),
                 "--vae", os.path.join(parts, "vae/f-vae.safetensors")]
        whole, folder = self.path("whole"), self.path("folder")
        run("convert", src, "-o", whole, "--to", "diffusers", "--no-sync")
        run("convert", dm, "-o", folder, "--to", "diffusers", *given, "--no-sync")
        self.assertEqual(listing(folder), listing(whole))
        for rel in listing(whole):
            a = os.path.join(whole, rel)
            if os.path.isfile(a) and rel != "ckptkit_extra.safetensors":
                self.assertTrue(same_file(a, os.path.join(folder, rel)), rel)
        back, assembled = self.path("back.safetensors"), self.path("assembled.safetensors")
        run("convert", folder, "-o", back, "--no-sync")
        run("assemble", "--diffusion-model", dm, *given, "-o", assembled, "--no-sync")
        self.assertTrue(same_file(back, assembled))
        # Refusals write nothing: parts without --to, a part FLUX does not use.
        before = listing(self.tmp)
        p = run("convert", dm, "-o", self.path("x.safetensors"), *given, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--to diffusers", p.stderr)
        p = run("convert", dm, "-o", self.path("y"), "--to", "diffusers", "--clip-g",
                os.path.join(te, "f-clip_l.safetensors"), check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("CLIP-G", p.stderr)
        self.assertEqual(listing(self.tmp), before)


# diffusers' convert_sd3_to_diffusers.py, rule by rule.
SD3_TOP = {
    "x_embedder.proj": "pos_embed.proj",
    "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
    "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
    "context_embedder": "context_embedder",
    "final_layer.linear": "proj_out",
}
SD3_JOINT = {
    "x_block.attn.proj": "attn.to_out.0", "context_block.attn.proj": "attn.to_add_out",
    "x_block.adaLN_modulation.1": "norm1.linear",
    "x_block.mlp.fc1": "ff.net.0.proj", "x_block.mlp.fc2": "ff.net.2",
    "context_block.mlp.fc1": "ff_context.net.0.proj", "context_block.mlp.fc2": "ff_context.net.2",
}
SD3_LAST = 23  # sd3-medium: 24 joint blocks


def sd3_rules(name, rows):
    parts = name.split(".")
    if name == "pos_embed":
        return [("pos_embed.pos_embed", 0, rows)]
    leaf = "." + parts[-1]
    if parts[0] == "joint_blocks":
        i = int(parts[1])
        head, module = f"transformer_blocks.{i}.", ".".join(parts[2:-1])
        if module in ("x_block.attn.qkv", "context_block.attn.qkv"):
            names = (["attn.to_q", "attn.to_k", "attn.to_v"] if module.startswith("x_block") else
                     ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"])
            return [(head + n + leaf, k * rows // 3, rows // 3) for k, n in enumerate(names)]
        if module == "context_block.adaLN_modulation.1":
            n = head + "norm1_context.linear" + leaf
            if i == SD3_LAST:  # the script swaps the last block's (context_pre_only) halves
                return [(n, rows // 2, rows // 2), (n, 0, rows // 2)]
            return [(n, 0, rows)]
        return [(head + SD3_JOINT[module] + leaf, 0, rows)]
    module = name[: -len(leaf)]
    if module == "final_layer.adaLN_modulation.1":
        return [("norm_out.linear" + leaf, rows // 2, rows // 2), ("norm_out.linear" + leaf, 0, rows // 2)]
    return [(SD3_TOP[module] + leaf, 0, rows)]


class Sd3(TempDirTest):
    def test_sd3_medium(self):
        src = self.path("sd3.safetensors")
        layout = [(n[len("model.diffusion_model."):], d, s)
                  for n, d, s in layout_table("sd3-medium") if n.startswith("model.diffusion_model.")]
        # The all-in-one file as published (its own prefixes), cut windows from the MMDiT rules.
        rows = layout_table("sd3-medium")
        write_sparse_safetensors(src, rows, {}, {"modelspec.title": "unit sd3"})
        rng = np.random.default_rng(3)
        n = int.from_bytes(read_at(src, 0, 8), "little")
        h = json.loads(read_at(src, 8, n))
        with open(src, "r+b") as f:
            for full, dtype, shape in rows:
                begin, end = h[full]["data_offsets"]
                offs = {0}
                if full.startswith("model.diffusion_model.") and shape:
                    local = full[len("model.diffusion_model."):]
                    pieces = sd3_rules(local, shape[0])
                    for _, r0, _ in pieces:
                        offs.add(r0 * row_bytes(dtype, shape))
                    if len(pieces) > 1 and local.split(".")[1] not in ("0", str(SD3_LAST),
                                                                      "adaLN_modulation"):
                        offs = set()  # as in make_flux: holes, to keep the test quick
                for off in offs:
                    f.seek(8 + n + begin + off)
                    f.write(rng.bytes(min(WINDOW, end - begin - off)))
        out = self.path("sd3")
        run("convert", src, "-o", out, "--to", "diffusers")
        table, _ = part_tables(out, "transformer", "diffusion_pytorch_model.safetensors")
        src_table, _ = entries(src)
        expected = {}
        for name, dtype, shape in layout:
            for dn, r0, count in sd3_rules(name, shape[0]):
                expected.setdefault(dn, []).append((name, r0, count, dtype, shape))
        self.assertEqual(set(table), set(expected))
        for dn, pieces in expected.items():
            _, shape, begin, _, path = table[dn]
            self.assertEqual(shape, [sum(p[2] for p in pieces)] + pieces[0][4][1:], dn)
            at = begin
            for name, r0, count, dtype, sshape in pieces:
                rb = row_bytes(dtype, sshape)
                sb = src_table["model.diffusion_model." + name][2]
                k = min(WINDOW, count * rb)
                self.assertEqual(read_at(path, at, k), read_at(src, sb + r0 * rb, k), dn)
                at += count * rb
        cfg = load_json(os.path.join(out, "transformer/config.json"))
        for k, v in {"_class_name": "SD3Transformer2DModel", "num_layers": 24,
                     "num_attention_heads": 24, "attention_head_dim": 64,
                     "caption_projection_dim": 1536, "joint_attention_dim": 4096,
                     "pooled_projection_dim": 2048, "in_channels": 16, "out_channels": 16,
                     "patch_size": 2, "pos_embed_max_size": 192}.items():
            self.assertEqual(cfg[k], v, k)
        vcfg = load_json(os.path.join(out, "vae/config.json"))
        self.assertEqual((vcfg["scaling_factor"], vcfg["shift_factor"]), (1.5305, 0.0609))
        index = load_json(os.path.join(out, "model_index.json"))
        self.assertEqual(index["_class_name"], "StableDiffusion3Pipeline")
        self.assertEqual(index["text_encoder"], ["transformers", "CLIPTextModelWithProjection"])
        self.assertEqual(index["text_encoder_3"], ["transformers", "T5EncoderModel"])
        for te in ("text_encoder", "text_encoder_2"):
            clip, _ = entries(os.path.join(out, te, "model.safetensors"))
            self.assertIn("text_projection.weight", clip)
        sched = load_json(os.path.join(out, "scheduler/scheduler_config.json"))
        self.assertEqual(sched["shift"], 3.0)
        self.assertEqual(json.loads(run("inspect", out, "--json").stdout)["architecture"], "sd3")
        back = self.path("back.safetensors")
        run("convert", out, "-o", back)
        same_tensors(self, src, back)
        again = self.path("again")
        run("convert", back, "-o", again, "--to", "diffusers")
        self.assertEqual(listing(again), listing(out))
        for rel in listing(out):
            a = os.path.join(out, rel)
            if os.path.isfile(a):
                self.assertTrue(same_file(a, os.path.join(again, rel)), rel)

    def test_sd3_without_text_encoders(self):
        src = self.path("notext.safetensors")
        run("sample", "--layout", "sd3-medium-notext", "--sparse", "-o", src)
        out = self.path("folder")
        run("convert", src, "-o", out, "--to", "diffusers")
        index = load_json(os.path.join(out, "model_index.json"))
        for te in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            self.assertEqual(index[te], [None, None])
        back = self.path("back.safetensors")
        run("convert", out, "-o", back)
        self.assertTrue(same_file(src, back))


if __name__ == "__main__":
    unittest.main()
