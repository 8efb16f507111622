"""The command line as a user meets it: exit codes, one-line errors with path and offset, no
output left behind on bad input or on SIGINT/SIGTERM, --force, --help on every command."""
import json
import os
import signal
import struct
import subprocess
import unittest

from ckpt_testlib import BIN, TempDirTest, read_safetensors, run, write_safetensors

COMMANDS = ["inspect", "convert", "sample"]


def raw_file(path, header_bytes, data=b"", length=None):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes) if length is None else length))
        f.write(header_bytes)
        f.write(data)


def entry(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


class HelpAndUsage(TempDirTest):
    def test_help_lists_every_command(self):
        p = run("--help")
        for c in COMMANDS:
            self.assertIn(c, p.stdout)
        self.assertIn("Exit status", p.stdout)

    def test_every_command_has_help_with_examples(self):
        for c in COMMANDS:
            p = run(c, "--help")
            self.assertIn("Examples:", p.stdout, c)
            self.assertIn("ckptkit " + c, p.stdout, c)

    def test_usage_errors_exit_2(self):
        self.assertEqual(run(check=False).returncode, 2)
        self.assertEqual(run("inspect", check=False).returncode, 2)
        self.assertEqual(run("frobnicate", check=False).returncode, 2)
        p = run("convert", "a", "-o", "b", "--dtype", "f7", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown dtype", p.stderr)

    def test_version(self):
        self.assertIn("ckptkit", run("--version").stdout)


class BadInput(TempDirTest):
    """Each hostile file: exit 2, one line on stderr naming the path, offset and rule, and
    `convert` leaves no output and no temporary behind."""

    def cases(self):
        ok = {"a": entry("F32", [2], 0, 8)}
        yield "truncated", lambda p: raw_file(p, json.dumps(ok).encode(), b"\0" * 5), "truncated"
        yield "lying-length", lambda p: raw_file(p, b"{}", b"", length=1 << 40), "runs past the end"
        yield "overlap", lambda p: raw_file(
            p, json.dumps({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}).encode(),
            b"\0" * 12), "overlaps tensor 'a'"
        yield "gap", lambda p: raw_file(
            p, json.dumps({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}).encode(),
            b"\0" * 12), "gap in the data section"
        yield "shape-overflow", lambda p: raw_file(
            p, json.dumps({"a": entry("F32", [2**40, 2**40], 0, 0)}).encode()), "64 bits"
        yield "duplicate", lambda p: raw_file(
            p, b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
               b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0"), "duplicate key"
        yield "metadata-number", lambda p: raw_file(
            p, b'{"__metadata__":{"steps":1000}}'), "must be a string"
        yield "html", lambda p: open(p, "wb").write(
            b"<!DOCTYPE html><html><body>Access denied</body></html>\n"), "HTML page"
        yield "lfs", lambda p: open(p, "wb").write(
            b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 +
            b"\nsize 4265146304\n"), "Git LFS pointer"
        yield "empty", lambda p: open(p, "wb").close(), "empty file"

    def test_each_bad_file(self):
        for name, make, phrase in self.cases():
            with self.subTest(name):
                src = self.path(name + ".safetensors")
                make(src)
                before = open(src, "rb").read()
                p = run("inspect", src, check=False)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
                lines = p.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, p.stderr)
                self.assertTrue(lines[0].startswith(f"ckptkit: error: {src}:0x"), lines[0])
                self.assertIn(phrase, lines[0])
                out = self.path(name + "-out.safetensors")
                p = run("convert", src, "-o", out, "--dtype", "f16", check=False)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(phrase, p.stderr)
                self.assertEqual(sorted(os.listdir(self.tmp)), sorted(
                    f for f in os.listdir(self.tmp) if not f.startswith(".") and "-out" not in f))
                self.assertEqual(open(src, "rb").read(), before, "input modified")

    def test_missing_file_and_directory(self):
        p = run("inspect", self.path("nope.safetensors"), check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("No such file", p.stderr)
        p = run("inspect", self.tmp, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("directory", p.stderr)

    def test_truncated_real_layout(self):
        src = self.path("lora.safetensors")
        run("sample", "--layout", "lora-peft-sd15", "-o", src, "--no-sync", "-q")
        size = os.path.getsize(src)
        os.truncate(src, size // 2)
        p = run("inspect", src, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("truncated", p.stderr)


class Outputs(TempDirTest):
    def setUp(self):
        super().setUp()
        self.src = self.path("in.safetensors")
        run("sample", "--layout", "lora-peft-sd15", "-o", self.src, "--no-sync", "-q")

    def test_existing_output_needs_force(self):
        out = self.path("out.safetensors")
        open(out, "wb").write(b"precious")
        p = run("convert", self.src, "-o", out, "--dtype", "f16", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--force", p.stderr)
        self.assertEqual(open(out, "rb").read(), b"precious")
        run("convert", self.src, "-o", out, "--dtype", "f16", "--force")
        meta, tensors, _ = read_safetensors(out)
        self.assertTrue(all(t[0] == "F16" for t in tensors.values()))

    def test_refuses_to_overwrite_input_even_with_force(self):
        before = open(self.src, "rb").read()
        p = run("convert", self.src, "-o", self.src, "--force", "--dtype", "f16", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("refusing to overwrite the input", p.stderr)
        self.assertEqual(open(self.src, "rb").read(), before)

    def test_progress_modes(self):
        p = run("convert", self.src, "-o", self.path("a"), "--progress", "always", "--no-sync")
        self.assertIn("100%", p.stderr)
        p = run("convert", self.src, "-o", self.path("b"), "--progress", "never", "--no-sync")
        self.assertNotIn("%", p.stderr)
        p = run("convert", self.src, "-o", self.path("c"), "--no-sync")  # auto: stderr is a pipe
        self.assertNotIn("%", p.stderr)

    def test_inspect_json_fields(self):
        p = run("inspect", self.src, "--json", "--tensors")
        doc = json.loads(p.stdout)
        meta, tensors, header = read_safetensors(self.src)
        self.assertEqual(doc["path"], self.src)
        self.assertEqual(doc["format"], "safetensors")
        self.assertEqual(doc["file_size"], os.path.getsize(self.src))
        self.assertEqual(doc["tensors"], len(tensors))
        params = 0
        for dtype, shape, raw in tensors.values():
            n = 1
            for d in shape:
                n *= d
            params += n
        self.assertEqual(doc["parameters"], params)
        self.assertEqual(doc["metadata"], meta)
        self.assertEqual(sum(d["tensors"] for d in doc["dtypes"].values()), len(tensors))
        listed = {t["name"]: t for t in doc["tensor_list"]}
        self.assertEqual(set(listed), set(tensors))
        for name, (dtype, shape, raw) in tensors.items():
            self.assertEqual(listed[name]["dtype"], dtype)
            self.assertEqual(listed[name]["shape"], shape)
            b, e = listed[name]["data_offsets"]
            self.assertEqual(e - b, len(raw))
            self.assertEqual(listed[name]["file_offset"], 8 + len(header) + b)

    def test_inspect_text(self):
        p = run("inspect", self.src)
        self.assertIn("safetensors", p.stdout)
        self.assertIn("352", p.stdout)  # tensors of the layout
        self.assertIn("ckptkit.sample.layout: lora-peft-sd15", p.stdout)


class Signals(TempDirTest):
    """An interrupted conversion removes its temporary and leaves no output."""

    def interrupt(self, sig):
        src = self.path("big.safetensors")
        if not os.path.exists(src):
            run("sample", "--layout", "lora-kohya-sdxl", "-o", src, "--dtype", "f32",
                "--no-sync", "-q")
        out = self.path("out.safetensors")
        # Held in the middle of the data (CKPTKIT_TEST_HOLD), so the signal always lands there.
        proc = subprocess.Popen([BIN, "convert", src, "-o", out, "--dtype", "bf16",
                                 "--threads", "1", "--max-memory", "4M", "--progress", "never"],
                                stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, CKPTKIT_TEST_HOLD="half"))
        for line in proc.stderr:
            if "test hold at half" in line:
                proc.send_signal(sig)
                break
        proc.wait(timeout=60)
        proc.stderr.close()
        leftovers = [f for f in os.listdir(self.tmp) if f != "big.safetensors"]
        self.assertEqual(proc.returncode, -sig)
        self.assertEqual(leftovers, [])

    def test_sigint(self):
        self.interrupt(signal.SIGINT)

    def test_sigterm(self):
        self.interrupt(signal.SIGTERM)


if __name__ == "__main__":
    unittest.main()
