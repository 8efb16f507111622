"""`ckptkit scan` and the malicious-pickle corpus: every file in torch_fixtures.malicious_corpus
would run its payload under plain pickle / torch.load (each payload only creates a canary file;
torch_fixtures.py --verify-payloads proves it, in throwaway subprocesses). ckptkit must name
each dangerous global with its module, name, opcode and absolute byte offset (computed here
independently with pickletools), refuse to convert dangerous files unless --allow-dangerous, and
never run anything: no canary may appear. This test never unpickles a malicious file."""
import json
import os
import pickletools
import subprocess
import tempfile
import time
import unittest
import zipfile

import numpy as np

import torch_fixtures as tf
from ckpt_testlib import BIN, read_safetensors, write_safetensors

# The protocol-2 pickler writes Python 2 module names; the unpickler maps them back.
MODULE_ALIASES = {"__builtin__": {"__builtin__", "builtins"}}


def parse_json(text):
    """The document, or the exception (so that a failure does not print a chained traceback)."""
    try:
        return json.loads(text)
    except ValueError as e:
        return e


def same_module(reported, expected):
    return reported in MODULE_ALIASES.get(expected, {expected})


class ScanTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        root = os.environ.get("CKPTKIT_TEST_TMP")
        if root:
            os.makedirs(root, exist_ok=True)
        cls._cls_tmp = tempfile.TemporaryDirectory(dir=root)
        d = cls._cls_tmp.name
        cls.canary_dir = os.path.join(d, "canary")
        cls.work = os.path.join(d, "work")  # ckptkit's working directory
        cls.out_dir = os.path.join(d, "out")
        for p in (cls.canary_dir, cls.work, cls.out_dir):
            os.makedirs(p)
        cls.cases = tf.malicious_corpus(os.path.join(d, "corpus"), cls.canary_dir)
        cls.by_name = {c.name: c for c in cls.cases}
        cls.safe = tf.safe_controls(os.path.join(d, "safe"))
        st = os.path.join(d, "safe", "model.safetensors")
        write_safetensors(st, [("w", "F32", [2], np.float32([1, 2]).tobytes())])
        cls.safetensors = st
        cls.lightning = os.path.join(d, "lightning.ckpt")
        tf.lightning_checkpoint(cls.lightning)
        cls._scan_cache = {}

    @classmethod
    def tearDownClass(cls):
        cls._cls_tmp.cleanup()

    # --- helpers ---------------------------------------------------------------------------------

    def ck(self, *args):
        return subprocess.run([BIN, *map(str, args)], cwd=self.work, capture_output=True,
                              text=True, timeout=120)

    def assert_no_canary(self, wait=0.0):
        if wait:
            time.sleep(wait)  # Popen payloads would run asynchronously
        found = [f for f in os.listdir(self.canary_dir) if f.startswith("CANARY")]
        stray = os.listdir(self.work)
        self.assertEqual(found, [], "A PAYLOAD RAN: ckptkit executed pickle code")
        self.assertEqual(stray, [], f"something was created in ckptkit's working directory: {stray}")

    def scan_json(self, *paths):
        p = self.ck("scan", *paths, "--json")
        doc = parse_json(p.stdout)
        if isinstance(doc, Exception):
            self.fail(f"scan --json {' '.join(paths)} -> {p.returncode}: invalid JSON ({doc}):\n"
                      f"{p.stdout[:1000]}\n{p.stderr}")
        self.assertIsInstance(doc.get("files"), list, doc)
        return p, doc

    def scan_one(self, path):
        if path not in self._scan_cache:
            p, doc = self.scan_json(path)
            self.assertEqual(len(doc["files"]), 1, doc)
            self._scan_cache[path] = (p, doc["files"][0])
        return self._scan_cache[path]

    def expected_dangerous(self, case):
        """[(entry, offset, opcode, module, name)] from pickletools for case.dangerous."""
        found = tf.file_globals(case.path)
        out = []
        for module, name in case.dangerous:
            if module == "EXT":
                hits = [g for g in found if g[2] == "EXT" and g[4] == name]
            elif module == "STACK_GLOBAL":
                hits = [g for g in found if g[2] == "STACK_GLOBAL" and g[3] is None]
            else:
                hits = [g for g in found if g[3] == module and g[4] == name]
            self.assertTrue(hits, f"fixture error: {case.name} has no {module}.{name}: {found}")
            out += hits
        return out

    def obj_offset(self, case):
        """For the OBJ case: the OBJ opcode's offset (ckptkit may report the call site)."""
        _, base, data = tf.file_pickles(case.path)[0]
        return base + next(pos for op, _, pos in pickletools.genops(data) if op.name == "OBJ")

    def check_schema(self, label, report):
        """The fields the contract promises, with their types and vocabularies."""
        for k in ("path", "format", "verdict", "summary", "globals", "findings", "error"):
            self.assertIn(k, report, f"{label}: no '{k}' in {json.dumps(report)[:500]}")
        self.assertIn(report["verdict"], ("safe", "suspicious", "dangerous"), label)
        for g in report["globals"]:
            for k in ("module", "name", "offset", "entry", "opcode", "category", "reason"):
                self.assertIn(k, g, f"{label}: global without '{k}': {g}")
            self.assertIn(g["opcode"], ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "EXT"), f"{label}: {g}")
            self.assertIn(g["category"], ("allowed", "unknown", "dangerous"), f"{label}: {g}")
            self.assertIsInstance(g["offset"], int, f"{label}: {g}")
            self.assertTrue(0 <= g["offset"] < os.path.getsize(report["path"]), f"{label}: {g}")
        for finding in report["findings"]:
            for k in ("kind", "offset", "entry", "message"):
                self.assertIn(k, finding, f"{label}: finding without '{k}': {finding}")

    def check_reported(self, case, report):
        """Each expected dangerous global is in report["globals"] with the right fields."""
        self.check_schema(case.name, report)
        globs = report.get("globals")
        shown = "\n".join(json.dumps(g) for g in globs)
        for entry, offset, opcode, module, name in self.expected_dangerous(case):
            accept = [(offset, opcode)]
            if case.name == "obj-os-system":
                accept.append((self.obj_offset(case), "OBJ"))
            hits = [g for g in globs if (g.get("offset"), g.get("opcode")) in accept]
            want = f"{module}.{name} ({opcode} at offset {offset}, entry {entry})"
            self.assertTrue(hits, f"{case.name}: {want} not reported; globals:\n{shown}")
            g = hits[0]
            self.assertEqual(g.get("category"), "dangerous", f"{case.name}: {want}: {g}")
            self.assertEqual(g.get("entry"), entry, f"{case.name}: {want}: {g}")
            if module is not None:  # EXT, computed STACK_GLOBAL: names not checked
                self.assertTrue(same_module(g.get("module"), module), f"{case.name}: {want}: {g}")
                self.assertEqual(g.get("name"), name, f"{case.name}: {want}: {g}")
            self.assertIsInstance(g.get("reason"), str, f"{case.name}: {g}")

    def check_tensors(self, out, tensors, label):
        _, got, _ = read_safetensors(out)
        self.assertEqual(sorted(got), sorted(tensors), f"{label}: tensor names")
        for name, t in tensors.items():
            dtype, shape, raw = got[name]
            self.assertEqual((dtype, shape), (tf.ST_NAME[t.dtype], list(t.shape)), f"{label}: {name}")
            self.assertEqual(raw, tf.tensor_bytes(t), f"{label}: {name}: bytes differ")

    def names_in(self, case, text):
        """Each dangerous global's module.name (or its alias) appears in text."""
        for m, n in case.dangerous:
            if m in ("EXT", "STACK_GLOBAL"):
                continue
            spellings = [f"{a}.{n}" for a in MODULE_ALIASES.get(m, {m})]
            self.assertTrue(any(s in text for s in spellings),
                            f"{case.name}: {' or '.join(spellings)} not named in:\n{text}")


