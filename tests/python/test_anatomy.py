"""Model anatomy: what `inspect` says a file is (architecture, family, variant, layout,
components, defects, candidates), and the commands that reshape files by it (`split`,
`assemble`, `swap`, `prune`).

The oracles are independent of ckptkit's tables: the published layouts (data/layouts/*.tsv,
read here with a few lines of Python), files derived from them by editing names and shapes the
way the real variants differ (inpaint, SSD-1B, SD3.5, FLUX Fill, ...), the Hugging Face and
OpenCLIP definitions of a CLIP text encoder (checked numerically with torch), and torch.load of
.ckpt files written by torch.save.

Every file is full-size but sparse: `ckptkit sample --sparse`, or a header written here plus
ftruncate, so the data section is holes (zeros) except what a test writes into it. ckptkit
copies holes as holes, so splitting and assembling them costs neither time nor disk."""
import collections
import json
import os
import re
import struct
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # `python3 -m unittest tests/python/test_anatomy.py` from the root
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_fixtures as tf  # noqa: E402
from ckpt_testlib import (LAYOUTS, TempDirTest, layout_table, numel, read_safetensors_header,  # noqa: E402
                          run, write_safetensors, write_sparse_safetensors)

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
WRITE = ["--no-sync", "--progress", "never"]

# --- layouts and sparse files ------------------------------------------------------------------


def nbytes(dtype, shape):
    return numel(shape) * ITEMSIZE[dtype]


table = layout_table


def layout_names():
    return sorted(f[:-4] for f in os.listdir(LAYOUTS) if f.endswith(".tsv"))


def write_sparse(path, rows, metadata=None, values=None):
    """A safetensors file with `rows` [(name, dtype, shape)] in that order whose data section is
    a hole, except `values` {name: bytes} and CLIP position_ids (int64 0..N-1 unless given)."""
    values = dict(values or {})
    for name, dtype, shape in rows:
        if name.endswith("position_ids") and dtype == "I64" and name not in values:
            values[name] = np.arange(numel(shape), dtype=np.int64).tobytes()
    for name, raw in values.items():
        dtype, shape = next((d, s) for n, d, s in rows if n == name)
        assert len(raw) == nbytes(dtype, shape), name
    return write_sparse_safetensors(path, rows, values, metadata)


def entries(path):
    """{name: (dtype, shape, [begin, end], absolute offset)} of a safetensors file."""
    h = read_safetensors_header(path)
    base = 8 + h["n"]
    return {name: (dtype, shape, off, base + off[0]) for name, dtype, shape, off in h["entries"]}


def read_at(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def tensor_raw(path, ents, name):
    dtype, shape, (b, e), at = ents[name]
    return read_at(path, at, e - b)


def names_shapes(path):
    return {name: shape for name, (_, shape, _, _) in entries(path).items()}


def table_shapes(layout):
    return {name: shape for name, _, shape in table(layout)}


def without_prefix(rows, prefix, inner=""):
    """Rows under `prefix` with it (and then `inner`, when there) removed."""
    out = []
    for name, dtype, shape in rows:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if inner and rest.startswith(inner):
                rest = rest[len(inner):]
            out.append((rest, dtype, shape))
    return out


def hf_clip_names(layers):
    """The tensor names of a Hugging Face CLIPTextModelWithProjection, from its definition."""
    names = {"text_model.embeddings.token_embedding.weight",
             "text_model.embeddings.position_embedding.weight",
             "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias",
             "text_projection.weight"}
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}."
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                  "self_attn.out_proj", "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
            names.add(p + m + ".weight")
            names.add(p + m + ".bias")
    return names


# --- running ckptkit -----------------------------------------------------------------------------


class Workdir:
    """Sparse samples of every layout, made once for the whole file."""
    _tmp = None
    _made = {}

    @classmethod
    def dir(cls):
        if cls._tmp is None:
            root = os.environ.get("CKPTKIT_TEST_TMP")
            if root:
                os.makedirs(root, exist_ok=True)
            cls._tmp = tempfile.TemporaryDirectory(dir=root)
        return cls._tmp.name

    @classmethod
    def sample(cls, layout):
        if layout not in cls._made:
            path = os.path.join(cls.dir(), f"sample-{layout}.safetensors")
            run("sample", "--layout", layout, "-o", path, "--sparse", "-q", *WRITE)
            cls._made[layout] = path
        return cls._made[layout]

    @classmethod
    def cleanup(cls):
        if cls._tmp is not None:
            cls._tmp.cleanup()
            cls._tmp = None
            cls._made = {}


def tearDownModule():
    Workdir.cleanup()


class AnatomyTest(TempDirTest):
    def ck(self, *args):
        """Runs ckptkit and requires exit 0."""
        p = run(*args, check=False)
        self.assertEqual(p.returncode, 0, f"ckptkit {' '.join(map(str, args))} -> "
                                          f"{p.returncode}\n{p.stderr}")
        return p

    def inspect(self, path):
        p = self.ck("inspect", "--json", path)
        try:
            return json.loads(p.stdout)
        except ValueError as e:
            self.fail(f"inspect --json printed invalid JSON ({e}):\n{p.stdout[:2000]}")

    def split(self, path, out_dir, *extra):
        p = self.ck("split", path, "-o", out_dir, "--json", *WRITE, *extra)
        return json.loads(p.stdout)

    def refused(self, args, rc, reason, outputs):
        """The command exits `rc`, says `reason` (a regex) on stderr and leaves none of
        `outputs`."""
        p = run(*args, check=False)
        self.assertEqual(p.returncode, rc, f"ckptkit {' '.join(map(str, args))}\n{p.stderr}")
        self.assertRegex(p.stderr, reason)
        for o in outputs:
            self.assertFalse(os.path.exists(o), f"{o} was left behind")
        leftovers = [f for f in os.listdir(self.tmp) if "ckptkit-tmp" in f]
        self.assertEqual(leftovers, [], "temporary files left behind")
        return p

    def derived(self, name, rows, metadata=None, values=None):
        return write_sparse(self.path(name + ".safetensors"), rows, metadata, values)

    def assert_detected(self, doc, architecture, family, variant, layout, modelspec=None):
        got = (doc["architecture"], doc["family"], doc["variant"], doc["layout"])
        self.assertEqual(got, (architecture, family, variant, layout),
                         f"decided by {doc['evidence']['decided_by']}; notes "
                         f"{doc['evidence']['notes']}; candidates {doc['candidates']}")
        if modelspec is not None:
            self.assertEqual(doc["modelspec_architecture"], modelspec)
        if architecture != "unknown":
            self.assertIn(doc["evidence"]["confidence"], ("keys", "metadata"))
            self.assertTrue(doc["evidence"]["decided_by"], "no evidence given")

    def component(self, doc, role, kind=None):
        found = [c for c in doc["components"] if c["role"] == role and
                 (kind is None or c["kind"] == kind)]
        have = [(c["role"], c["kind"]) for c in doc["components"]]
        self.assertEqual(len(found), 1, f"{role}/{kind} in {have}")
        return found[0]

    def defect_codes(self, doc):
        return [d["code"] for d in doc["defects"]]


# --- 1. detection -----------------------------------------------------------------------------

# layout: (architecture, family, variant, layout, modelspec architecture). Standalone text
# encoders and VAEs have no family; their variant is their component's detail (PART_DETAIL).
DETECTION = {
    "clip-g": ("clip-g", "", None, "text-encoder", ""),
    "clip-l": ("clip-l", "", None, "text-encoder", ""),
    "flux1-dev-comfy-fp8-aio": ("flux1-dev", "flux", "standard", "monolithic", "flux-1-dev"),
    "flux1-dev-transformer": ("flux1-dev", "flux", "standard", "diffusion-model", "flux-1-dev"),
    "flux1-schnell-transformer": ("flux1-schnell", "flux", "standard", "diffusion-model",
                                  "flux-1-schnell"),
    "flux1-vae": ("vae", "", None, "vae", ""),
    "lora-diffusers-sd15": ("lora", "", "", "lora", "stable-diffusion-v1/lora"),
    "lora-kohya-sd15": ("lora", "", "", "lora", "stable-diffusion-v1/lora"),
    "lora-kohya-sdxl-conv": ("lora", "", "", "lora", "stable-diffusion-xl-v1-base/lora"),
    "lora-kohya-sdxl": ("lora", "", "", "lora", "stable-diffusion-xl-v1-base/lora"),
    "lora-peft-sd15": ("lora", "", "", "lora", "stable-diffusion-v1/lora"),
    "sd15-diffusers-text_encoder": ("clip-l", "", None, "text-encoder", ""),
    "sd15-diffusers-unet": ("sd1", "sd1", "standard", "diffusion-model", "stable-diffusion-v1"),
    "sd15-diffusers-vae-legacy": ("vae", "", None, "vae", ""),
    "sd15-diffusers-vae": ("vae", "", None, "vae", ""),
    "sd15-ldm-ema": ("unknown", "", "", "unknown", ""),
    "sd15-ldm": ("sd1", "sd1", "standard", "monolithic", "stable-diffusion-v1"),
    "sd2-ldm": ("sd2", "sd2", "standard", "monolithic", "stable-diffusion-v2-512"),
    "sd3-medium-notext": ("sd3-medium", "sd3", "standard", "monolithic",
                          "stable-diffusion-v3-medium"),
    "sd3-medium": ("sd3-medium", "sd3", "standard", "monolithic", "stable-diffusion-v3-medium"),
    "sdxl-diffusers-unet": ("sdxl-base", "sdxl", "standard", "diffusion-model",
                            "stable-diffusion-xl-v1-base"),
    "sdxl-refiner-sgm": ("sdxl-refiner", "sdxl-refiner", "standard", "monolithic",
                         "stable-diffusion-xl-v1-refiner"),
    "sdxl-sgm": ("sdxl-base", "sdxl", "standard", "monolithic", "stable-diffusion-xl-v1-base"),
    "t5xxl-encoder": ("t5xxl", "", None, "text-encoder", ""),
}

