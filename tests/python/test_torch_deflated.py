"""Torch archives whose entries were re-zipped with deflate (torch itself stores them): ckptkit
inflates the storages once into an unlinked temporary and converts as if they were stored.
Oracle: torch.load of the same archive."""
import os
import struct
import unittest
import zipfile

import torch

from ckpt_testlib import TempDirTest, read_safetensors, run

TORCH_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64"}


def rezip(src, dst, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", compression=compression) as out:
        for name in z.namelist():
            out.writestr(name, z.read(name))


class Deflated(TempDirTest):
    def make(self):
        g = torch.Generator().manual_seed(7)
        big = torch.randn(64, 48, generator=g)
        sd = {
            "w": torch.randn(300, 70, generator=g),           # compresses poorly: real inflate work
            "h": torch.randn(1000, generator=g).half(),
            "b": torch.randn(33, generator=g).bfloat16(),
            "ids": torch.arange(77),
            "zeros": torch.zeros(5000),                         # compresses very well
            "view": big[3:9],
            "t": big.t(),
        }
        src = self.path("stored.ckpt")
        torch.save({"state_dict": sd}, src)
        dst = self.path("deflated.ckpt")
        rezip(src, dst)
        with zipfile.ZipFile(dst) as z:
            methods = {i.compress_type for i in z.infolist()}
        self.assertEqual(methods, {zipfile.ZIP_DEFLATED}, "the fixture must really be deflated")
        return src, dst

    def test_convert_equals_torch_load(self):
        _, dst = self.make()
        loaded = torch.load(dst)["state_dict"]
        out = self.path("out.safetensors")
        run("convert", dst, "-o", out, "--progress", "never", "--no-sync")
        _, tensors, _ = read_safetensors(out)
        self.assertEqual(set(tensors), set(loaded))
        for name, t in loaded.items():
            dtype, shape, raw = tensors[name]
            c = t.contiguous()
            self.assertEqual(dtype, TORCH_NAMES[c.dtype], name)
            self.assertEqual(shape, list(c.shape), name)
            self.assertEqual(raw, c.reshape(-1).view(torch.uint8).numpy().tobytes(), name)
        # Nothing left beside the output: the spill file is unlinked from the start.
        self.assertEqual(sorted(os.listdir(self.tmp)), ["deflated.ckpt", "out.safetensors",
                                                        "stored.ckpt"])

    def test_same_bytes_as_the_stored_archive(self):
        src, dst = self.make()
        a, b = self.path("a.safetensors"), self.path("b.safetensors")
        run("convert", src, "-o", a, "--dtype", "f16", "--progress", "never", "--no-sync")
        run("convert", dst, "-o", b, "--dtype", "f16", "--progress", "never", "--no-sync")
        with open(a, "rb") as fa, open(b, "rb") as fb:
            self.assertEqual(fa.read(), fb.read())

    def test_corrupt_deflate_stream_is_an_error(self):
        _, dst = self.make()
        with zipfile.ZipFile(dst) as z:
            info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
        data = bytearray(open(dst, "rb").read())
        (name_len, extra_len) = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        for k in range(start + 20, start + 60):  # damage the middle of the compressed stream
            data[k] ^= 0x5A
        bad = self.path("bad.ckpt")
        open(bad, "wb").write(bytes(data))
        out = self.path("bad.safetensors")
        p = run("convert", bad, "-o", out, "--progress", "never", check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("data/0", p.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertEqual([f for f in os.listdir(self.tmp) if "ckptkit" in f], [])


if __name__ == "__main__":
    unittest.main()
