"""`convert --quant` end to end, against real ggml (libggml-base.so from the npm package
@node-llama-cpp/linux-x64, through ctypes):

* every quantized tensor of a written file equals ggml_quantize_chunk of the same values, on
  the reference path for --target comfyui (after ComfyUI's F16 first step) and with an
  all-ones importance matrix for --target sdcpp;
* ggml's gguf_init_from_file opens the files, with the names, types, dims and offsets
  ckptkit's own reader reports;
* GGUF -> safetensors dequantizes exactly as ggml's dequantize_row_* does, with the original
  shapes (ComfyUI's rows-of-256 reshape undone);
* the SD1 policy (reshape, orig_shape keys, exclusions, the Q4_K_S mix) on a full-size sparse
  sample, and the refusals."""
import ctypes
import json
import os
import struct
import unittest

import numpy as np

import ggml_oracle
from ckpt_testlib import TempDirTest, read_safetensors, run, write_safetensors

GGML_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
              "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30}
BLOCK = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
         "Q8_0": (32, 34), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
         "Q5_K": (256, 176), "Q6_K": (256, 210)}


GgufInitParams = ggml_oracle.GgufInitParams


def lib():
    return ggml_oracle.lib()


def ggml_quantize(type_name, values, imatrix_ones=False):
    """ggml_quantize_chunk on a 2-D float32 array (rows x n_per_row)."""
    values = np.ascontiguousarray(values, dtype="<f4")
    rows, n = values.shape
    blk, size = BLOCK[type_name]
    out = (ctypes.c_uint8 * (rows * n // blk * size))()
    ones = np.ones(n, dtype="<f4") if imatrix_ones else None
    lib().ggml_quantize_chunk(GGML_TYPES[type_name], values.ctypes.data, out, 0, rows, n,
                              ones.ctypes.data if ones is not None else None)
    return bytes(out)


def ggml_dequantize(type_name, raw, count):
    fn = getattr(lib(), f"dequantize_row_{type_name.lower().replace('_k', '_K')}")
    out = np.empty(count, dtype="<f4")
    buf = ctypes.create_string_buffer(raw, len(raw))
    fn(buf, out.ctypes.data, count)
    return out


def ggml_open(path):
    """[(name, ggml type, absolute offset, size)] as ggml's own reader sees the file."""
    ctx = lib().gguf_init_from_file(path.encode(), GgufInitParams(True, None))
    if not ctx:
        raise AssertionError(f"ggml's gguf_init_from_file rejected {path}")
    try:
        base = lib().gguf_get_data_offset(ctx)
        return [(lib().gguf_get_tensor_name(ctx, i).decode(), lib().gguf_get_tensor_type(ctx, i),
                 base + lib().gguf_get_tensor_offset(ctx, i), lib().gguf_get_tensor_size(ctx, i))
                for i in range(lib().gguf_get_n_tensors(ctx))]
    finally:
        lib().gguf_free(ctx)


def inspect(path):
    return json.loads(run("inspect", path, "--json", "--tensors").stdout)


def f16_round(a):
    return np.asarray(a, dtype="<f4").astype("<f2").astype("<f4")


def bf16(a):
    """float32 -> BF16 bits (round to nearest even) and back, as numpy has no bfloat16."""
    u = np.asarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
    return u, (u.astype("<u4") << 16).view("<f4")


class Quantize(TempDirTest):
    def model(self):
        """A small model of an unknown architecture: the generic policy, every 2-D weight
        quantized. Values at several scales, zeros and an outlier row."""
        rng = np.random.default_rng(7)
        a = rng.normal(0, 0.02, (64, 512)).astype("<f4")
        a[3, :] = 0
        a[5, 17] = 40.0
        b = rng.normal(0, 3.0, (32, 256)).astype("<f4")
        c_bits, c = bf16(rng.normal(0, 1e-3, (16, 768)))
        tensors = [("net.a.weight", "F32", [64, 512], a.tobytes()),
                   ("net.a.bias", "F32", [512], rng.normal(0, 1, 512).astype("<f4").tobytes()),
                   ("net.b.weight", "F16", [32, 256], b.astype("<f2").tobytes()),
                   ("net.c.weight", "BF16", [16, 768], c_bits.tobytes())]
        src = self.path("m.safetensors")
        write_safetensors(src, tensors, {"modelspec.title": "unit"})
        values = {"net.a.weight": a, "net.b.weight": b.astype("<f2").astype("<f4"),
                  "net.c.weight": c}
        return src, values

    def check(self, scheme, target, stage, imatrix_ones):
        src, values = self.model()
        out = self.path(f"m-{scheme}-{target}.gguf")
        run("convert", src, "-o", out, "--quant", scheme, "--target", target, "--no-sync", "-q")
        doc = inspect(out)
        ours = {t["name"]: t for t in doc["tensor_list"]}
        seen = ggml_open(out)
        self.assertEqual([s[0] for s in seen], [t["name"] for t in doc["tensor_list"]])
        with open(out, "rb") as f:
            data = f.read()
        quantized = 0
        for name, gtype, offset, size in seen:
            t = ours[name]
            self.assertEqual(GGML_TYPES[t["dtype"]], gtype, name)
            self.assertEqual(t["file_offset"], offset, name)
            if t["dtype"] not in BLOCK:
                continue
            src_vals = values[name]
            if stage == "f16" and name == "net.a.weight":
                src_vals = f16_round(src_vals)  # ComfyUI's first step: F32 -> F16
            want = ggml_quantize(t["dtype"], src_vals, imatrix_ones)
            self.assertEqual(len(want), size, name)
            self.assertEqual(data[offset:offset + size], want, f"{name} ({t['dtype']}) differs")
            quantized += 1
        self.assertEqual(quantized, 3)
        return out, ours

    def test_comfyui_reference_path(self):
        for scheme in ("q8_0", "q6_k", "q5_k_s", "q5_0", "q5_1", "q4_k_m", "q4_0", "q4_1",
                       "q3_k_s", "q2_k"):
            with self.subTest(scheme=scheme):
                self.check(scheme, "comfyui", "f16", False)

    def test_sdcpp_all_ones_importance_path(self):
        for scheme in ("q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_s", "q4_1", "q3_k_m", "q2_k"):
            with self.subTest(scheme=scheme):
                self.check(scheme, "sdcpp", "source", True)

    def test_dequantize_back_to_safetensors(self):
        out, ours = self.check("q4_k_m", "comfyui", "f16", False)
        back = self.path("back.safetensors")
        run("convert", out, "-o", back, "--no-sync", "-q")
        meta, tensors, _ = read_safetensors(back)
        with open(out, "rb") as f:
            data = f.read()
        for name, t in ours.items():
            dtype, shape, raw = tensors[name]
            self.assertEqual(shape, t["shape"], name)
            if t["dtype"] in BLOCK:
                n = int(np.prod(shape))
                size = n // BLOCK[t["dtype"]][0] * BLOCK[t["dtype"]][1]
                want = ggml_dequantize(t["dtype"], data[t["file_offset"]:t["file_offset"] + size],
                                       n)
                self.assertEqual(dtype, "F32")
                self.assertEqual(np.frombuffer(raw, "<f4").tobytes(), want.tobytes(), name)
        self.assertEqual(meta, {"modelspec.title": "unit"})
        # --dtype bf16 rounds the same values.
        back16 = self.path("back16.safetensors")
        run("convert", out, "-o", back16, "--dtype", "bf16", "--no-sync", "-q")
        _, t16, _ = read_safetensors(back16)
        _, t32, _ = read_safetensors(back)
        for name in ("net.a.weight", "net.b.weight"):
            bits, _ = bf16(np.frombuffer(t32[name][2], "<f4"))
            self.assertEqual(t16[name][2], bits.tobytes(), name)


class Sd1Policy(TempDirTest):
    def test_comfyui_sd1_q4_k_s(self):
        src = self.path("sd15.safetensors")
        run("sample", "--layout", "sd15-ldm", "--sparse", "-o", src, "-q", "--no-sync")
        out = self.path("sd15-Q4_K_S.gguf")
        run("convert", src, "-o", out, "--quant", "q4_k_s", "--no-sync", "-q")
        doc = inspect(out)
        self.assertEqual(doc["architecture"], "sd1")  # recognized through the reshape
        kv = {k["key"]: k for k in doc["gguf"]["kv"]}
        self.assertEqual(kv["general.architecture"]["value"], "sd1")
        self.assertEqual(kv["general.file_type"]["value"], 14)
        self.assertEqual(kv["general.quantization_version"]["value"], 2)
        self.assertEqual(kv["comfy.gguf.orig_shape.input_blocks.1.0.in_layers.2.weight"]["values"],
                         [320, 320, 3, 3])
        self.assertEqual(kv["comfy.gguf.orig_shape.input_blocks.1.0.in_layers.2.weight"]["type"],
                         "i32")
        t = {x["name"]: x for x in doc["tensor_list"]}
        self.assertEqual(len(t), 686)  # the UNet alone, prefix stripped
        self.assertEqual(t["input_blocks.1.0.in_layers.2.weight"]["dtype"], "Q4_K")
        self.assertEqual(t["input_blocks.1.0.in_layers.2.weight"]["shape"], [320, 320, 3, 3])
        self.assertEqual(t["input_blocks.0.0.weight"]["dtype"], "F16")      # excluded
        self.assertEqual(t["time_embed.0.weight"]["dtype"], "F16")          # excluded
        self.assertEqual(t["out.2.bias"]["dtype"], "F32")                   # 1-D
        counts = {}
        for x in doc["tensor_list"]:
            counts[x["dtype"]] = counts.get(x["dtype"], 0) + 1
        # Q4_K_S: the first four V projections and the 16 FFN-down layers get Q5_K.
        self.assertEqual(counts["Q5_K"], 20)
        names = [s[0] for s in ggml_open(out)]
        self.assertEqual(len(names), 686)

    def test_sdcpp_keeps_names_and_shapes(self):
        src = self.path("sd15.safetensors")
        run("sample", "--layout", "sd15-ldm", "--sparse", "-o", src, "-q", "--no-sync")
        out = self.path("sd15-q8_0.gguf")
        run("convert", src, "-o", out, "--quant", "q8_0", "--target", "sdcpp", "--no-sync", "-q")
        doc = inspect(out)
        t = {x["name"]: x for x in doc["tensor_list"]}
        self.assertEqual(len(t), 1145)
        conv = t["model.diffusion_model.input_blocks.1.0.in_layers.2.weight"]
        self.assertEqual((conv["dtype"], conv["shape"]), ("F32", [320, 320, 3, 3]))  # ne0 = 3
        lin = t["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"]
        self.assertEqual(lin["dtype"], "Q8_0")
        self.assertEqual(t["model.diffusion_model.input_blocks.1.0.in_layers.2.bias"]["dtype"], "F32")
        self.assertFalse(any(k["key"].startswith("comfy.gguf.orig_shape") for k in doc["gguf"]["kv"]))


# ComfyUI-GGUF's loader maps llama.cpp's T5 names back with these substring replacements,
# applied in this order (its T5_SD_MAP; stable-diffusion.cpp's name conversion does the same).
COMFY_T5_MAP = [("enc.", "encoder."), (".blk.", ".block."), ("token_embd", "shared"),
                ("output_norm", "final_layer_norm"), ("attn_q", "layer.0.SelfAttention.q"),
                ("attn_k", "layer.0.SelfAttention.k"), ("attn_v", "layer.0.SelfAttention.v"),
                ("attn_o", "layer.0.SelfAttention.o"), ("attn_norm", "layer.0.layer_norm"),
                ("attn_rel_b", "layer.0.SelfAttention.relative_attention_bias"),
                ("ffn_up", "layer.1.DenseReluDense.wi_1"), ("ffn_down", "layer.1.DenseReluDense.wo"),
                ("ffn_gate", "layer.1.DenseReluDense.wi_0"), ("ffn_norm", "layer.1.layer_norm")]


class T5Names(TempDirTest):
    def test_llama_cpp_names_both_loaders_map_back(self):
        src = self.path("t5.safetensors")
        run("sample", "--layout", "t5xxl-encoder", "--sparse", "-o", src, "-q", "--no-sync")
        for target in ("comfyui", "sdcpp"):
            with self.subTest(target=target):
                out = self.path(f"t5-{target}.gguf")
                run("convert", src, "-o", out, "--quant", "q8_0", "--target", target, "--no-sync",
                    "-q")
                doc = inspect(out)
                kv = {k["key"]: k for k in doc["gguf"]["kv"]}
                self.assertEqual(kv["general.architecture"]["value"], "t5encoder")
                self.assertEqual(kv["t5encoder.block_count"]["value"], 24)
                self.assertEqual(doc["components"][0]["kind"], "t5xxl")  # recognized
                names = [s[0] for s in ggml_open(out)]
                back = set()
                for n in names:
                    for a, b in COMFY_T5_MAP:
                        n = n.replace(a, b)
                    back.add(n)
                with open(src, "rb") as f:
                    (hl,) = struct.unpack("<Q", f.read(8))
                    original = set(json.loads(f.read(hl))) - {"__metadata__"}
                # One copy of the shared embedding is kept (llama.cpp drops the duplicate).
                self.assertEqual(back, original - {"encoder.embed_tokens.weight"})
                t = {x["name"]: x for x in doc["tensor_list"]}
                # llama-quantize never quantizes the relative position bias; sd.cpp's rules do.
                self.assertEqual(t["enc.blk.0.attn_rel_b.weight"]["dtype"],
                                 "F16" if target == "comfyui" else "Q8_0")
                self.assertEqual(t["enc.blk.3.ffn_gate.weight"]["dtype"], "Q8_0")
                # convert back: the Hugging Face names.
                back_st = self.path(f"t5-{target}.safetensors")
                run("convert", out, "-o", back_st, "--dtype", "f16", "--no-sync", "-q")
                with open(back_st, "rb") as f:
                    (hl,) = struct.unpack("<Q", f.read(8))
                    names_back = set(json.loads(f.read(hl))) - {"__metadata__"}
                self.assertEqual(names_back, original - {"encoder.embed_tokens.weight"})


class Refusals(TempDirTest):
    def test_bad_arguments(self):
        src = self.path("m.safetensors")
        write_safetensors(src, [("a.weight", "F32", [32, 32], bytes(4096))])
        for args, expect in [
                (["-o", self.path("x.gguf")], "needs --quant"),
                (["-o", self.path("x.gguf"), "--quant", "q4_k_x"], "q8_0, q6_k"),
                (["-o", self.path("x.safetensors"), "--quant", "q8_0"], "name the output"),
        ]:
            with self.subTest(args=args):
                p = run("convert", src, *args, check=False)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(expect, p.stderr)
                self.assertEqual(sorted(os.listdir(self.tmp)), ["m.safetensors"])

    def test_lora_refused(self):
        lora = self.path("l.safetensors")
        run("sample", "--layout", "lora-kohya-sd15", "-o", lora, "-q", "--no-sync")
        p = run("convert", lora, "-o", self.path("l.gguf"), "--quant", "q8_0", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("LoRA", p.stderr)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["l.safetensors"])


if __name__ == "__main__":
    unittest.main()