# Standalone parts: (kind, naming, regexes the component's detail must match).
PART_DETAIL = {
    "clip-g": ("clip-g", "hf", [r"\b32 layers\b", r"\b1280\b"]),
    "clip-l": ("clip-l", "hf", [r"\b12 layers\b", r"\b768\b"]),
    "sd15-diffusers-text_encoder": ("clip-l", "hf", [r"\b12 layers\b", r"\b768\b"]),
    "t5xxl-encoder": ("t5xxl", "hf", [r"\b24 blocks\b", r"\bF16\b"]),
    "flux1-vae": ("vae", "ldm", [r"^16-channel"]),
    "sd15-diffusers-vae": ("vae", "diffusers", [r"^4-channel"]),
    "sd15-diffusers-vae-legacy": ("vae", "diffusers", [r"^4-channel"]),
}

LORA = {  # layout: (format, base)
    "lora-diffusers-sd15": ("diffusers", "sd1"),
    "lora-kohya-sd15": ("kohya", "sd1"),
    "lora-kohya-sdxl-conv": ("kohya", "sdxl"),
    "lora-kohya-sdxl": ("kohya", "sdxl"),
    "lora-peft-sd15": ("peft", "sd1"),
}

# Where each monolithic layout keeps its parts: (role, kind, naming, prefix).
MONOLITHIC_PARTS = {
    "sd15-ldm": [("diffusion_model", "unet", "ldm", "model.diffusion_model."),
                 ("text_encoder", "clip-l", "hf", "cond_stage_model.transformer."),
                 ("vae", "vae", "ldm", "first_stage_model.")],
    "sd2-ldm": [("diffusion_model", "unet", "ldm", "model.diffusion_model."),
                ("text_encoder", "clip-h", "openclip", "cond_stage_model.model."),
                ("vae", "vae", "ldm", "first_stage_model.")],
    "sdxl-sgm": [("diffusion_model", "unet", "ldm", "model.diffusion_model."),
                 ("text_encoder", "clip-l", "hf", "conditioner.embedders.0.transformer."),
                 ("text_encoder", "clip-g", "openclip", "conditioner.embedders.1.model."),
                 ("vae", "vae", "ldm", "first_stage_model.")],
    "sdxl-refiner-sgm": [("diffusion_model", "unet", "ldm", "model.diffusion_model."),
                         ("text_encoder", "clip-g", "openclip", "conditioner.embedders.0.model."),
                         ("vae", "vae", "ldm", "first_stage_model.")],
    "sd3-medium": [("diffusion_model", "mmdit", "ldm", "model.diffusion_model."),
                   ("text_encoder", "clip-l", "hf", "text_encoders.clip_l."),
                   ("text_encoder", "clip-g", "hf", "text_encoders.clip_g."),
                   ("text_encoder", "t5xxl", "hf", "text_encoders.t5xxl."),
                   ("vae", "vae", "ldm", "first_stage_model.")],
    "sd3-medium-notext": [("diffusion_model", "mmdit", "ldm", "model.diffusion_model."),
                          ("vae", "vae", "ldm", "first_stage_model.")],
    "flux1-dev-comfy-fp8-aio": [("diffusion_model", "flux-dit", "bfl", "model.diffusion_model."),
                                ("text_encoder", "clip-l", "hf", "text_encoders.clip_l."),
                                ("text_encoder", "t5xxl", "hf", "text_encoders.t5xxl."),
                                ("vae", "vae", "ldm", "vae.")],
}

# The names of each monolithic layout that belong to no part (training buffers).
PART_PREFIXES = ("model.diffusion_model.", "cond_stage_model.", "conditioner.",
                 "first_stage_model.", "text_encoders.", "vae.")


def training_extras(layout):
    return sorted(n for n, _, _ in table(layout) if not n.startswith(PART_PREFIXES))


def sums(rows):
    dtypes = collections.Counter(d for _, d, _ in rows)
    return (len(rows), sum(numel(s) for _, _, s in rows), sum(nbytes(d, s) for _, d, s in rows),
            dict(dtypes))


def comp_sums(c):
    return (c["tensors"], c["parameters"], c["bytes"], c["dtypes"])


