"""`split DIR -o PARTS` of a diffusers folder: the ComfyUI parts of the single file the folder
converts to, without writing that file.

For each family the folder is written by `convert --to diffusers` from a sparse file of the
published layout whose every tensor starts with its own random bytes; `split` of the folder
must give the same files, byte for byte, as `split` of the single file (each part's names,
dtypes, shapes, data and metadata), so a part built from the wrong folder tensor, a CLIP-G left
in OpenCLIP names, a FLUX projection left cut, or SD2's last text layer lost (it lives in the
folder's extra file) is seen.
Then the refusals: a folder missing a part, --quant (needs a single file), an existing output.
"""
import json
import os
import shutil
import unittest

import numpy as np

from ckpt_testlib import TempDirTest, layout_table, run, write_sparse_safetensors
from test_diffusers_folder import same_file  # compares sparse files on their data ranges

WRITE = ["--no-sync", "--progress", "never"]


def make_input(path, layout, seed):
    rng = np.random.default_rng(seed)
    rows = layout_table(layout)
    data = {}
    for name, dtype, shape in rows:
        if name.endswith("position_ids"):
            data[name] = np.arange(shape[-1], dtype="<i8").reshape(shape).tobytes()
        else:
            data[name] = rng.bytes(32)
    write_sparse_safetensors(path, rows, data, {"format": "pt", "modelspec.title": "Split me"})


def files_under(root):
    out = []
    for d, _, fs in os.walk(root):
        for f in fs:
            out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


class SplitFolder(TempDirTest):
    def check_family(self, layout, seed):
        src = self.path(f"{layout}.safetensors")
        make_input(src, layout, seed)
        folder = self.path(f"{layout}-diffusers")
        run("convert", src, "-o", folder, "--to", "diffusers", *WRITE)
        from_file, from_folder = self.path("from-file"), self.path("from-folder")
        by_file = json.loads(run("split", src, "-o", from_file, "--name", "m", "--json",
                                 *WRITE).stdout)
        p = run("split", folder, "-o", from_folder, "--name", "m", "--json", *WRITE)
        report = json.loads(p.stdout)
        self.assertEqual(files_under(from_file), files_under(from_folder))
        self.assertGreaterEqual(len(files_under(from_file)), 3)
        for rel in files_under(from_file):
            self.assertTrue(same_file(os.path.join(from_file, rel), os.path.join(from_folder, rel)),
                            f"{layout}: {rel} differs")
        self.assertEqual([(o["part"], o["tensors"]) for o in report["outputs"]],
                         [(o["part"], o["tensors"]) for o in by_file["outputs"]])
        self.assertEqual(report["family"], by_file["family"])
        shutil.rmtree(from_file)
        shutil.rmtree(from_folder)

    def test_sd15(self):
        self.check_family("sd15-ldm", 1)

    def test_sd2_keeps_the_last_text_layer_from_the_extra_file(self):
        self.check_family("sd2-ldm", 2)

    def test_sdxl(self):
        self.check_family("sdxl-sgm", 3)

    def test_flux_q_k_v_and_linear1_fused_back(self):
        # The folder's transformer has q/k/v and linear1 cut into rows; its parts must come
        # back fused, as in the single file.
        self.check_family("flux1-dev-comfy-fp8-aio", 6)

    def test_refusals_write_nothing(self):
        src = self.path("sd15.safetensors")
        make_input(src, "sd15-ldm", 5)
        folder = self.path("sd15-diffusers")
        run("convert", src, "-o", folder, "--to", "diffusers", *WRITE)
        out = self.path("parts")
        p = run("split", folder, "-o", out, "--quant", "q8_0", *WRITE, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("single file", p.stderr)
        self.assertFalse(os.path.exists(out))
        run("split", folder, "-o", self.path("first"), "--name", "m", *WRITE)
        p = run("split", folder, "-o", self.path("first"), "--name", "m", *WRITE, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)  # the parts exist: --force replaces them
        shutil.rmtree(os.path.join(folder, "vae"))
        broken = self.path("broken")
        p = run("split", folder, "-o", broken, *WRITE, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("vae", p.stderr)
        self.assertFalse(os.path.exists(broken))


if __name__ == "__main__":
    unittest.main()