class Malicious(ScanTest):
    def test_corpus_is_what_it_claims(self):
        """Guards the fixtures (statically; nothing is unpickled): every expected global is where
        pickletools finds it, torch-based cases are real archives."""
        self.assertGreaterEqual(len(self.cases), 30)
        for c in self.cases:
            with self.subTest(c.name):
                self.expected_dangerous(c)
                if c.tensors:
                    self.assertTrue(zipfile.is_zipfile(c.path) or c.name.startswith("torch-legacy"), c.name)

    def test_scan_json_names_each_dangerous_global(self):
        for c in self.cases:
            with self.subTest(c.name):
                p, f = self.scan_one(c.path)
                self.assertEqual(f.get("path"), c.path)
                if c.verdict == "dangerous":
                    self.assertEqual(f.get("verdict"), "dangerous", f"{c.name}: {json.dumps(f)[:2000]}")
                    self.check_reported(c, f)
                else:  # a pickle inside bytes, never loaded: at least a finding
                    self.assertIn(f.get("verdict"), ("suspicious", "dangerous"), f"{c.name}: {f}")
                    odd = f.get("findings", []) + [g for g in f.get("globals", [])
                                                   if g.get("category") != "allowed"]
                    self.assertTrue(odd, f"{c.name}: the nested pickle is not reported: {f}")
                self.assertEqual(p.returncode, 1, f"{c.name}: scan exit status\n{p.stderr}")
                self.check_schema(c.name, f)
                self.assertIsInstance(f.get("summary"), str)
                self.assertTrue(f["summary"], f"{c.name}: empty summary")
                if not c.malformed:
                    self.assertIsNone(f.get("error"), f"{c.name}: {f.get('error')}")
                if c.tensors and c.name.startswith("torch-legacy"):
                    self.assertEqual(f.get("format"), "torch-legacy", c.name)
                elif c.tensors:
                    self.assertEqual(f.get("format"), "torch-zip", c.name)
        self.assert_no_canary()

    def test_scan_text_output(self):
        for c in self.cases:
            with self.subTest(c.name):
                p = self.ck("scan", c.path)
                self.assertEqual(p.returncode, 1, f"{c.name}: {p.stdout}{p.stderr}")
                lines = p.stdout.splitlines()
                self.assertTrue(lines, f"{c.name}: no output")
                if c.verdict == "dangerous":
                    self.assertEqual(lines[0], f"{c.path}: dangerous", c.name)
                else:
                    self.assertIn(lines[0], (f"{c.path}: suspicious", f"{c.path}: dangerous"), c.name)
                self.assertTrue(all(not line or line[0].isspace() for line in lines[1:]),
                                f"{c.name}: reasons are not indented:\n{p.stdout}")
                self.names_in(c, "\n".join(lines[1:]))
        self.assert_no_canary()

    def test_convert_refuses_dangerous(self):
        for c in self.cases:
            with self.subTest(c.name):
                _, f = self.scan_one(c.path)
                out = os.path.join(self.out_dir, c.name + ".safetensors")
                p = self.ck("convert", c.path, "-o", out, "--no-sync", "--progress", "never")
                if f.get("verdict") == "dangerous":
                    allowed = (1, 2) if c.malformed else (1,)
                    self.assertIn(p.returncode, allowed, f"{c.name}: {p.stderr}")
                    if p.returncode == 1:
                        self.names_in(c, p.stderr)
                    self.assertFalse(os.path.exists(out), f"{c.name}: dangerous file converted")
                elif c.tensors:  # suspicious only: converts
                    self.assertEqual(p.returncode, 0, f"{c.name}: {p.stderr}")
                    self.check_tensors(out, c.tensors, c.name)
                if os.path.exists(out) and f.get("verdict") != "dangerous":
                    os.remove(out)
                self.assertEqual(os.listdir(self.out_dir), [], f"{c.name}: files left behind")
        self.assert_no_canary()

    def test_convert_allow_dangerous(self):
        for c in self.cases:
            with self.subTest(c.name):
                out = os.path.join(self.out_dir, c.name + ".safetensors")
                p = self.ck("convert", c.path, "-o", out, "--allow-dangerous", "--no-sync",
                            "--progress", "never")
                if c.tensors:
                    self.assertEqual(p.returncode, 0, f"{c.name}: {p.stderr}")
                    self.check_tensors(out, c.tensors, c.name)
                    self.names_in(c, p.stderr)  # the report still goes to stderr
                elif p.returncode != 0:
                    self.assertFalse(os.path.exists(out), f"{c.name}: failed but left {out}")
                if os.path.exists(out):
                    os.remove(out)
                self.assertEqual(os.listdir(self.out_dir), [], f"{c.name}: files left behind")
        self.assert_no_canary()

    def test_inspect_reports_the_verdict(self):
        for c in self.cases:
            with self.subTest(c.name):
                p = self.ck("inspect", c.path, "--json", "--tensors")
                if not c.tensors:
                    continue  # bare pickles without tensors: any exit status, but nothing runs
                self.assertEqual(p.returncode, 0, f"{c.name}: {p.stderr}")
                doc = parse_json(p.stdout)
                self.assertIsInstance(doc, dict, f"{c.name}: inspect --json: {doc}")
                _, f = self.scan_one(c.path)
                self.assertEqual(doc.get("scan", {}).get("verdict"), f.get("verdict"), c.name)
                self.assertEqual(sorted(t["name"] for t in doc.get("tensor_list", [])),
                                 sorted(c.tensors), c.name)
        self.assert_no_canary()

    def test_zz_every_command_on_every_file_runs_nothing(self):
        paths = [c.path for c in self.cases]
        self.ck("scan", *paths)
        self.ck("scan", "--json", *paths)
        for c in self.cases:
            self.ck("inspect", c.path)
            self.ck("inspect", c.path, "--json", "--tensors")
            for extra in ([], ["--allow-dangerous"]):
                out = os.path.join(self.out_dir, "x.safetensors")
                self.ck("convert", c.path, "-o", out, "--dtype", "f16", "--force", "--no-sync",
                        "--progress", "never", *extra)
                if os.path.exists(out):
                    os.remove(out)
        self.assert_no_canary(wait=0.5)