class Detection(AnatomyTest):
    def test_every_published_layout(self):
        self.assertEqual(sorted(DETECTION), layout_names())
        for layout, (arch, family, variant, lay, spec) in DETECTION.items():
            with self.subTest(layout=layout):
                doc = self.inspect(Workdir.sample(layout))
                text = self.ck("inspect", Workdir.sample(layout)).stdout
                self.assertIn(arch if arch != "lora" else "LoRA", text)
                got = (doc["architecture"], doc["family"], doc["layout"],
                       doc["modelspec_architecture"])
                self.assertEqual(got, (arch, family, lay, spec),
                                 f"decided by {doc['evidence']['decided_by']}")
                if variant is not None:
                    self.assertEqual(doc["variant"], variant)
                else:  # a standalone part's variant is its size (docs/cli.md)
                    self.assertEqual(doc["variant"], doc["components"][0]["detail"])
                if arch != "unknown":
                    self.assertEqual(doc["evidence"]["confidence"], "keys")
                rows = table(layout)
                # The components cover every tensor exactly once.
                self.assertEqual(sum(c["tensors"] for c in doc["components"]), len(rows))
                self.assertEqual(sum(c["bytes"] for c in doc["components"]),
                                 sum(nbytes(d, s) for _, d, s in rows))
                self.assertEqual(doc["defects"], [], "a published layout has no defects")
                if layout in PART_DETAIL:
                    kind, naming, patterns = PART_DETAIL[layout]
                    self.assertEqual(len(doc["components"]), 1)
                    c = doc["components"][0]
                    self.assertEqual((c["kind"], c["naming"], c["prefix"]), (kind, naming, ""))
                    self.assertEqual(comp_sums(c), sums(rows))
                    for pat in patterns:
                        self.assertRegex(c["detail"], pat)
                if layout in LORA:
                    fmt, base = LORA[layout]
                    ranks = {s[0] for n, _, s in rows
                             if re.search(r"(lora_down|lora_A|lora\.down)\.weight$", n)}
                    self.assertEqual(len(ranks), 1, ranks)
                    self.assertEqual(doc["lora"], {"format": fmt, "base": base,
                                                   "rank": ranks.pop()})
                else:
                    self.assertNotIn("lora", doc)
                if layout in MONOLITHIC_PARTS:
                    self.check_monolithic(layout, doc, rows)
                if layout == "sd15-ldm-ema":
                    c = self.component(doc, "ema")
                    self.assertEqual(comp_sums(c), sums(rows))
                if lay == "diffusion-model":
                    c = self.component(doc, "diffusion_model")
                    self.assertEqual(comp_sums(c), sums(rows))
                    self.assertEqual(c["prefix"], "")
                    self.assertRegex(c["detail"], r"^4-channel" if "sd" in layout else
                                     r"\b19 double \+ (38) single\b")

    def check_monolithic(self, layout, doc, rows):
        parts = [c for c in doc["components"]
                 if c["role"] in ("diffusion_model", "text_encoder", "vae")]
        self.assertEqual(sorted((c["role"], c["kind"], c["naming"], c["prefix"]) for c in parts),
                         sorted(MONOLITHIC_PARTS[layout]))
        for c in parts:
            mine = [r for r in rows if r[0].startswith(c["prefix"])]
            self.assertEqual(comp_sums(c), sums(mine), c["prefix"])
        extras = training_extras(layout)
        if extras:
            c = self.component(doc, "training_extra")
            self.assertEqual(sorted(c["keys"]), extras)
        else:
            self.assertFalse([c for c in doc["components"] if c["role"] == "training_extra"])
        if layout in ("sd15-ldm", "sd2-ldm", "sdxl-sgm", "sdxl-refiner-sgm"):
            self.assertRegex(self.component(doc, "vae")["detail"], r"^4-channel")
        else:
            self.assertRegex(self.component(doc, "vae")["detail"], r"^16-channel")
        if layout == "sd2-ldm":
            # Epsilon (512-base) and v (768-v) SD2 have the same tensors.
            self.assertTrue(any("v-prediction" in n for n in doc["evidence"]["notes"]),
                            doc["evidence"]["notes"])

    # --- variants made by editing a layout ---------------------------------------------------

    def edited(self, layout, shapes=None, drop=None, add=(), metadata=None, name=None):
        """`layout`'s rows with `shapes` {name: new shape} changed, names matching the regex
        `drop` removed and `add` [(name, dtype, shape)] appended; written sparse."""
        rows = []
        for n, d, s in table(layout):
            if drop and re.search(drop, n):
                continue
            rows.append((n, d, (shapes or {}).get(n, s)))
        rows += list(add)
        return self.derived(name or layout + "-edited", rows, metadata)

    def test_sd1_inpaint_and_instruct_pix2pix(self):
        key = "model.diffusion_model.input_blocks.0.0.weight"
        for channels, variant in ((9, "inpaint"), (8, "instruct-pix2pix")):
            with self.subTest(variant=variant):
                doc = self.inspect(self.edited("sd15-ldm", {key: [320, channels, 3, 3]},
                                               name=variant))
                self.assert_detected(doc, "sd1", "sd1", variant, "monolithic",
                                     "stable-diffusion-v1")
                self.assertTrue(any(key in e and str(channels) in e
                                    for e in doc["evidence"]["decided_by"]),
                                doc["evidence"]["decided_by"])
        doc = self.inspect(self.edited("sd2-ldm", {key: [320, 9, 3, 3]}, name="sd2-inpaint"))
        self.assert_detected(doc, "sd2", "sd2", "inpaint", "monolithic")

    def test_ssd_1b(self):
        drop = (r"^model\.diffusion_model\.(input_blocks\.[78]\.1\.transformer_blocks\.[4-9]\."
                r"|middle_block\.1\.)")
        doc = self.inspect(self.edited("sdxl-sgm", drop=drop, name="ssd-1b"))
        self.assert_detected(doc, "ssd-1b", "sdxl", "standard", "monolithic",
                             "stable-diffusion-xl-v1-base")

    def test_segmind_vega(self):
        drop = (r"^model\.diffusion_model\.input_blocks\.([45]\.1\.transformer_blocks\.[1-9]|"
                r"[78]\.1\.transformer_blocks\.[2-9])\.")
        doc = self.inspect(self.edited("sdxl-sgm", drop=drop, name="vega"))
        self.assert_detected(doc, "segmind-vega", "sdxl", "standard", "monolithic",
                             "stable-diffusion-xl-v1-base")

    def test_playground_25(self):
        add = [("edm_mean", "F32", [1, 4, 1, 1]), ("edm_std", "F32", [1, 4, 1, 1])]
        doc = self.inspect(self.edited("sdxl-sgm", add=add, name="pg25"))
        self.assert_detected(doc, "sdxl-base", "sdxl", "playground-2.5", "monolithic")
        c = self.component(doc, "model_config")
        self.assertEqual(sorted(c["keys"]), ["edm_mean", "edm_std"])
        self.assertNotIn("unknown-keys", self.defect_codes(doc))

    def test_v_prediction_markers(self):
        doc = self.inspect(self.edited("sdxl-sgm", add=[("v_pred", "F32", [0])], name="vpred"))
        self.assert_detected(doc, "sdxl-base", "sdxl", "v-prediction", "monolithic")
        self.assertEqual(self.component(doc, "model_config")["keys"], ["v_pred"])
        doc = self.inspect(self.edited("sdxl-sgm", add=[("v_pred", "F32", [0]),
                                                        ("ztsnr", "F32", [0])], name="vz"))
        self.assert_detected(doc, "sdxl-base", "sdxl", "v-prediction+zero-terminal-snr",
                             "monolithic")

    def test_sd2_prediction_from_metadata(self):
        for meta, variant, spec in (
                ({"modelspec.prediction_type": "v"}, "v-prediction", "stable-diffusion-v2-768-v"),
                ({"modelspec.prediction_type": "epsilon"}, "epsilon-prediction",
                 "stable-diffusion-v2-512")):
            with self.subTest(meta=meta):
                doc = self.inspect(self.edited("sd2-ldm", metadata=meta, name="sd2-" + variant))
                self.assert_detected(doc, "sd2", "sd2", variant, "monolithic", spec)

    def test_flux_fill_depth_canny(self):
        for width, variant in ((384, "fill"), (128, "depth-or-canny"), (64, "standard")):
            with self.subTest(variant=variant):
                doc = self.inspect(self.edited("flux1-dev-transformer",
                                               {"img_in.weight": [3072, width]},
                                               name=f"flux-{width}"))
                self.assert_detected(doc, "flux1-dev", "flux", variant, "diffusion-model",
                                     "flux-1-dev")

    def test_sd35_medium(self):
        p = "model.diffusion_model.joint_blocks."
        add, shapes = [], {}
        for i in range(13):  # MMDiT-X: a second self-attention in the first 13 image blocks
            add += [(f"{p}{i}.x_block.attn2.qkv.weight", "F16", [4608, 1536]),
                    (f"{p}{i}.x_block.attn2.qkv.bias", "F16", [4608]),
                    (f"{p}{i}.x_block.attn2.proj.weight", "F16", [1536, 1536]),
                    (f"{p}{i}.x_block.attn2.proj.bias", "F16", [1536])]
            shapes[f"{p}{i}.x_block.adaLN_modulation.1.weight"] = [13824, 1536]
            shapes[f"{p}{i}.x_block.adaLN_modulation.1.bias"] = [13824]
        doc = self.inspect(self.edited("sd3-medium", shapes, add=add, name="sd35m"))
        self.assert_detected(doc, "sd3.5-medium", "sd3", "standard", "monolithic",
                             "stable-diffusion-v3.5-medium")

    def test_sd35_large(self):
        # 38 joint blocks of width 2432 (64 x depth): blocks 0..22 as in SD3 medium, 23..36
        # copies of a full block, 37 the last (context pre-only) block; every width scaled.
        scale = {1536: 2432, 4608: 7296, 6144: 9728, 9216: 14592, 3072: 4864}
        block = re.compile(r"^model\.diffusion_model\.joint_blocks\.(\d+)\.(.*)$")
        by_block = collections.defaultdict(list)
        rows = []
        for n, d, s in table("sd3-medium"):
            if n.startswith("model.diffusion_model."):
                s = [scale.get(x, x) if not (n.endswith("pos_embed") and i == 1) else x
                     for i, x in enumerate(s)]
                m = block.match(n)
                if m:
                    by_block[int(m.group(1))].append((m.group(2), d, s))
                    continue
            rows.append((n, d, s))
        for i in range(38):
            src = 23 if i == 37 else min(i, 22)
            rows += [(f"model.diffusion_model.joint_blocks.{i}.{rest}", d, s)
                     for rest, d, s in by_block[src]]
        shapes = dict((n, s) for n, _, s in rows)
        self.assertEqual(shapes["model.diffusion_model.x_embedder.proj.weight"], [2432, 16, 2, 2])
        self.assertEqual(shapes["model.diffusion_model.joint_blocks.37.x_block.attn.qkv.weight"],
                         [7296, 2432])
        doc = self.inspect(self.derived("sd35l", rows))
        self.assert_detected(doc, "sd3.5-large", "sd3", "standard", "monolithic",
                             "stable-diffusion-v3.5-large")
        self.assertRegex(self.component(doc, "diffusion_model")["detail"], r"\b38 joint blocks")

    def test_sdxl_turbo_by_metadata_only(self):
        doc = self.inspect(self.edited("sdxl-sgm", metadata={"modelspec.title": "SDXL Turbo"},
                                       name="turbo"))
        self.assert_detected(doc, "sdxl-base", "sdxl", "standard", "monolithic")
        self.assertEqual(doc["distillation"], {"value": "turbo", "confidence": "metadata",
                                               "source": "modelspec.title"})
        doc = self.inspect(self.edited("sdxl-sgm", metadata={"modelspec.title": "My SDXL merge"},
                                       name="plain"))
        self.assertIsNone(doc["distillation"]["value"])
        self.assertNotEqual(doc["distillation"]["confidence"], "metadata")
        self.assertTrue(any("distill" in n.lower() or "turbo" in n.lower()
                            for n in doc["evidence"]["notes"]), doc["evidence"]["notes"])
        for title, word, key in (("SDXL-Lightning 4-step", "lightning", "modelspec.title"),
                                 ("Hyper-SDXL 8steps", "hyper", "modelspec.title"),
                                 ("dreamshaper_xl_lcm", "lcm", "ss_sd_model_name")):
            with self.subTest(title=title):
                doc = self.inspect(self.edited("sdxl-sgm", metadata={key: title}, name=word))
                self.assertEqual(doc["distillation"], {"value": word, "confidence": "metadata",
                                                       "source": key})
        # SD-Turbo (distilled SD 2.1) keeps its sampler's sigmas: the keys say it.
        doc = self.inspect(self.edited("sd2-ldm", add=[("denoiser.sigmas", "F32", [1000])],
                                       name="sd-turbo"))
        self.assert_detected(doc, "sd2", "sd2", "standard", "monolithic")
        self.assertEqual(doc["distillation"], {"value": "turbo", "confidence": "keys",
                                               "source": "denoiser.sigmas"})
        # A word that merely contains "turbo" names nothing.
        doc = self.inspect(self.edited("sdxl-sgm", metadata={"modelspec.title": "turbot fish"},
                                       name="turbot"))
        self.assertIsNone(doc["distillation"]["value"])

    def test_unknown_names(self):
        rng = np.random.default_rng(1)
        rows = [(f"blk{rng.integers(1 << 30)}.w{i}", "F16", [int(rng.integers(1, 64)), 8])
                for i in range(40)]
        doc = self.inspect(self.derived("random", rows))
        self.assertEqual((doc["architecture"], doc["layout"], doc["family"]),
                         ("unknown", "unknown", ""))
        c = self.component(doc, "unknown")
        self.assertEqual(sorted(c["keys"]), sorted(n for n, _, _ in rows))

    def test_unet_with_a_wrong_context_width(self):
        key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
        doc = self.inspect(self.edited("sd15-ldm", {key: [320, 999]}, name="ctx999"))
        self.assertEqual(doc["architecture"], "unknown")
        self.assertEqual(doc["family"], "")
        cands = {c["architecture"]: c for c in doc["candidates"]}
        self.assertIn("sd1", cands, doc["candidates"])
        sd1 = cands["sd1"]
        self.assertIn(key, sd1["why_not"])
        self.assertIn("999", sd1["why_not"])
        self.assertLess(sd1["matched"], sd1["checks"])
        self.assertGreaterEqual(sd1["matched"], 1, "label_emb is absent, as SD1's signature wants")
        # A tensor there with another shape is closer than SDXL-family signatures that hold
        # only because SD1 lacks their blocks: sd1 (or sd2) is the nearest.
        self.assertIn(doc["candidates"][0]["architecture"], ("sd1", "sd2"), doc["candidates"])


# --- 2. components and defects --------------------------------------------------------------


