"""`ckptkit library index|list|dupes|show|loras`: the index of a models folder agrees with
`ckptkit inspect --json` and `ckptkit hash` on every file, is incremental (touch, rename, delete),
finds duplicate files and shared components, records unreadable files without stopping, keeps
what was committed when interrupted, and refuses a corrupt or newer-schema database."""
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import unittest

from ckpt_testlib import BIN, run
from library_fixtures import XSS_TITLE, XSS_TRIGGER, make_models, sample, shared_tempdir


def lib(*args, check=True):
    return run("library", *args, check=check)


def lib_json(*args):
    return json.loads(lib(*args, "--json").stdout)


class Library(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp, cls.tmp = shared_tempdir()
        cls.models = os.path.join(cls.tmp, "models")
        cls.files = make_models(cls.models)
        cls.db = os.path.join(cls.tmp, "lib.sqlite")
        cls.first = lib("index", cls.models, "--db", cls.db, "--json", check=False)
        cls.rows = {m["path"]: m for m in lib_json("list", "--db", cls.db)["models"]}

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def show(self, path, db=None):
        return lib_json("show", path, "--db", db or self.db)

    def test_summary_and_exit_status(self):
        # Some files cannot be read (a broken link, a file that is not a model): exit 1, the rest
        # is indexed and each problem is named on stderr.
        self.assertEqual(self.first.returncode, 1, self.first.stderr)
        s = json.loads(self.first.stdout)
        self.assertEqual(s["found"], len(self.files) + 2)
        self.assertEqual(s["read"], s["found"])
        self.assertEqual(s["errors"], 2)
        self.assertIn("broken.safetensors: a broken symbolic link", self.first.stderr)
        self.assertIn("notes.bin", self.first.stderr)
        # The hash phase hashed every readable file (the diffusers folder has no single hash).
        self.assertEqual(s["hashed"], len(self.files) - 1)

    def test_rows_agree_with_inspect(self):
        for name, path in self.files.items():
            with self.subTest(name):
                row = self.rows[path]
                self.assertEqual(row["error"], "", row)
                if name == "diffusers":
                    self.assertEqual(row["kind"], "diffusers pipeline")
                    self.assertEqual(row["format"], "diffusers")
                    want = sum(os.path.getsize(os.path.join(dp, f))
                               for dp, _, fs in os.walk(path) for f in fs)
                    self.assertEqual(row["size"], want)
                    self.assertEqual(len(self.show(path)["components"]), 2)
                    continue
                if name == "evil":
                    # Not a state dict, but its scan verdict is recorded all the same.
                    d = self.show(path)
                    self.assertEqual(row["kind"], "unknown")
                    self.assertEqual([x["code"] for x in d["defect_list"]], ["not-a-checkpoint"])
                    scan = json.loads(run("scan", path, "--json", check=False).stdout)
                    scan = scan["files"][0]
                    self.assertEqual(row["scan_verdict"], scan["verdict"])
                    continue
                want = json.loads(run("inspect", path, "--json").stdout)
                d = self.show(path)
                self.assertEqual(d["inspect"], want)  # the stored report is inspect's, verbatim
                self.assertEqual(row["format"], want["format"])
                self.assertEqual(row["architecture"], want["architecture"])
                self.assertEqual(row["size"], want["file_size"])
                self.assertEqual(row["parameters"], want["parameters"])
                self.assertEqual(d["tensors"], want["tensors"])
                self.assertEqual(d["dtypes"], {k: v["tensors"] for k, v in want["dtypes"].items()})
                self.assertEqual([x["code"] for x in d["defect_list"]],
                                 [x["code"] for x in want["defects"]])
                self.assertEqual(row["defects"], len(want["defects"]))
                self.assertEqual(d["evidence"], want["evidence"] if isinstance(want["evidence"], list)
                                 else d["evidence"])
                self.assertEqual(len(d["components"]), len(want["components"]))
                if "scan" in want:
                    self.assertEqual(row["scan_verdict"], want["scan"]["verdict"])
                else:
                    self.assertEqual(row["scan_verdict"], "safe")

    def test_kinds(self):
        kinds = {name: self.rows[p]["kind"] for name, p in self.files.items()}
        self.assertEqual(kinds["sd15"], "checkpoint")
        self.assertEqual(kinds["vae"], "VAE")
        self.assertEqual(kinds["lora_sd15"], "LoRA")
        self.assertEqual(self.rows[self.files["lora_sd15"]]["lora_base"], "sd1")
        self.assertEqual(self.rows[self.files["lora_sdxl"]]["lora_base"], "sdxl")

    def test_hashes_agree_with_hash_command(self):
        for name in ("lora_sd15", "vae", "clean_ckpt", "xss"):
            path = self.files[name]
            with self.subTest(name):
                want = json.loads(run("hash", "--algo", "sha256,autov2,autov3,blake3", "--json",
                                      path).stdout)
                want = want[0] if isinstance(want, list) else want
                got = self.show(path)["hashes"]
                text = json.dumps(want)
                for algo in ("sha256", "autov2", "blake3"):
                    self.assertTrue(got[algo] and got[algo] in text, (algo, got, want))
                if path.endswith(".safetensors"):
                    self.assertTrue(got["autov3"] and got["autov3"] in text)
        with open(self.files["lora_sd15"], "rb") as f:
            self.assertEqual(self.show(self.files["lora_sd15"])["hashes"]["sha256"],
                             hashlib.sha256(f.read()).hexdigest())

    def test_unsafe_files(self):
        evil = self.rows[self.files["evil"]]
        self.assertEqual(evil["scan_verdict"], "dangerous")
        clean = self.rows[self.files["clean_ckpt"]]
        self.assertEqual(clean["scan_verdict"], "safe")
        unsafe = [m["path"] for m in lib_json("list", "--db", self.db, "--unsafe")["models"]]
        self.assertIn(self.files["evil"], unsafe)
        self.assertNotIn(self.files["clean_ckpt"], unsafe)
        self.assertFalse(os.path.exists(os.path.join(self.models, ".canary")) and
                         os.listdir(os.path.join(self.models, ".canary")))

    def test_list_filters(self):
        loras = {m["path"] for m in lib_json("list", "--db", self.db, "--kind", "LoRA")["models"]}
        self.assertEqual(loras, {self.files[k] for k in ("lora_sd15", "lora_sdxl", "lora_copy", "xss")})
        sd1 = [m["path"] for m in lib_json("list", "--db", self.db, "--arch", "sd1")["models"]]
        self.assertEqual(sd1, [self.files["sd15"]])
        found = lib_json("list", "--db", self.db, "--search", "zorblax")["models"]
        self.assertEqual([m["path"] for m in found], [self.files["xss"]])
        self.assertEqual(found[0]["title"], XSS_TITLE)
        self.assertEqual(found[0]["trigger_words"], XSS_TRIGGER)
        st = [m["format"] for m in lib_json("list", "--db", self.db, "--format", "safetensors")["models"]]
        self.assertTrue(st and set(st) == {"safetensors"})
        errors = lib_json("list", "--db", self.db, "--errors")["models"]
        self.assertEqual(len(errors), 2)
        by_size = [m["size"] for m in lib_json("list", "--db", self.db, "--sort", "size", "--desc")["models"]]
        self.assertEqual(by_size, sorted(by_size, reverse=True))
        # Text output names every file.
        text = lib("list", "--db", self.db).stdout
        for p in self.files.values():
            self.assertIn(p, text)
        bad = lib("list", "--db", self.db, "--sort", "nonsense", check=False)
        self.assertEqual(bad.returncode, 2)

    def test_dupes(self):
        d = lib_json("dupes", "--db", self.db)
        groups = [sorted(m["path"] for m in g["members"]) for g in d["files"]]
        self.assertIn(sorted([self.files["lora_sd15"], self.files["lora_copy"]]), groups)
        g = d["files"][groups.index(sorted([self.files["lora_sd15"], self.files["lora_copy"]]))]
        self.assertEqual(g["saved_bytes"], os.path.getsize(self.files["lora_sd15"]))
        self.assertIn("identical files", lib("dupes", "--db", self.db).stdout)

    def test_loras_for(self):
        got = lib_json("loras", "--db", self.db, "--for", self.files["sd15"])
        self.assertEqual(got["family"], "sd1")
        paths = {m["path"] for m in got["loras"]}
        self.assertEqual(paths, {self.files[k] for k in ("lora_sd15", "lora_copy", "xss")})
        # A model that is not in the index is inspected on the spot.
        other = sample("sdxl-sgm", os.path.join(self.tmp, "elsewhere", "sdxl.safetensors"))
        got = lib_json("loras", "--db", self.db, "--for", other)
        self.assertEqual({m["path"] for m in got["loras"]}, {self.files["lora_sdxl"]})

    def test_show_text_and_missing(self):
        out = lib("show", self.files["xss"], "--db", self.db).stdout
        self.assertIn(XSS_TITLE, out)
        p = lib("show", os.path.join(self.tmp, "nope.safetensors"), "--db", self.db, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("not in the library", p.stderr)


class Incremental(unittest.TestCase):
    def setUp(self):
        root = os.environ.get("CKPTKIT_TEST_TMP")
        if root:
            os.makedirs(root, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(dir=root)
        self.tmp = os.path.realpath(self._tmp.name)
        self.dir = os.path.join(self.tmp, "m")
        self.a = sample("lora-kohya-sd15", os.path.join(self.dir, "a.safetensors"), sparse=False)
        self.b = sample("flux1-vae", os.path.join(self.dir, "sub", "b.safetensors"))
        self.db = os.path.join(self.tmp, "lib.sqlite")

    def tearDown(self):
        self._tmp.cleanup()

    def index(self, *extra):
        return lib_json("index", self.dir, "--db", self.db, *extra)

    def paths(self):
        return {m["path"]: m for m in lib_json("list", "--db", self.db)["models"]}

    def test_touch_rename_delete(self):
        s = self.index()
        self.assertEqual((s["found"], s["read"], s["hashed"]), (2, 2, 2))
        s = self.index()
        self.assertEqual((s["read"], s["unchanged"], s["hashed"]), (0, 2, 0))
        # touch: read again (and hashed again)
        st = os.stat(self.a)
        os.utime(self.a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        s = self.index()
        self.assertEqual((s["read"], s["unchanged"], s["hashed"]), (1, 1, 1))
        # rename: the row moves, nothing is read, the hashes stay
        sha = self.paths()[self.a]["sha256"]
        c = os.path.join(self.dir, "renamed.safetensors")
        os.rename(self.a, c)
        s = self.index()
        self.assertEqual((s["read"], s["moved"], s["removed"], s["hashed"]), (0, 1, 0, 0))
        rows = self.paths()
        self.assertNotIn(self.a, rows)
        self.assertEqual(rows[c]["sha256"], sha)
        # delete: the row leaves
        os.unlink(self.b)
        s = self.index()
        self.assertEqual(s["removed"], 1)
        self.assertEqual(set(self.paths()), {c})
        # a file rewritten in place: read again, new facts
        sample("lora-kohya-sdxl", c + ".tmp")
        os.replace(c + ".tmp", c)
        s = self.index()
        self.assertEqual(s["read"], 1)
        self.assertEqual(self.paths()[c]["lora_base"], "sdxl")

    def test_deep_finds_shared_components(self):
        # The same VAE in two files whose bytes differ (metadata): one fingerprint.
        other = os.path.join(self.dir, "sub", "b-titled.safetensors")
        run("meta", self.b, "--set", "modelspec.title=Another name", "-o", other, "-q", "--no-sync")
        self.index("--no-hash")
        d = lib_json("dupes", "--db", self.db)
        self.assertFalse(d["fingerprints_indexed"])
        self.assertEqual(d["components"], [])
        s = self.index("--no-hash", "--deep")
        self.assertEqual(s["read"], 3)  # fingerprints need the tensors: read again
        d = lib_json("dupes", "--db", self.db)
        self.assertTrue(d["fingerprints_indexed"])
        self.assertEqual(len(d["components"]), 1, d)
        g = d["components"][0]
        self.assertEqual(sorted(m["path"] for m in g["members"]), sorted([self.b, other]))
        self.assertEqual(g["saved_bytes"], g["bytes"])
        self.assertGreater(g["bytes"], 300_000_000)
        detail = lib_json("show", other, "--db", self.db)
        self.assertEqual(detail["components"][0]["shared_with"], 1)
        self.assertEqual(len(detail["components"][0]["fingerprint"]), 64)

    def test_nothing_to_do_is_exit_2(self):
        p = lib("index", os.path.join(self.tmp, "missing"), "--db", self.db, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a folder", p.stderr)
        # One missing folder among good ones: the rest is indexed.
        p = lib("index", os.path.join(self.tmp, "missing"), self.dir, "--db", self.db, "--no-hash",
                check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("not a folder", p.stderr)

    def test_corrupt_and_newer_db_refused(self):
        bad = os.path.join(self.tmp, "bad.sqlite")
        with open(bad, "wb") as f:
            f.write(b"this is not a database" * 100)
        for args in (("list", "--db", bad), ("index", self.dir, "--db", bad)):
            p = lib(*args, check=False)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("not an SQLite database", p.stderr)
        with open(bad, "rb") as f:
            self.assertEqual(f.read(22), b"this is not a database")  # left alone
        self.index("--no-hash")
        con = sqlite3.connect(self.db)
        con.execute("PRAGMA user_version=99")
        con.close()
        for args in (("list",), ("index", self.dir), ("dupes",)):
            p = lib(*args, "--db", self.db, check=False)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("newer ckptkit", p.stderr)
        missing = lib("list", "--db", os.path.join(self.tmp, "none.sqlite"), check=False)
        self.assertEqual(missing.returncode, 2)
        self.assertIn("library index", missing.stderr)

    def test_schema(self):
        self.index("--no-hash")
        con = sqlite3.connect(self.db)
        self.assertEqual(con.execute("PRAGMA user_version").fetchone()[0], 2)
        self.assertEqual(con.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        cols = {r[1] for r in con.execute("PRAGMA table_info(models)")}
        for c in ("path", "size", "mtime_ns", "dev", "inode", "format", "kind", "architecture",
                  "variant", "evidence", "dtypes", "parameters", "scan_verdict", "defects",
                  "title", "trigger_words", "lora_base", "sha256", "autov2", "autov3", "blake3"):
            self.assertIn(c, cols)
        con.close()

    V2_INDEXES = {"models_kind", "models_family", "models_summary", "models_search"}

    def indexes(self, con):
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}

    def test_v1_database_migrated(self):
        # A version 1 database (the same tables, without version 2's indexes) is brought to
        # version 2 by the next command that opens it (`list` too), its rows kept.
        self.index("--no-hash")
        before = lib_json("list", "--db", self.db)["models"]
        con = sqlite3.connect(self.db)
        self.assertLessEqual(self.V2_INDEXES, self.indexes(con))
        for name in self.V2_INDEXES:
            con.execute(f"DROP INDEX {name}")
        con.execute("PRAGMA user_version=1")
        con.commit()
        con.close()
        self.assertEqual(lib_json("list", "--db", self.db, "--kind", "lora")["models"],
                         [m for m in before if m["kind"] == "LoRA"])
        s = self.index("--no-hash")
        self.assertEqual(s["read"], 0)  # nothing changed: the rows were kept, not rebuilt
        con = sqlite3.connect(self.db)
        self.assertEqual(con.execute("PRAGMA user_version").fetchone()[0], 2)
        self.assertLessEqual(self.V2_INDEXES, self.indexes(con))
        # The list's filters and counts use them (the whole table was scanned for each before).
        plan = lambda sql, *a: " ".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, a))
        self.assertIn("models_kind", plan("SELECT count(*) FROM models WHERE kind = ?1 COLLATE NOCASE", "lora"))
        fam = "COALESCE(NULLIF(family, ''), NULLIF(architecture, ''), kind, 'unknown')"
        self.assertIn("models_family", plan(f"SELECT id FROM models WHERE {fam} = ?1 COLLATE NOCASE "
                                            "ORDER BY size DESC", "sdxl"))
        self.assertIn("COVERING INDEX models_summary",
                      plan(f"SELECT {fam}, kind, count(*), total(size), sum(error IS NOT NULL), "
                           "sum(sha256 IS NOT NULL), sum(defect_count > 0), sum(scan_verdict "
                           "!= 'safe') FROM models GROUP BY 1, 2"))
        con.close()
        self.assertEqual(lib_json("list", "--db", self.db)["models"], before)

    def test_interrupt_keeps_committed_rows(self):
        big = sample("sdxl-sgm", os.path.join(self.dir, "big.safetensors"))
        p = subprocess.Popen([BIN, "library", "index", self.dir, "--db", self.db],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Wait until the header phase has committed the rows, then interrupt the hashing.
        deadline = time.time() + 30
        n = 0
        while time.time() < deadline and n < 3:
            time.sleep(0.05)
            try:
                con = sqlite3.connect(self.db, timeout=1)
                n = con.execute("SELECT count(*) FROM models").fetchone()[0]
                con.close()
            except sqlite3.Error:
                pass
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        self.assertEqual(n, 3)
        if p.returncode == 2:
            self.assertIn("interrupted", err)
        else:
            self.assertIn(p.returncode, (0,), err)  # it may have finished first
        rows = self.paths()
        self.assertEqual(set(rows), {self.a, self.b, big})
        # The next run finishes the hashes.
        s = self.index()
        self.assertEqual(s["read"], 0)
        self.assertTrue(all(m["sha256"] for m in self.paths().values()))


if __name__ == "__main__":
    unittest.main()