class Controls(ScanTest):
    def test_safe_files(self):
        files = [(name, path) for name, (path, _) in sorted(self.safe.items())]
        files.append(("safetensors", self.safetensors))
        for name, path in files:
            with self.subTest(name):
                p, f = self.scan_one(path)
                self.check_schema(name, f)
                self.assertEqual(f.get("verdict"), "safe", f"{name}: {json.dumps(f)[:2000]}")
                self.assertEqual(p.returncode, 0, f"{name}: {p.stderr}")
                bad = [g for g in f.get("globals", []) if g.get("category") != "allowed"]
                self.assertEqual(bad, [], name)
                self.assertIsNone(f.get("error"), name)
                want = ("safetensors" if name == "safetensors" else
                        "torch-legacy" if "legacy" in name else "torch-zip")
                self.assertEqual(f.get("format"), want, name)
                t = self.ck("scan", path)
                self.assertEqual(t.returncode, 0, name)
                self.assertEqual(t.stdout.splitlines()[0], f"{path}: safe", name)

    def test_safe_files_convert(self):
        for name, (path, tensors) in sorted(self.safe.items()):
            with self.subTest(name):
                out = os.path.join(self.out_dir, name + ".safetensors")
                p = self.ck("convert", path, "-o", out, "--no-sync", "--progress", "never")
                self.assertEqual(p.returncode, 0, f"{name}: {p.stderr}")
                self.check_tensors(out, tensors, name)
                os.remove(out)

    def test_lightning_is_suspicious(self):
        p, f = self.scan_one(self.lightning)
        self.assertEqual(f.get("verdict"), "suspicious", json.dumps(f)[:3000])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(f.get("format"), "torch-zip")
        globs = f.get("globals", [])
        self.assertEqual([g for g in globs if g.get("category") == "dangerous"], [])
        found = tf.file_globals(self.lightning)
        for module, name in tf.LIGHTNING_UNKNOWN:
            where = [(e, off, op) for e, off, op, m, n in found if (m, n) == (module, name)]
            self.assertTrue(where, f"fixture error: no {module}.{name}")
            entry, offset, opcode = where[0]
            hits = [g for g in globs if g.get("offset") == offset]
            self.assertTrue(hits, f"{module}.{name} at {offset} not reported: {globs}")
            self.assertEqual((hits[0].get("module"), hits[0].get("name"), hits[0].get("category"),
                              hits[0].get("opcode"), hits[0].get("entry")),
                             (module, name, "unknown", opcode, entry))
        t = self.ck("scan", self.lightning)
        self.assertEqual(t.returncode, 1)
        self.assertEqual(t.stdout.splitlines()[0], f"{self.lightning}: suspicious")
        self.assertIn("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", t.stdout)

    def test_several_files(self):
        safe = [self.safe["safe-zip"][0], self.safe["safe-legacy"][0], self.safetensors]
        p, doc = self.scan_json(*safe)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([f["path"] for f in doc["files"]], safe)
        self.assertEqual([f["verdict"] for f in doc["files"]], ["safe"] * 3)

        bad = self.by_name["posix-system"].path
        p, doc = self.scan_json(safe[0], bad, safe[2])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual([f["verdict"] for f in doc["files"]], ["safe", "dangerous", "safe"])
        t = self.ck("scan", safe[0], bad, self.lightning)
        self.assertEqual(t.returncode, 1)
        firsts = [line for line in t.stdout.splitlines() if line and not line[0].isspace()]
        self.assertEqual(firsts, [f"{safe[0]}: safe", f"{bad}: dangerous",
                                  f"{self.lightning}: suspicious"], t.stdout)

        p = self.ck("scan", safe[0], self.lightning)
        self.assertEqual(p.returncode, 1, "a suspicious file must make scan exit 1")

        missing = os.path.join(self.work, "missing.ckpt")
        for extra in ([], ["--json"]):
            p = self.ck("scan", safe[0], missing, *extra)
            self.assertEqual(p.returncode, 2, f"scan {extra} with a missing file: {p.stdout}{p.stderr}")
            self.assertIn(missing, p.stdout + p.stderr)
        self.assert_no_canary()


if __name__ == "__main__":
    unittest.main()