class ComponentsAndDefects(AnatomyTest):
    def test_ema_copy(self):
        rows = table("sd15-ldm") + table("sd15-ldm-ema")
        doc = self.inspect(self.derived("sd15-with-ema", rows))
        self.assert_detected(doc, "sd1", "sd1", "standard", "monolithic")
        ema = self.component(doc, "ema")
        self.assertEqual(ema["tensors"], 686)
        self.assertEqual(ema["prefix"], "model_ema.")
        self.assertEqual(comp_sums(ema), sums(table("sd15-ldm-ema")))
        d = [d for d in doc["defects"] if d["code"] == "ema-duplicate"]
        self.assertEqual(len(d), 1, doc["defects"])
        self.assertIn("686 of 686", d[0]["message"], "every EMA tensor pairs with a UNet tensor")
        # The EMA counters stay training extras, not EMA weights.
        extra = self.component(doc, "training_extra")
        self.assertIn("model_ema.decay", extra["keys"])
        self.assertIn("model_ema.num_updates", extra["keys"])

    def test_missing_vae(self):
        rows = [r for r in table("sd15-ldm") if not r[0].startswith("first_stage_model.")]
        doc = self.inspect(self.derived("no-vae", rows))
        self.assert_detected(doc, "sd1", "sd1", "standard", "monolithic")
        d = [d for d in doc["defects"] if d["code"] == "missing-component"]
        self.assertEqual(len(d), 1, doc["defects"])
        self.assertIn("first_stage_model.", d[0]["message"])
        self.assertIn("VAE", d[0]["message"])
        self.assertFalse([c for c in doc["components"] if c["role"] == "vae"])

    def test_position_ids_float(self):
        key = "cond_stage_model.transformer.text_model.embeddings.position_ids"
        rows = [(n, "F32" if n == key else d, s) for n, d, s in table("sd15-ldm")]
        doc = self.inspect(self.derived("pos-float", rows, values={
            key: np.arange(77, dtype=np.float32).tobytes()}))
        codes = self.defect_codes(doc)
        self.assertIn("position-ids-float", codes)
        self.assertNotIn("position-ids-broken", codes, "0.0 .. 76.0 are the right positions")
        d = next(d for d in doc["defects"] if d["code"] == "position-ids-float")
        self.assertEqual(d["tensors"], [key])
        # A merge's float drift: 75.99998 where 76 belongs.
        vals = np.arange(77, dtype=np.float32)
        vals[76] = np.float32(75.99998)
        doc = self.inspect(self.derived("pos-float-drift", rows, values={key: vals.tobytes()}))
        self.assertIn("position-ids-float", self.defect_codes(doc))
        self.assertIn("position-ids-broken", self.defect_codes(doc))

    def test_position_ids_broken(self):
        key = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"
        vals = np.arange(77, dtype=np.int64)
        vals[40] = 39
        doc = self.inspect(self.derived("pos-broken", table("sdxl-sgm"),
                                        values={key: vals.tobytes()}))
        codes = self.defect_codes(doc)
        self.assertIn("position-ids-broken", codes)
        self.assertNotIn("position-ids-float", codes)
        d = next(d for d in doc["defects"] if d["code"] == "position-ids-broken")
        self.assertEqual(d["tensors"], [key])
        self.assertRegex(d["message"], r"\b40\b")
        # The intact sample has no such defect (its position ids are 0..76).
        self.assertNotIn("position-ids-broken",
                         self.defect_codes(self.inspect(Workdir.sample("sdxl-sgm"))))

    def test_two_diffusion_models(self):
        rows = table("sd15-ldm") + without_prefix(table("sd15-ldm"), "model.diffusion_model.")
        doc = self.inspect(self.derived("two-unets", rows))
        self.assertIn("duplicate-component", self.defect_codes(doc))
        self.assertEqual(doc["layout"], "partial")
        self.assertEqual(len([c for c in doc["components"] if c["role"] == "diffusion_model"]), 2)

    def test_latent_mismatch(self):
        rows = [r for r in table("sdxl-sgm") if not r[0].startswith("first_stage_model.")]
        rows += [("first_stage_model." + n, d, s) for n, d, s in table("flux1-vae")]
        doc = self.inspect(self.derived("sdxl-16ch-vae", rows))
        self.assert_detected(doc, "sdxl-base", "sdxl", "standard", "monolithic")
        self.assertIn("latent-mismatch", self.defect_codes(doc))
        d = next(d for d in doc["defects"] if d["code"] == "latent-mismatch")
        self.assertRegex(d["message"], r"\b16-channel")
        self.assertNotIn("latent-mismatch",
                         self.defect_codes(self.inspect(Workdir.sample("sdxl-sgm"))))

    def test_f32_where_published_files_are_half(self):
        path = self.path("sdxl-f32.safetensors")
        run("sample", "--layout", "sdxl-sgm", "-o", path, "--sparse", "--dtype", "f32", "-q",
            *WRITE)
        doc = self.inspect(path)
        self.assert_detected(doc, "sdxl-base", "sdxl", "standard", "monolithic")
        self.assertIn("f32-unusual", self.defect_codes(doc))
        # SD1.5 was published in F32: nothing unusual there.
        self.assertNotIn("f32-unusual", self.defect_codes(self.inspect(Workdir.sample("sd15-ldm"))))

    def test_unknown_extra_keys(self):
        extra = [("my_merge_tool.alpha", "F32", [4]), ("lyco_extra.weight", "F16", [8, 8])]
        doc = self.inspect(self.derived("extra-keys", table("sd15-ldm") + extra))
        self.assert_detected(doc, "sd1", "sd1", "standard", "monolithic")
        c = self.component(doc, "unknown")
        self.assertEqual(sorted(c["keys"]), sorted(n for n, _, _ in extra))
        self.assertEqual(c["tensors"], 2)
        d = [d for d in doc["defects"] if d["code"] == "unknown-keys"]
        self.assertEqual(len(d), 1)
        self.assertEqual(sorted(d[0]["tensors"]), sorted(n for n, _, _ in extra))


# --- 3. split outputs match the published part layouts ---------------------------------------


class SplitLayouts(AnatomyTest):
    def parts(self, layout, name):
        out = self.path("parts-" + layout)
        report = self.split(Workdir.sample(layout), out, "--name", name)
        paths = {o["part"]: o["path"] for o in report["outputs"]}
        for o in report["outputs"]:
            self.assertTrue(os.path.isfile(o["path"]), o)
            self.assertEqual(o["bytes"], os.path.getsize(o["path"]), o)
            self.assertEqual(o["tensors"], len(entries(o["path"])), o)
        return out, paths, report

    def assert_names_shapes(self, path, want, what):
        got = names_shapes(path)
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        self.assertFalse(missing or extra, f"{what}: missing {missing[:8]} extra {extra[:8]}")
        for n in want:
            self.assertEqual(got[n], want[n], f"{what}: {n}")

    def test_flux_all_in_one(self):
        aio = table("flux1-dev-comfy-fp8-aio")
        out, paths, report = self.parts("flux1-dev-comfy-fp8-aio", "flux1-dev")
        self.assertEqual(report["architecture"], "flux1-dev")
        self.assertEqual(paths, {
            "diffusion_model": os.path.join(out, "diffusion_models", "flux1-dev.safetensors"),
            "clip_l": os.path.join(out, "text_encoders", "flux1-dev-clip_l.safetensors"),
            "t5xxl": os.path.join(out, "text_encoders", "flux1-dev-t5xxl.safetensors"),
            "vae": os.path.join(out, "vae", "flux1-dev-vae.safetensors")})
        self.assertEqual(report["dropped"], [])
        # Names and shapes are the standalone published files'; dtypes are the all-in-one's.
        for part, prefix, inner, want in (
                ("diffusion_model", "model.diffusion_model.", "",
                 table_shapes("flux1-dev-transformer")),
                ("vae", "vae.", "", table_shapes("flux1-vae")),
                ("clip_l", "text_encoders.clip_l.", "transformer.",
                 {**table_shapes("clip-l"), "text_projection.weight": [768, 768],
                  "logit_scale": []}),
                ("t5xxl", "text_encoders.t5xxl.", "transformer.",
                 {**{n: s for n, s in table_shapes("t5xxl-encoder").items()
                     if n != "encoder.embed_tokens.weight"}, "logit_scale": []})):
            with self.subTest(part=part):
                self.assert_names_shapes(paths[part], want, part)
                mine = {n: d for n, d, _ in without_prefix(aio, prefix, inner)}
                got = {n: e[0] for n, e in entries(paths[part]).items()}
                self.assertEqual(got, mine)
        # Each part is what inspect calls it.
        for part, (arch, lay) in {"diffusion_model": ("flux1-dev", "diffusion-model"),
                                  "clip_l": ("clip-l", "text-encoder"),
                                  "t5xxl": ("t5xxl", "text-encoder"),
                                  "vae": ("vae", "vae")}.items():
            with self.subTest(inspect=part):
                doc = self.inspect(paths[part])
                self.assertEqual((doc["architecture"], doc["layout"]), (arch, lay))
                self.assertEqual(doc["defects"], [])
        self.assertRegex(self.component(self.inspect(paths["vae"]), "vae")["detail"],
                         r"^16-channel")

    def test_sd3(self):
        out, paths, report = self.parts("sd3-medium", "sd3")
        self.assertEqual(sorted(paths), ["clip_g", "clip_l", "diffusion_model", "t5xxl", "vae"])
        self.assert_names_shapes(paths["clip_g"], {**table_shapes("clip-g"), "logit_scale": []},
                                 "clip_g")
        self.assert_names_shapes(paths["clip_l"], {**table_shapes("clip-l"), "logit_scale": [],
                                                   "text_projection.weight": [768, 768]}, "clip_l")
        self.assert_names_shapes(paths["t5xxl"], {**table_shapes("t5xxl-encoder"),
                                                  "logit_scale": []}, "t5xxl")
        self.assert_names_shapes(paths["vae"], table_shapes("flux1-vae"), "vae")
        self.assert_names_shapes(paths["diffusion_model"], {
            n: s for n, _, s in without_prefix(table("sd3-medium"), "model.diffusion_model.")},
            "diffusion_model")
        self.assertEqual(report["dropped"], [{"what": "training_extra", "tensors": 1,
                                              "bytes": 4000,
                                              "names": ["model.model_sampling.sigmas"]}])

    def test_sdxl(self):
        sgm = table("sdxl-sgm")
        out, paths, report = self.parts("sdxl-sgm", "sdxl")
        self.assertEqual(sorted(paths), ["clip_g", "clip_l", "diffusion_model", "vae"])
        # OpenCLIP-G converted to Hugging Face names: exactly the published CLIP-G file's
        # names and shapes (plus the logit scale the SGM file carries).
        self.assert_names_shapes(paths["clip_g"], {**table_shapes("clip-g"), "logit_scale": []},
                                 "clip_g")
        self.assertEqual({n: e[0] for n, e in entries(paths["clip_g"]).items()},
                         {**{n: d for n, d, _ in table("clip-g")}, "logit_scale": "F16"})
        self.assertEqual(set(entries(paths["clip_g"])) - {"logit_scale"}, hf_clip_names(32))
        self.assert_names_shapes(paths["clip_l"], {
            **table_shapes("clip-l"), "text_model.embeddings.position_ids": [1, 77]}, "clip_l")
        self.assert_names_shapes(paths["diffusion_model"], {
            n: s for n, _, s in without_prefix(sgm, "model.diffusion_model.")}, "unet")
        self.assert_names_shapes(paths["vae"], {
            n: s for n, _, s in without_prefix(sgm, "first_stage_model.")}, "vae")
        self.assertEqual(report["dropped"], [])
        ents = entries(paths["clip_l"])
        self.assertEqual(ents["text_model.embeddings.position_ids"][0], "I64")
        self.assertEqual(np.frombuffer(tensor_raw(paths["clip_l"], ents,
                                                  "text_model.embeddings.position_ids"),
                                       np.int64).tolist(), list(range(77)))
        doc = self.inspect(paths["clip_g"])
        self.assertEqual((doc["architecture"], doc["layout"]), ("clip-g", "text-encoder"))
        self.assertEqual(self.component(doc, "text_encoder")["naming"], "hf")
        doc = self.inspect(paths["diffusion_model"])
        self.assert_detected(doc, "sdxl-base", "sdxl", "standard", "diffusion-model")

    def test_sd2_clip_h(self):
        out, paths, report = self.parts("sd2-ldm", "sd2")
        self.assertEqual(sorted(paths), ["clip_h", "diffusion_model", "vae"])
        names = set(entries(paths["clip_h"]))
        self.assertEqual(names - {"logit_scale"}, hf_clip_names(24))
        shapes = names_shapes(paths["clip_h"])
        self.assertEqual(shapes["text_model.encoder.layers.0.self_attn.q_proj.weight"],
                         [1024, 1024])
        self.assertEqual(shapes["text_model.encoder.layers.23.self_attn.v_proj.bias"], [1024])
        self.assertEqual(shapes["text_model.embeddings.position_embedding.weight"], [77, 1024])
        doc = self.inspect(paths["clip_h"])
        self.assertEqual((doc["architecture"], doc["layout"]), ("clip-h", "text-encoder"))
        dropped = {d["what"]: d for d in report["dropped"]}
        self.assertEqual(sorted(dropped), ["training_extra"])
        self.assertEqual(sorted(dropped["training_extra"]["names"]), training_extras("sd2-ldm"))


# --- 4. split + assemble gives the file back, byte for byte -----------------------------------

SMALL, EDGE = 64 << 10, 4 << 10
OPENCLIP_FULL = {
    "sd2-ldm": ["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
                "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias",
                "cond_stage_model.model.text_projection"],
    "sdxl-refiner-sgm": [
        "conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_weight",
        "conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_bias",
        "conditioner.embedders.0.model.text_projection"],
    "sdxl-sgm": ["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                 "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_bias",
                 "conditioner.embedders.1.model.text_projection"],
}
ASSEMBLE_FLAGS = {"clip_l": "--clip-l", "clip_g": "--clip-g", "clip_h": "--clip-h",
                  "t5xxl": "--t5xxl", "vae": "--vae"}


def scribble(path, rng, full=()):
    """Writes random bytes into every tensor of the safetensors file at `path`: all of it when
    it is at most 64 KiB or named in `full`, else its first and last 4 KiB. Returns
    {name: [(offset in the tensor, bytes)]}."""
    written = {}
    with open(path, "r+b") as f:
        for name, (dtype, shape, (b, e), at) in entries(path).items():
            size = e - b
            if size == 0:
                continue
            regions = [(0, size)] if size <= SMALL or name in full else \
                [(0, EDGE), (size - EDGE, EDGE)]
            written[name] = []
            for off, length in regions:
                raw = rng.bytes(length)
                f.seek(at + off)
                f.write(raw)
                written[name].append((off, raw))
    return written


class RoundTrip(AnatomyTest):
    def round_trip(self, layout):
        src = self.path(layout + ".safetensors")
        run("sample", "--layout", layout, "-o", src, "--sparse", "-q", *WRITE)
        full = OPENCLIP_FULL.get(layout, [])
        written = scribble(src, np.random.default_rng(sum(map(ord, layout))), full)
        for name in full:
            self.assertEqual(len(written[name]), 1, name)
        orig = entries(src)
        self.assertEqual(set(written), {n for n, e in orig.items() if e[2][1] > e[2][0]})

        report = self.split(src, self.path("parts"), "--name", "m")
        paths = {o["part"]: o["path"] for o in report["outputs"]}
        args = ["assemble", "--diffusion-model", paths.pop("diffusion_model")]
        for part, p in sorted(paths.items()):
            args += [ASSEMBLE_FLAGS[part], p]
        out = self.path("assembled.safetensors")
        self.ck(*args, "-o", out, *WRITE)

        # What split left out is exactly the training buffers, and it says so.
        expected_dropped = training_extras(layout)
        reported = sorted(n for d in report["dropped"] for n in d["names"])
        self.assertEqual(sum(d["tensors"] for d in report["dropped"]), len(expected_dropped))
        self.assertEqual(reported, expected_dropped)
        self.assertTrue(all(d["what"] == "training_extra" for d in report["dropped"]),
                        report["dropped"])

        got = entries(out)
        self.assertEqual(sorted(got), sorted(set(orig) - set(expected_dropped)))
        bad = []
        with open(out, "rb") as f:
            for name in got:
                self.assertEqual(got[name][:2], orig[name][:2], name)
                for off, raw in written.get(name, []):
                    f.seek(got[name][3] + off)
                    if f.read(len(raw)) != raw:
                        bad.append((name, off))
        self.assertEqual(bad, [], f"{len(bad)} regions differ after split + assemble")
        for name in full:  # fully written through the OpenCLIP <-> HF conversion
            self.assertEqual(tensor_raw(out, got, name), tensor_raw(src, orig, name), name)

    def test_sd15_ldm(self):
        self.round_trip("sd15-ldm")

    def test_sd2_ldm(self):
        self.round_trip("sd2-ldm")

    def test_sdxl_sgm(self):
        self.round_trip("sdxl-sgm")

    def test_sdxl_refiner_sgm(self):
        self.round_trip("sdxl-refiner-sgm")

    def test_sd3_medium(self):
        self.round_trip("sd3-medium")

    def test_flux1_dev_all_in_one(self):
        self.round_trip("flux1-dev-comfy-fp8-aio")


class MarkersAndSwaps(AnatomyTest):
    def test_sampling_markers_travel_with_the_diffusion_model(self):
        edm_mean = np.float32([0.5, -0.25, 1.5, 2.0])
        edm_std = np.float32([4.0, 3.5, 3.0, 2.5])
        rows = table("sdxl-sgm") + [("edm_mean", "F32", [1, 4, 1, 1]),
                                    ("edm_std", "F32", [1, 4, 1, 1]), ("v_pred", "F32", [0])]
        src = self.derived("markers", rows, values={"edm_mean": edm_mean.tobytes(),
                                                    "edm_std": edm_std.tobytes()})
        report = self.split(src, self.path("parts"))
        paths = {o["part"]: o["path"] for o in report["outputs"]}
        self.assertEqual(report["dropped"], [])
        for part, p in paths.items():
            has = {"edm_mean", "edm_std", "v_pred"} & set(entries(p))
            self.assertEqual(has, {"edm_mean", "edm_std", "v_pred"} if part == "diffusion_model"
                             else set(), part)
        doc = self.inspect(paths["diffusion_model"])
        self.assert_detected(doc, "sdxl-base", "sdxl", "playground-2.5+v-prediction",
                             "diffusion-model")
        out = self.path("assembled.safetensors")
        self.ck("assemble", "--unet", paths["diffusion_model"], "--clip-l", paths["clip_l"],
                "--clip-g", paths["clip_g"], "--vae", paths["vae"], "-o", out, *WRITE)
        ents = entries(out)
        self.assertEqual(sorted(ents), sorted(n for n, _, _ in rows))
        self.assertEqual(tensor_raw(out, ents, "edm_mean"), edm_mean.tobytes())
        self.assertEqual(tensor_raw(out, ents, "edm_std"), edm_std.tobytes())
        self.assertEqual(ents["v_pred"][:2], ("F32", [0]))
        # prune keeps them too (they are not training extras).
        out = self.path("pruned.safetensors")
        self.ck("prune", src, "-o", out, *WRITE)
        self.assertEqual(sorted(entries(out)), sorted(n for n, _, _ in rows))

    def test_parts_taken_from_monolithic_files(self):
        src = Workdir.sample("sd15-ldm")
        report = self.split(src, self.path("parts"))
        unet = next(o["path"] for o in report["outputs"] if o["part"] == "diffusion_model")
        out = self.path("from-monolithic.safetensors")
        self.ck("assemble", "--unet", unet, "--clip-l", src, "--vae", src, "-o", out, *WRITE)
        want = {n: (d, s) for n, d, s in table("sd15-ldm") if n not in training_extras("sd15-ldm")}
        self.assertEqual({n: (e[0], e[1]) for n, e in entries(out).items()}, want)
        # The diffusion model may come from a monolithic file as well.
        out2 = self.path("from-monolithic-2.safetensors")
        self.ck("assemble", "--unet", src, "--clip-l", src, "--vae", src, "-o", out2, *WRITE)
        self.assertEqual({n: (e[0], e[1]) for n, e in entries(out2).items()}, want)

    def test_swap_the_flux_vae(self):
        src = Workdir.sample("flux1-dev-comfy-fp8-aio")
        out = self.path("swapped.safetensors")
        p = self.ck("swap", src, "--vae", Workdir.sample("flux1-vae"), "-o", out, "--json",
                    *WRITE)
        want = {n: (d, s) for n, d, s in table("flux1-dev-comfy-fp8-aio")
                if not n.startswith("vae.")}
        want.update({"vae." + n: (d, s) for n, d, s in table("flux1-vae")})
        self.assertEqual({n: (e[0], e[1]) for n, e in entries(out).items()}, want)
        dropped = json.loads(p.stdout)["dropped"]
        self.assertEqual([(d["what"], d["tensors"]) for d in dropped], [("replaced_vae", 244)])
        doc = self.inspect(out)
        self.assert_detected(doc, "flux1-dev", "flux", "standard", "monolithic")
        self.assertEqual(self.component(doc, "vae")["dtypes"], {"F32": 244})

    def test_swap_an_hf_clip_g_into_sdxl(self):
        """A Hugging Face CLIP-G file goes into the SGM file as OpenCLIP names: exactly the
        published SDXL file's."""
        src = Workdir.sample("sdxl-sgm")
        out = self.path("swapped.safetensors")
        self.ck("swap", src, "--clip-g", Workdir.sample("clip-g"), "-o", out, *WRITE)
        got = {n: (e[0], e[1]) for n, e in entries(out).items()}
        want = {n: (d, s) for n, d, s in table("sdxl-sgm")}
        scale = "conditioner.embedders.1.model.logit_scale"  # the HF file has none to give
        self.assertEqual({n: v for n, v in got.items() if n != scale},
                         {n: v for n, v in want.items() if n != scale})

    def test_swap_adds_a_part_the_input_lacks(self):
        src = Workdir.sample("sd3-medium-notext")
        out = self.path("with-clip-l.safetensors")
        p = self.ck("swap", src, "--clip-l", Workdir.sample("clip-l"), "-o", out, "--json",
                    *WRITE)
        want = {n: (d, s) for n, d, s in table("sd3-medium-notext")}
        want.update({"text_encoders.clip_l.transformer." + n: (d, s)
                     for n, d, s in table("clip-l")})
        self.assertEqual({n: (e[0], e[1]) for n, e in entries(out).items()}, want)
        self.assertTrue(any("added" in n for n in json.loads(p.stdout)["notes"]))
        doc = self.inspect(out)
        self.assertEqual(self.component(doc, "text_encoder", "clip-l")["prefix"],
                         "text_encoders.clip_l.")


# --- 5. OpenCLIP -> Hugging Face CLIP, numerically --------------------------------------------


class OpenClipNumerics(AnatomyTest):
    def test_clip_g_layer0_attention_and_projection(self):
        src = self.path("sdxl.safetensors")
        run("sample", "--layout", "sdxl-sgm", "-o", src, "--sparse", "-q", *WRITE)
        g = torch.Generator().manual_seed(7)
        p = "conditioner.embedders.1.model."
        blk = p + "transformer.resblocks.0.attn."
        values = {blk + "in_proj_weight": torch.randn(3840, 1280, generator=g) * 0.03,
                  blk + "in_proj_bias": torch.randn(3840, generator=g) * 0.02,
                  blk + "out_proj.weight": torch.randn(1280, 1280, generator=g) * 0.03,
                  blk + "out_proj.bias": torch.randn(1280, generator=g) * 0.02,
                  p + "text_projection": torch.randn(1280, 1280, generator=g) * 0.03}
        values = {k: v.half() for k, v in values.items()}
        ents = entries(src)
        with open(src, "r+b") as f:
            for name, v in values.items():
                self.assertEqual((ents[name][0], ents[name][1]), ("F16", list(v.shape)), name)
                f.seek(ents[name][3])
                f.write(tf.tensor_bytes(v))
        report = self.split(src, self.path("parts"))
        clip_g = next(o["path"] for o in report["outputs"] if o["part"] == "clip_g")
        hents = entries(clip_g)

        def hf(name):
            dtype, shape, _, _ = hents[name]
            self.assertEqual(dtype, "F16", name)
            raw = bytearray(tensor_raw(clip_g, hents, name))
            return torch.frombuffer(raw, dtype=torch.float16).reshape(shape).float()

        mha = torch.nn.MultiheadAttention(1280, 20, batch_first=True)
        mha.load_state_dict({"in_proj_weight": values[blk + "in_proj_weight"].float(),
                             "in_proj_bias": values[blk + "in_proj_bias"].float(),
                             "out_proj.weight": values[blk + "out_proj.weight"].float(),
                             "out_proj.bias": values[blk + "out_proj.bias"].float()})
        x = torch.randn(1, 77, 1280, generator=g)
        with torch.no_grad():
            want, _ = mha(x, x, x, need_weights=False)
            # Hugging Face CLIPAttention: 20 heads of 64, queries scaled by 64 ** -0.5.
            L = "text_model.encoder.layers.0.self_attn."
            q = F.linear(x, hf(L + "q_proj.weight"), hf(L + "q_proj.bias")) * 0.125
            k = F.linear(x, hf(L + "k_proj.weight"), hf(L + "k_proj.bias"))
            v = F.linear(x, hf(L + "v_proj.weight"), hf(L + "v_proj.bias"))

            def heads(t):
                return t.view(1, 77, 20, 64).transpose(1, 2)

            att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2), dim=-1)
            o = (att @ heads(v)).transpose(1, 2).reshape(1, 77, 1280)
            got = F.linear(o, hf(L + "out_proj.weight"), hf(L + "out_proj.bias"))
        self.assertGreater(want.abs().max().item(), 0.05, "the check would be vacuous")
        self.assertTrue(torch.allclose(got, want, atol=1e-3, rtol=1e-3),
                        f"max difference {(got - want).abs().max().item()}")
        pooled = torch.randn(2, 1280, generator=g)
        openclip = pooled @ values[p + "text_projection"].float()
        hf_out = F.linear(pooled, hf("text_projection.weight"))
        self.assertTrue(torch.allclose(openclip, hf_out, atol=1e-4, rtol=1e-4),
                        f"max difference {(openclip - hf_out).abs().max().item()}")
        # The rows of the fused projection are q, k, v in that order, copied exactly.
        w = values[blk + "in_proj_weight"]
        for i, m in enumerate(("q_proj", "k_proj", "v_proj")):
            self.assertEqual(tensor_raw(clip_g, hents, L + m + ".weight"),
                             tf.tensor_bytes(w[i * 1280:(i + 1) * 1280]), m)


# --- 6. .ckpt inputs --------------------------------------------------------------------------

UNET_KEYS = {  # a few real SD1 UNet tensors: what detection needs, at their real shapes
    "input_blocks.0.0.weight": (320, 4, 3, 3), "input_blocks.0.0.bias": (320,),
    "time_embed.0.weight": (1280, 320), "time_embed.0.bias": (1280,),
    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "out.2.weight": (4, 320, 3, 3), "out.2.bias": (4,),
}


def sd1_ckpt_state_dict(seed=3, payload=None):
    """An SD1 .ckpt state dict with real names and shapes (a subset that detection needs),
    an EMA copy, training buffers and a CLIP token embedding stored as a broadcast view (so
    the .ckpt stays small)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return (torch.randn(*shape, generator=g) * scale).half()

    sd = collections.OrderedDict()
    for k, shape in UNET_KEYS.items():
        sd["model.diffusion_model." + k] = r(*shape)
    te = "cond_stage_model.transformer.text_model."
    sd[te + "embeddings.token_embedding.weight"] = r(768).expand(49408, 768)
    sd[te + "embeddings.position_ids"] = torch.arange(77, dtype=torch.int64).unsqueeze(0)
    sd[te + "encoder.layers.11.self_attn.q_proj.weight"] = r(768, 768)
    sd["first_stage_model.decoder.conv_in.weight"] = r(512, 4, 3, 3)
    sd["first_stage_model.decoder.conv_in.bias"] = r(512)
    sd["first_stage_model.encoder.down.0.block.0.conv1.weight"] = r(128, 128, 3, 3)
    for k, shape in UNET_KEYS.items():
        sd["model_ema.diffusion_model" + k.replace(".", "")] = r(*shape)
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(470000, dtype=torch.int32)
    sd["betas"] = torch.linspace(0.00085, 0.012, 1000)
    if payload is not None:
        sd["zz_callback"] = payload
    return sd


UNET_NAMES = {"model.diffusion_model." + k for k in UNET_KEYS}
EMA_NAMES = {"model_ema.diffusion_model" + k.replace(".", "") for k in UNET_KEYS}
EXTRA_NAMES = {"model_ema.decay", "model_ema.num_updates", "betas"}


class CkptInputs(AnatomyTest):
    def setUp(self):
        super().setUp()
        self.ckpt = self.path("sd1-finetune.ckpt")
        tf.save({"state_dict": sd1_ckpt_state_dict(), "global_step": 470000, "epoch": 3},
                self.ckpt)
        self.torch_sd = torch.load(self.ckpt, map_location="cpu")["state_dict"]

    def assert_tensors(self, path, expected):
        """The safetensors file at path holds exactly `expected` {name: torch tensor}, byte for
        byte (views materialized in C order)."""
        ents = entries(path)
        self.assertEqual(sorted(ents), sorted(expected))
        for name, t in expected.items():
            dtype, shape, _, _ = ents[name]
            self.assertEqual((dtype, shape), (tf.ST_NAME[t.dtype], list(t.shape)), name)
            self.assertTrue(tensor_raw(path, ents, name) == tf.tensor_bytes(t), name)
        meta = read_safetensors_header(path)["metadata"]
        self.assertEqual(meta.get("format"), "pt")
        self.assertEqual(meta.get("modelspec.sai_model_spec"), "1.0.0")

    def test_every_command_reads_a_ckpt(self):
        sd = self.torch_sd
        doc = self.inspect(self.ckpt)
        self.assertEqual(doc["format"], "torch-zip")
        self.assertEqual(doc["state_dict_key"], "state_dict")
        self.assert_detected(doc, "sd1", "sd1", "standard", "monolithic", "stable-diffusion-v1")
        self.assertEqual(self.component(doc, "ema")["tensors"], len(EMA_NAMES))
        self.assertIn("ema-duplicate", self.defect_codes(doc))
        self.assertEqual(sorted(self.component(doc, "training_extra")["keys"]),
                         sorted(EXTRA_NAMES))

        # split
        report = self.split(self.ckpt, self.path("parts"))
        paths = {o["part"]: o["path"] for o in report["outputs"]}
        self.assertEqual(sorted(paths), ["clip_l", "diffusion_model", "vae"])
        self.assertEqual(paths["diffusion_model"],
                         os.path.join(self.path("parts"), "diffusion_models",
                                      "sd1-finetune.safetensors"))
        dropped = {d["what"]: d for d in report["dropped"]}
        self.assertEqual(sorted(dropped), ["ema", "training_extra"])
        self.assertEqual(sorted(dropped["ema"]["names"]), sorted(EMA_NAMES))
        self.assertEqual(sorted(dropped["training_extra"]["names"]), sorted(EXTRA_NAMES))

        def part(prefix):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

        self.assert_tensors(paths["diffusion_model"], part("model.diffusion_model."))
        self.assert_tensors(paths["clip_l"], part("cond_stage_model.transformer."))
        self.assert_tensors(paths["vae"], part("first_stage_model."))

        # assemble the parts back
        out = self.path("assembled.safetensors")
        self.ck("assemble", "--diffusion-model", paths["diffusion_model"], "--clip-l",
                paths["clip_l"], "--vae", paths["vae"], "-o", out, *WRITE)
        models = {k: v for k, v in sd.items() if k not in EMA_NAMES | EXTRA_NAMES}
        self.assert_tensors(out, models)
        self.assertEqual(self.inspect(out)["architecture"], "sd1")
        os.remove(out)
        for p in paths.values():
            os.remove(p)

        # swap the VAE of the .ckpt
        g = torch.Generator().manual_seed(11)
        new_vae = {"decoder.conv_in.weight": torch.randn(512, 4, 3, 3, generator=g).half(),
                   "decoder.conv_in.bias": torch.randn(512, generator=g).half(),
                   "encoder.down.0.block.0.conv1.weight":
                       torch.randn(128, 128, 3, 3, generator=g).half()}
        vae_file = self.path("other-vae.safetensors")
        write_safetensors(vae_file, [(k, "F16", list(v.shape), tf.tensor_bytes(v))
                                     for k, v in new_vae.items()])
        out = self.path("swapped.safetensors")
        self.ck("swap", self.ckpt, "--vae", vae_file, "-o", out, *WRITE)
        swapped = {k: v for k, v in sd.items() if not k.startswith("first_stage_model.")}
        swapped.update({"first_stage_model." + k: v for k, v in new_vae.items()})
        self.assert_tensors(out, swapped)
        os.remove(out)

        # prune, keeping the EMA weights in place of the model's
        out = self.path("pruned.safetensors")
        p = self.ck("prune", self.ckpt, "-o", out, "--ema", "use", "--json", *WRITE)
        pruned = dict(models)
        for k in UNET_KEYS:
            ema = sd["model_ema.diffusion_model" + k.replace(".", "")]
            pruned["model.diffusion_model." + k] = ema
        self.assert_tensors(out, pruned)
        rep = json.loads(p.stdout)
        self.assertEqual(sorted(n for d in rep["dropped"] for n in d["names"]),
                         sorted(EMA_NAMES | EXTRA_NAMES))
        # --ema keep --keep-training-extras keeps every tensor as it was.
        os.remove(out)
        self.ck("prune", self.ckpt, "-o", out, "--ema", "keep", "--keep-training-extras", *WRITE)
        self.assert_tensors(out, sd)

    def test_ckpt_position_ids_read_from_the_storage(self):
        sd = sd1_ckpt_state_dict()
        key = "cond_stage_model.transformer.text_model.embeddings.position_ids"
        # Floats, in a view 5 elements into its storage: values 0..76, so not broken.
        sd[key] = torch.arange(-5, 77, dtype=torch.float32)[5:].unsqueeze(0)
        path = self.path("pos-view.ckpt")
        tf.save(sd, path)
        codes = self.defect_codes(self.inspect(path))
        self.assertIn("position-ids-float", codes)
        self.assertNotIn("position-ids-broken", codes)
        sd[key] = torch.arange(77, dtype=torch.int64).unsqueeze(0).clone()
        sd[key][0, 60] = 59
        tf.save(sd, path)
        codes = self.defect_codes(self.inspect(path))
        self.assertIn("position-ids-broken", codes)
        self.assertNotIn("position-ids-float", codes)

    def test_prune_ckpt_to_f16(self):
        out = self.path("f16.safetensors")
        self.ck("prune", self.ckpt, "-o", out, "--ema", "keep", "--keep-training-extras",
                "--dtype", "f16", *WRITE)
        want = {k: (v.half() if v.is_floating_point() else v) for k, v in self.torch_sd.items()}
        self.assert_tensors(out, want)

    def test_dangerous_ckpt_is_refused(self):
        canary = tf.canary_path(self.tmp, "anatomy-split")
        bad = self.path("bad.ckpt")
        tf.save({"state_dict": sd1_ckpt_state_dict(
            payload=tf._Reduce(os.system, ("touch " + canary,)))}, bad)
        out_dir = self.path("parts")
        for args, outputs in ((["split", bad, "-o", out_dir], [out_dir]),
                              (["prune", bad, "-o", self.path("p.safetensors")],
                               [self.path("p.safetensors")]),
                              (["assemble", "--diffusion-model", bad, "-o",
                                self.path("a.safetensors"), "--allow-missing"],
                               [self.path("a.safetensors")])):
            with self.subTest(command=args[0]):
                self.refused(args + WRITE, 1, r"(?i)dangerous|would run code", outputs)
        self.assertFalse(os.path.exists(canary), "A PAYLOAD RAN")
        # With --allow-dangerous only the tensors are taken (and still nothing runs).
        report = self.split(bad, out_dir, "--allow-dangerous")
        self.assertEqual(sorted(o["part"] for o in report["outputs"]),
                         ["clip_l", "diffusion_model", "vae"])
        self.assertFalse(os.path.exists(canary), "A PAYLOAD RAN")


# --- 7. refusals ------------------------------------------------------------------------------


class Refusals(AnatomyTest):
    def sd1_parts(self):
        report = self.split(Workdir.sample("sd15-ldm"), self.path("sd1"))
        return {o["part"]: o["path"] for o in report["outputs"]}

    def test_assemble_sd1_with_clip_g(self):
        parts = self.sd1_parts()
        out = self.path("out.safetensors")
        self.refused(["assemble", "--diffusion-model", parts["diffusion_model"], "--clip-l",
                      parts["clip_l"], "--vae", parts["vae"], "--clip-g",
                      Workdir.sample("clip-g"), "-o", out, *WRITE],
                     2, r"CLIP-G", [out])

    def test_assemble_flux_with_a_4_channel_vae(self):
        parts = self.sd1_parts()
        out = self.path("out.safetensors")
        p = self.refused(["assemble", "--diffusion-model", Workdir.sample("flux1-dev-transformer"),
                          "--vae", parts["vae"], "-o", out, *WRITE], 2, r"\b4-channel", [out])
        self.assertRegex(p.stderr, r"\b16-channel")

    def test_assemble_with_a_vae_file_that_holds_no_vae(self):
        parts = self.sd1_parts()
        out = self.path("out.safetensors")
        p = self.refused(["assemble", "--diffusion-model", parts["diffusion_model"], "--clip-l",
                          parts["clip_l"], "--vae", Workdir.sample("clip-l"), "-o", out, *WRITE],
                         2, r"no VAE", [out])
        self.assertIn("clip-l", p.stderr)

    def test_assemble_with_a_missing_part(self):
        parts = self.sd1_parts()
        out = self.path("out.safetensors")
        self.refused(["assemble", "--diffusion-model", parts["diffusion_model"], "--clip-l",
                      parts["clip_l"], "-o", out, *WRITE], 2, r"--vae", [out])
        self.ck("assemble", "--diffusion-model", parts["diffusion_model"], "--clip-l",
                parts["clip_l"], "-o", out, "--allow-missing", *WRITE)
        doc = self.inspect(out)
        self.assertIn("missing-component", self.defect_codes(doc))

    def test_assemble_a_diffusers_unet(self):
        out = self.path("out.safetensors")
        self.refused(["assemble", "--unet", Workdir.sample("sd15-diffusers-unet"), "--clip-l",
                      Workdir.sample("clip-l"), "--vae", Workdir.sample("sd15-ldm"), "-o", out,
                      *WRITE], 2, r"diffusers", [out])

    def test_split_refuses_to_overwrite(self):
        out = self.path("parts")
        self.split(Workdir.sample("sd15-ldm"), out)
        vae = os.path.join(out, "vae", "sample-sd15-ldm-vae.safetensors")
        unet = os.path.join(out, "diffusion_models", "sample-sd15-ldm.safetensors")
        os.remove(unet)
        with open(vae, "wb") as f:
            f.write(b"mine")
        p = run("split", Workdir.sample("sd15-ldm"), "-o", out, *WRITE, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("exists", p.stderr)
        self.assertFalse(os.path.exists(unet), "split wrote a part before refusing")
        with open(vae, "rb") as f:
            self.assertEqual(f.read(), b"mine")

    def test_split_a_lora(self):
        out = self.path("lora-parts")
        self.refused(["split", Workdir.sample("lora-kohya-sdxl"), "-o", out, *WRITE], 2,
                     r"LoRA", [out])

    def test_split_an_unknown_file(self):
        # A UNet whose output layer is missing: no kind signature holds, the UNet's comes close.
        rows = [r for r in without_prefix(table("sd15-ldm"), "model.diffusion_model.")
                if not r[0].startswith("out.2.")]
        src = self.derived("almost-unet", rows)
        doc = self.inspect(src)
        self.assertEqual(doc["architecture"], "unknown")
        self.assertTrue(doc["candidates"], "no candidates for a UNet missing one layer")
        self.assertIn("out.2.weight", doc["candidates"][0]["why_not"])
        out = self.path("unknown-parts")
        p = self.refused(["split", src, "-o", out, *WRITE], 2, r"(?i)nearest", [out])
        self.assertIn("out.2.weight", p.stderr)
        # Random names: nothing comes close, and it says so.
        src = self.derived("random", [("a.b", "F16", [4]), ("c.d", "F32", [2, 2])])
        self.refused(["split", src, "-o", out, *WRITE], 2, r"(?i)not recognized", [out])

    def test_split_a_monolithic_file_of_unknown_architecture(self):
        # An SD1 file whose UNet reads a 999-wide context: its parts have known kinds, but the
        # architecture is unknown, so split refuses (docs/cli.md: "Refused, before anything is
        # written: an unknown architecture (the report names the nearest candidates and why
        # they did not match)") and names the nearest candidate and the tensor that ruled it
        # out. Its parts could get no modelspec.architecture anyway.
        key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
        src = self.derived("ctx999", [(n, d, [320, 999] if n == key else s)
                                      for n, d, s in table("sd15-ldm")])
        self.assertEqual(self.inspect(src)["architecture"], "unknown")
        out = self.path("unknown-parts")
        p = self.refused(["split", src, "-o", out, *WRITE], 2, r"(?i)nearest", [out])
        self.assertIn("sd1", p.stderr)
        self.assertIn(key, p.stderr)

    def test_split_a_file_with_two_of_one_part(self):
        # An SD3 file whose clip_g slot holds a second CLIP-L.
        rows = [r for r in table("sd3-medium") if not r[0].startswith("text_encoders.clip_g.")]
        rows += [("text_encoders.clip_g.transformer." + n, d, s) for n, d, s in table("clip-l")]
        src = self.derived("two-clip-l", rows)
        out = self.path("parts")
        self.refused(["split", src, "-o", out, *WRITE], 2, r"(?i)two", [out])

    def test_swap_has_no_diffusion_model_option(self):
        help_text = self.ck("swap", "--help").stdout
        self.assertNotIn("--diffusion-model", help_text)
        self.assertNotIn("--unet", help_text)
        out = self.path("out.safetensors")
        self.refused(["swap", Workdir.sample("sd15-ldm"), "--diffusion-model",
                      Workdir.sample("sd15-ldm"), "-o", out, *WRITE], 2, r"diffusion-model",
                     [out])
        self.refused(["swap", Workdir.sample("sd15-ldm"), "-o", out, *WRITE], 2,
                     r"(?i)nothing to swap", [out])

    def test_swap_into_a_lora(self):
        out = self.path("out.safetensors")
        self.refused(["swap", Workdir.sample("lora-kohya-sd15"), "--vae",
                      Workdir.sample("sd15-diffusers-vae"), "-o", out, *WRITE], 2, r"LoRA",
                     [out])

    def test_prune_ema_use_without_ema(self):
        out = self.path("out.safetensors")
        self.refused(["prune", Workdir.sample("sd15-ldm"), "-o", out, "--ema", "use", *WRITE],
                     2, r"(?i)no EMA", [out])

    def test_prune_of_an_ema_only_file_writes_nothing(self):
        # Dropping the EMA of a file that is only an EMA copy would leave a file with no
        # tensors; it is refused, and --ema keep still copies it.
        src = Workdir.sample("sd15-ldm-ema")
        out = self.path("out.safetensors")
        self.refused(["prune", src, "-o", out, *WRITE], 2, r"only an EMA copy \(686 tensors",
                     [out])
        self.ck("prune", src, "-o", out, "--ema", "keep", *WRITE)
        self.assertEqual(self.inspect(out)["tensors"], 686)


# --- 8. metadata ------------------------------------------------------------------------------

SGM = "https://github.com/Stability-AI/generative-models"


class Metadata(AnatomyTest):
    def test_modelspec_of_parts_and_wholes(self):
        meta = {"modelspec.author": "A. Author", "modelspec.title": "My SDXL",
                "sshs_model_hash": "0123abcd", "modelspec.hash_sha256": "0x" + "ab" * 32,
                "ss_output_name": "my_sdxl", "modelspec.license": "openrail++"}
        src = write_sparse(self.path("mysdxl.safetensors"), table("sdxl-sgm"), meta)
        report = self.split(src, self.path("parts"))
        paths = {o["part"]: o["path"] for o in report["outputs"]}
        base = "stable-diffusion-xl-v1-base"
        want = {"diffusion_model": (base, "My SDXL"),
                "clip_l": (base + "/clip-l", "My SDXL (CLIP-L)"),
                "clip_g": (base + "/clip-g", "My SDXL (CLIP-G)"),
                "vae": (base + "/vae", "My SDXL (VAE)")}
        self.assertEqual(sorted(paths), sorted(want))
        for part, (arch, title) in want.items():
            with self.subTest(part=part):
                m = read_safetensors_header(paths[part])["metadata"]
                self.assertEqual(m.get("modelspec.sai_model_spec"), "1.0.0")
                self.assertEqual(m.get("modelspec.architecture"), arch)
                self.assertEqual(m.get("modelspec.implementation"), SGM)
                self.assertEqual(m.get("modelspec.title"), title)
                self.assertEqual(m.get("modelspec.author"), "A. Author")
                self.assertEqual(m.get("modelspec.license"), "openrail++")
                self.assertNotIn("sshs_model_hash", m)
                self.assertNotIn("modelspec.hash_sha256", m)
                if part == "diffusion_model":  # the trained network keeps its training keys
                    self.assertEqual(m.get("ss_output_name"), "my_sdxl")
                else:
                    self.assertNotIn("ss_output_name", m, "a training key describes no encoder")
                self.assertNotIn("format", m, "a safetensors input is not PyTorch-derived")

        out = self.path("assembled.safetensors")
        self.ck("assemble", "--diffusion-model", paths["diffusion_model"], "--clip-l",
                paths["clip_l"], "--clip-g", paths["clip_g"], "--vae", paths["vae"], "-o", out,
                "--title", "Reassembled", *WRITE)
        m = read_safetensors_header(out)["metadata"]
        self.assertEqual((m.get("modelspec.sai_model_spec"), m.get("modelspec.architecture"),
                          m.get("modelspec.implementation"), m.get("modelspec.title"),
                          m.get("modelspec.author")),
                         ("1.0.0", base, SGM, "Reassembled", "A. Author"))

        out = self.path("pruned.safetensors")
        self.ck("prune", src, "-o", out, *WRITE)
        m = read_safetensors_header(out)["metadata"]
        self.assertEqual((m.get("modelspec.sai_model_spec"), m.get("modelspec.architecture"),
                          m.get("modelspec.implementation"), m.get("modelspec.title"),
                          m.get("modelspec.author"), m.get("ss_output_name")),
                         ("1.0.0", base, SGM, "My SDXL", "A. Author", "my_sdxl"))
        self.assertNotIn("sshs_model_hash", m)
        self.assertNotIn("modelspec.hash_sha256", m)

    def test_flux_and_sd1_architecture_ids(self):
        for layout, arch, impl, parts in (
                ("flux1-dev-comfy-fp8-aio", "flux-1-dev",
                 "https://github.com/black-forest-labs/flux", ("clip_l", "t5xxl", "vae")),
                ("sd3-medium", "stable-diffusion-v3-medium",
                 "https://github.com/Stability-AI/sd3.5", ("clip_l", "clip_g", "t5xxl", "vae")),
                ("sd2-ldm", "stable-diffusion-v2-512", SGM, ("clip_h", "vae")),
                ("sd15-ldm", "stable-diffusion-v1", SGM, ("clip_l", "vae"))):
            with self.subTest(layout=layout):
                report = self.split(Workdir.sample(layout), self.path("p-" + layout))
                paths = {o["part"]: o["path"] for o in report["outputs"]}
                self.assertEqual(sorted(paths), sorted(("diffusion_model",) + parts))
                m = read_safetensors_header(paths["diffusion_model"])["metadata"]
                self.assertEqual(m.get("modelspec.architecture"), arch)
                self.assertEqual(m.get("modelspec.implementation"), impl)
                self.assertEqual(m.get("modelspec.title"), "sample-" + layout)
                self.assertEqual(m.get("ckptkit.sample.layout"), layout, "input metadata kept")
                for part in parts:
                    m = read_safetensors_header(paths[part])["metadata"]
                    self.assertEqual(m.get("modelspec.architecture"),
                                     f"{arch}/{part.replace('_', '-')}")
                    self.assertEqual(m.get("modelspec.implementation"), impl)


# --- 9. diffusers folders ---------------------------------------------------------------------


class DiffusersFolder(AnatomyTest):
    def test_sdxl_pipeline_folder(self):
        root = self.path("sdxl-diffusers")
        os.makedirs(os.path.join(root, "unet"))
        os.makedirs(os.path.join(root, "vae"))
        index = {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.25.0",
                 "unet": ["diffusers", "UNet2DConditionModel"],
                 "vae": ["diffusers", "AutoencoderKL"],
                 "text_encoder": ["transformers", "CLIPTextModel"],
                 "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                 "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                 "tokenizer": ["transformers", "CLIPTokenizer"]}
        with open(os.path.join(root, "model_index.json"), "w") as f:
            json.dump(index, f)
        weights = os.path.join(root, "unet", "diffusion_pytorch_model.safetensors")
        run("sample", "--layout", "sdxl-diffusers-unet", "-o", weights, "--sparse", "-q", *WRITE)
        doc = self.inspect(root)
        self.assertEqual(doc["format"], "diffusers-folder")
        self.assertEqual(doc["pipeline"], "StableDiffusionXLPipeline")
        self.assertEqual(doc["architecture"], "sdxl-base")
        parts = {p["name"]: p for p in doc["parts"]}
        self.assertEqual(sorted(parts), sorted(k for k in index if not k.startswith("_")))
        self.assertEqual(parts["unet"]["files"], ["diffusion_pytorch_model.safetensors"])
        self.assertEqual((parts["unet"]["library"], parts["unet"]["class"]),
                         ("diffusers", "UNet2DConditionModel"))
        self.assertEqual(parts["unet"]["bytes"], os.path.getsize(weights))
        self.assertEqual(parts["vae"]["files"], [])
        self.assertEqual(parts["text_encoder_2"]["class"], "CLIPTextModelWithProjection")
        # The weight file on its own is the SDXL UNet in diffusers names.
        doc = self.inspect(weights)
        self.assert_detected(doc, "sdxl-base", "sdxl", "standard", "diffusion-model")
        self.assertEqual(self.component(doc, "diffusion_model")["naming"], "diffusers")

    def test_a_directory_without_model_index(self):
        d = self.path("plain-dir")
        os.makedirs(d)
        p = run("inspect", "--json", d, check=False)
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("model_index.json", p.stderr)


if __name__ == "__main__":
    unittest.main()
