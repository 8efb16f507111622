"""Outputs that survive anything (issue 12): every writing command killed with SIGKILL early,
in the middle and at the final link leaves the destination folder exactly as it was; a full
disk, a read-only folder and other refusals fail before the work and leave nothing; two
writers racing for one path give one complete file; named temporaries (a file system without
O_TMPFILE) left by a killed process are removed by the next run, and live ones are not.

The kill points are reached deterministically: CKPTKIT_TEST_HOLD=POINT makes ckptkit say
"test hold at POINT" on stderr and sleep there, and the test kills it then."""
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import tempfile
import unittest

from ckpt_testlib import (BIN, TempDirTest, layout_table, read_safetensors, run,
                          write_safetensors, write_sparse_safetensors)

QUIET = ["--progress", "never", "--no-sync"]
SMALL = ["--threads", "1", "--max-memory", "4M"]  # several chunks even for a few MB


def listing(folder):
    """Every path under `folder` (hidden ones too), with sizes, for before/after comparison."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder) + "/"] = None
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = os.path.getsize(p)
    return out


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                return h.hexdigest()
            h.update(b)


def random_model(path, seed, mib=6):
    """A small real (not sparse) safetensors file of F32 tensors with random values."""
    rng = random.Random(seed)
    tensors = []
    per = mib * (1 << 20) // 4 // 4
    for i in range(4):
        raw = struct.pack(f"<{per}f", *(rng.uniform(-2, 2) for _ in range(per)))
        tensors.append((f"model.layer{i}.weight", "F32", [per // 64, 64], raw))
    write_safetensors(path, tensors, {"title": f"random {seed}"})
    return path


def start_held(args, point, env_extra=None):
    """Starts ckptkit with CKPTKIT_TEST_HOLD=point and returns (process, stderr read so far)
    once it reports the hold; the process then sleeps there until signalled. The stderr seen
    ends without the hold line when the process ended on its own."""
    env = dict(os.environ, CKPTKIT_TEST_HOLD=point, **(env_extra or {}))
    proc = subprocess.Popen([BIN, *map(str, args)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"test hold at {point}" in line:
            break
    return proc, "".join(seen)


def hold_and_kill(args, point, env_extra=None):
    """Runs ckptkit held at `point` (start_held), kills it with SIGKILL there. Returns the
    stderr read so far; fails if the process ends on its own."""
    proc, seen = start_held(args, point, env_extra)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    proc.stderr.close()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"{args} did not reach hold point {point} (exit {proc.returncode}):"
                             f" {seen}")
    return seen


class Fixture(TempDirTest):
    """Inputs in self.inputs/, outputs written into self.out/ (compared before and after)."""

    def setUp(self):
        super().setUp()
        self.mounts = []
        self.inputs = self.path("in")
        self.out = self.path("out")
        os.makedirs(self.inputs)
        os.makedirs(self.out)

    def tearDown(self):
        for m in reversed(self.mounts):
            subprocess.run(["umount", m], check=True)
        super().tearDown()

    def input(self, name):
        return os.path.join(self.inputs, name)

    def sparse_sample(self, layout, name=None):
        p = self.input((name or layout) + ".safetensors")
        if not os.path.exists(p):
            run("sample", "--layout", layout, "--sparse", "--dtype", "f16", "-o", p, "-q", *QUIET)
        return p

    def assert_killed_cleanly(self, args, points=("created", "half", "link"), env=None):
        """For each point: kill there, and the output folder holds exactly what it held."""
        for point in points:
            with self.subTest(point=point):
                before = listing(self.out)
                hold_and_kill(args, point, env)
                self.assertEqual(listing(self.out), before, f"debris after SIGKILL at {point}")


class KillEveryWriter(Fixture):
    def test_convert(self):
        src = random_model(self.input("a.safetensors"), 1)
        self.assert_killed_cleanly(["convert", src, "-o", os.path.join(self.out, "a16.safetensors"),
                                    "--dtype", "f16", *SMALL, *QUIET])

    def test_convert_with_sync(self):
        # The default (durable) path: fsync and sync_file_range on the way.
        src = random_model(self.input("a.safetensors"), 2)
        self.assert_killed_cleanly(["convert", src, "-o", os.path.join(self.out, "a16.safetensors"),
                                    "--dtype", "bf16", *SMALL, "--progress", "never"])

    def test_merge(self):
        a = self.sparse_sample("sd15-ldm", "a")
        b = self.input("b.safetensors")
        run("sample", "--layout", "sd15-ldm", "--sparse", "--dtype", "f16", "--seed", "7", "-o", b,
            "-q", *QUIET)
        self.assert_killed_cleanly(["merge", a, b, "--alpha", "0.3", "-o",
                                    os.path.join(self.out, "ab.safetensors"), *SMALL, *QUIET])

    def test_split_into_new_folder(self):
        src = self.sparse_sample("sdxl-sgm")
        target = os.path.join(self.out, "models")
        self.assert_killed_cleanly(["split", src, "-o", target, *SMALL, *QUIET],
                                   points=("created", "half", "link"))
        self.assertFalse(os.path.exists(target))

    def test_split_into_existing_folders(self):
        src = self.sparse_sample("sd15-ldm")
        for d in ("diffusion_models", "text_encoders", "vae"):
            os.makedirs(os.path.join(self.out, d))
        with open(os.path.join(self.out, "vae", "mine.safetensors"), "wb") as f:
            f.write(b"not touched")
        self.assert_killed_cleanly(["split", src, "-o", self.out, *SMALL, *QUIET])

    def test_assemble(self):
        src = self.sparse_sample("sd15-ldm")
        parts = self.path("parts")
        run("split", src, "-o", parts, "-q", *QUIET)
        args = ["assemble", "--diffusion-model",
                os.path.join(parts, "diffusion_models", "sd15-ldm.safetensors"),
                "--clip-l", os.path.join(parts, "text_encoders", "sd15-ldm-clip_l.safetensors"),
                "--vae", os.path.join(parts, "vae", "sd15-ldm-vae.safetensors"),
                "-o", os.path.join(self.out, "whole.safetensors"), *SMALL, *QUIET]
        self.assert_killed_cleanly(args)
        run(*args)  # and the same command, not killed, completes
        self.assertIn("whole.safetensors", os.listdir(self.out))

    def test_prune(self):
        src = write_sparse_safetensors(self.input("ema.safetensors"),
                                       layout_table("sd15-ldm") + layout_table("sd15-ldm-ema"), {})
        self.assert_killed_cleanly(["prune", src, "-o", os.path.join(self.out, "p.safetensors"),
                                    *SMALL, *QUIET])

    def test_meta_and_sample(self):
        src = random_model(self.input("a.safetensors"), 3)
        self.assert_killed_cleanly(["meta", src, "--set", "k=v", "-o",
                                    os.path.join(self.out, "m.safetensors"), *QUIET],
                                   points=("created", "link"))
        self.assert_killed_cleanly(["sample", "--layout", "clip-l", "-o",
                                    os.path.join(self.out, "s.safetensors"), *SMALL, *QUIET])


class ReplacingAnOutput(Fixture):
    def test_kill_keeps_the_old_file(self):
        src = random_model(self.input("a.safetensors"), 4)
        dest = os.path.join(self.out, "a.safetensors")
        with open(dest, "wb") as f:
            f.write(b"the previous version")
        self.assert_killed_cleanly(["convert", src, "-o", dest, "--dtype", "f16", "--force",
                                    *SMALL, *QUIET])
        with open(dest, "rb") as f:
            self.assertEqual(f.read(), b"the previous version")

    def test_kill_between_link_and_rename(self):
        """--force links the finished file under a private name, then renames it over the old
        one. Killed between the two (microseconds in real life), the old file is intact and the
        private name is the only debris, removed by the next run that writes there."""
        src = random_model(self.input("a.safetensors"), 5)
        dest = os.path.join(self.out, "a.safetensors")
        with open(dest, "wb") as f:
            f.write(b"old")
        hold_and_kill(["convert", src, "-o", dest, "--dtype", "f16", "--force", *QUIET], "rename")
        with open(dest, "rb") as f:
            self.assertEqual(f.read(), b"old")
        stale = [f for f in os.listdir(self.out) if ".ckptkit-tmp-" in f]
        self.assertEqual(len(stale), 1, os.listdir(self.out))
        run("convert", src, "-o", os.path.join(self.out, "other.safetensors"), *QUIET)
        self.assertEqual(sorted(os.listdir(self.out)), ["a.safetensors", "other.safetensors"])

    def test_complete_replacement(self):
        src = random_model(self.input("a.safetensors"), 6)
        dest = os.path.join(self.out, "a.safetensors")
        with open(dest, "wb") as f:
            f.write(b"old")
        run("convert", src, "-o", dest, "--dtype", "f16", "--force", *QUIET)
        _, tensors, _ = read_safetensors(dest)
        self.assertEqual({t[0] for t in tensors.values()}, {"F16"})
        self.assertEqual(os.listdir(self.out), ["a.safetensors"])


class FolderStaging(Fixture):
    def test_new_folder_appears_whole(self):
        src = self.sparse_sample("sd15-ldm")
        target = os.path.join(self.out, "comfy")
        run("split", src, "-o", target, *QUIET)
        self.assertEqual(sorted(k for k in listing(target)),
                         ["diffusion_models/", "diffusion_models/sd15-ldm.safetensors",
                          "text_encoders/", "text_encoders/sd15-ldm-clip_l.safetensors",
                          "vae/", "vae/sd15-ldm-vae.safetensors"])

    def test_kill_with_the_staging_folder_built(self):
        """Killed after the staging folder is complete but before its rename: the destination
        does not exist, and the staging folder (the only debris) goes with the next run."""
        src = self.sparse_sample("sd15-ldm")
        target = os.path.join(self.out, "comfy")
        hold_and_kill(["split", src, "-o", target, *QUIET], "staged")
        self.assertFalse(os.path.exists(target))
        stale = [f for f in os.listdir(self.out) if f.startswith(".comfy.ckptkit-tmp-")]
        self.assertEqual(len(stale), 1, os.listdir(self.out))
        run("split", src, "-o", target, *QUIET)
        self.assertEqual(sorted(os.listdir(self.out)), ["comfy"])
        self.assertEqual(len(listing(target)), 6)

    def test_existing_folder_files_appear_one_by_one_each_whole(self):
        """Into folders that exist, the files are linked one after another at the end: killed
        between two links, what is there is complete (equal to an uninterrupted run's file)."""
        src = self.sparse_sample("sd15-ldm")
        ref = self.path("ref")
        run("split", src, "-o", ref, *QUIET)
        for d in ("diffusion_models", "text_encoders", "vae"):
            os.makedirs(os.path.join(self.out, d))
        hold_and_kill(["split", src, "-o", self.out, *QUIET], "linked-one")
        present = [k for k, v in listing(self.out).items() if v is not None]
        self.assertEqual(len(present), 1, present)
        self.assertEqual(digest(os.path.join(self.out, present[0])),
                         digest(os.path.join(ref, present[0])))

    def test_existing_part_needs_force(self):
        src = self.sparse_sample("sd15-ldm")
        run("split", src, "-o", self.out, *QUIET)
        before = listing(self.out)
        p = run("split", src, "-o", self.out, *QUIET, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("already exists", p.stderr)
        self.assertEqual(listing(self.out), before)
        run("split", src, "-o", self.out, "--force", *QUIET)
        self.assertEqual(listing(self.out), before)


class Refusals(Fixture):
    def refuse(self, args, expect):
        before = listing(self.tmp)
        p = run(*args, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(expect, p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)  # one line
        self.assertEqual(listing(self.tmp), before)
        return p.stderr

    def test_output_is_a_directory(self):
        src = random_model(self.input("a.safetensors"), 7, mib=1)
        self.refuse(["convert", src, "-o", self.out, "--force"], "is a folder")

    def test_output_folder_missing(self):
        src = random_model(self.input("a.safetensors"), 8, mib=1)
        err = self.refuse(["convert", src, "-o", os.path.join(self.out, "no", "x.safetensors")],
                          "does not exist")
        self.assertIn(os.path.join(self.out, "no"), err)

    def test_split_output_is_a_file(self):
        src = self.sparse_sample("sd15-ldm")
        f = os.path.join(self.out, "file")
        with open(f, "w") as fh:
            fh.write("x")
        self.refuse(["split", src, "-o", f], "is not a folder")


def mount_tmpfs(test, path, options):
    """Mounts a tmpfs for one test (unmounted in Fixture.tearDown). CI runs as root."""
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        test.skipTest(f"cannot mount a tmpfs here (needs root): {p.stderr.strip()}")
    test.mounts.append(path)


class SmallDisk(Fixture):
    """A 3 MiB tmpfs: a 6 MiB output cannot fit."""

    def setUp(self):
        super().setUp()
        self.disk = self.path("disk")
        mount_tmpfs(self, self.disk, "size=3m")
        self.src = random_model(self.input("a.safetensors"), 9)

    def test_full_disk_is_found_before_the_work(self):
        p = run("convert", self.src, "-o", os.path.join(self.disk, "a.safetensors"), *QUIET,
                check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("not enough space for the output: it needs 6.29 MB", p.stderr)
        self.assertIn("free", p.stderr)
        self.assertEqual(os.listdir(self.disk), [])

    def test_full_disk_in_the_middle(self):
        # As on a file system that cannot reserve space: the write fails part way.
        env = dict(os.environ, CKPTKIT_TEST_FS="no-reserve")
        p = run("convert", self.src, "-o", os.path.join(self.disk, "a.safetensors"), *QUIET,
                *SMALL, check=False, env=env)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("the disk is full", p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
        self.assertEqual(os.listdir(self.disk), [])
        # Nothing held: the whole tmpfs is free again.
        st = os.statvfs(self.disk)
        self.assertEqual(st.f_bfree, st.f_blocks)

    def test_full_disk_without_o_tmpfile(self):
        env = dict(os.environ, CKPTKIT_TEST_FS="no-reserve,no-tmpfile")
        p = run("convert", self.src, "-o", os.path.join(self.disk, "a.safetensors"), *QUIET,
                *SMALL, check=False, env=env)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("the disk is full", p.stderr)
        self.assertEqual(os.listdir(self.disk), [])

    def test_split_too_big(self):
        # A sparse model writes little more than its headers, so its parts fit; give it 8 MiB
        # of real data (one part then needs that much) and they do not.
        src = self.sparse_sample("sd15-ldm")
        run("split", src, "-o", os.path.join(self.disk, "ok"), *QUIET)
        shutil.rmtree(os.path.join(self.disk, "ok"))
        with open(src, "r+b") as f:
            f.seek(100 << 20)
            f.write(os.urandom(8 << 20))
        p = run("split", src, "-o", os.path.join(self.disk, "parts"), *QUIET, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("not enough space", p.stderr)
        self.assertEqual(os.listdir(self.disk), [])


class OtherFileSystems(Fixture):
    def test_read_only_folder(self):
        ro = self.path("ro")
        mount_tmpfs(self, ro, "size=1m,ro")
        src = random_model(self.input("a.safetensors"), 11, mib=1)
        p = run("convert", src, "-o", os.path.join(ro, "a.safetensors"), check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot write into the output folder", p.stderr)
        self.assertIn("Read-only file system", p.stderr)
        p = run("split", self.sparse_sample("clip-l"), "-o", os.path.join(ro, "x"), check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("Read-only file system", p.stderr)

    def test_output_on_another_file_system(self):
        other = self.path("other")
        mount_tmpfs(self, other, "size=64m")
        src = random_model(self.input("a.safetensors"), 12)
        dest = os.path.join(other, "a16.safetensors")
        self.out = other
        self.assert_killed_cleanly(["convert", src, "-o", dest, "--dtype", "f16", *SMALL, *QUIET])
        run("convert", src, "-o", dest, "--dtype", "f16", *QUIET)
        ref = self.path("ref.safetensors")
        run("convert", src, "-o", ref, "--dtype", "f16", *QUIET)
        self.assertEqual(digest(dest), digest(ref))
        self.assertEqual(os.listdir(other), ["a16.safetensors"])


class Race(Fixture):
    """Two writers of one path, both held just before their link so that they overlap."""

    def start(self, src, dest, dtype, *extra):
        env = dict(os.environ, CKPTKIT_TEST_HOLD="link:1")
        return subprocess.Popen([BIN, "convert", src, "-o", dest, "--dtype", dtype, *extra, *QUIET],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)

    def test_two_writers_with_force_both_finish(self):
        src = random_model(self.input("a.safetensors"), 13)
        dest = os.path.join(self.out, "x.safetensors")
        refs = {}
        for dt in ("f16", "bf16"):
            refs[dt] = self.path(f"ref-{dt}.safetensors")
            run("convert", src, "-o", refs[dt], "--dtype", dt, *QUIET)
        a = self.start(src, dest, "f16", "--force")
        b = self.start(src, dest, "bf16", "--force")
        _, ea = a.communicate(timeout=120)
        _, eb = b.communicate(timeout=120)
        self.assertEqual((a.returncode, b.returncode), (0, 0), ea + eb)
        self.assertIn(digest(dest), {digest(refs["f16"]), digest(refs["bf16"])})
        self.assertEqual(os.listdir(self.out), ["x.safetensors"])

    def test_two_writers_without_force_one_wins(self):
        src = random_model(self.input("a.safetensors"), 14)
        dest = os.path.join(self.out, "x.safetensors")
        a = self.start(src, dest, "f16")
        b = self.start(src, dest, "bf16")
        _, ea = a.communicate(timeout=120)
        _, eb = b.communicate(timeout=120)
        self.assertEqual(sorted([a.returncode, b.returncode]), [0, 2], ea + eb)
        loser = ea if a.returncode else eb
        self.assertIn("appeared while this one was being written", loser)
        self.assertEqual(os.listdir(self.out), ["x.safetensors"])
        _, tensors, _ = read_safetensors(dest)
        winner = "F16" if a.returncode == 0 else "BF16"
        self.assertEqual({t[0] for t in tensors.values()}, {winner})


class NamedTemporaries(Fixture):
    """CKPTKIT_TEST_FS=no-tmpfile: as on a file system without O_TMPFILE."""
    ENV = {"CKPTKIT_TEST_FS": "no-tmpfile"}

    def temps(self):
        return [f for f in os.listdir(self.out) if ".ckptkit-tmp-" in f]

    def test_stale_temporary_is_removed_by_the_next_run(self):
        src = random_model(self.input("a.safetensors"), 15)
        hold_and_kill(["convert", src, "-o", os.path.join(self.out, "a.safetensors"),
                       "--dtype", "f16", *SMALL, *QUIET], "half", self.ENV)
        left = self.temps()
        self.assertEqual(len(left), 1)
        self.assertTrue(left[0].startswith(".a.safetensors.ckptkit-tmp-"), left)
        env = dict(os.environ, **self.ENV)
        run("convert", src, "-o", os.path.join(self.out, "b.safetensors"), *QUIET, env=env)
        self.assertEqual(os.listdir(self.out), ["b.safetensors"])

    def test_live_temporary_is_kept(self):
        src = random_model(self.input("a.safetensors"), 16)
        proc, _ = start_held(["convert", src, "-o", os.path.join(self.out, "a.safetensors"),
                              "--dtype", "f16", *SMALL, *QUIET], "half", self.ENV)
        try:
            live = self.temps()
            self.assertEqual(len(live), 1)
            run("convert", src, "-o", os.path.join(self.out, "b.safetensors"), *QUIET,
                env=dict(os.environ, **self.ENV))
            self.assertIn(live[0], os.listdir(self.out))
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()

    def test_sigint_removes_the_named_temporary(self):
        src = random_model(self.input("a.safetensors"), 17)
        proc, _ = start_held(["convert", src, "-o", os.path.join(self.out, "a.safetensors"),
                              "--dtype", "f16", *SMALL, *QUIET], "half", self.ENV)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        proc.stderr.close()
        self.assertEqual(proc.returncode, -signal.SIGINT)
        self.assertEqual(os.listdir(self.out), [])

    def test_split_without_o_tmpfile(self):
        src = self.sparse_sample("sd15-ldm")
        hold_and_kill(["split", src, "-o", os.path.join(self.out, "m"), *QUIET], "half", self.ENV)
        # The killed run left a named temporary per part in out/ (the nearest folder that
        # exists); the next run writing there removes them, and its folder appears whole.
        self.assertEqual(len(self.temps()), 3, os.listdir(self.out))
        run("split", src, "-o", os.path.join(self.out, "m"), *QUIET,
            env=dict(os.environ, **self.ENV))
        self.assertEqual(os.listdir(self.out), ["m"])
        self.assertEqual(len(listing(os.path.join(self.out, "m"))), 6)

    def test_cleanup_rules(self):
        """Only names of ckptkit's form whose process is gone and whose lock is free go."""
        dead = 4_000_000  # above the usual pid_max: no such process
        while True:
            try:
                os.kill(dead, 0)
                dead -= 1
            except ProcessLookupError:
                break
            except PermissionError:
                dead -= 1
        names = {
            f".a.safetensors.ckptkit-tmp-{dead}-Ab12Cd": "stale: removed",
            f".b.safetensors.ckptkit-tmp-{dead}-Zz99Yy": "locked by a live writer: kept",
            f".c.safetensors.ckptkit-tmp-{os.getpid()}-Qq11Rr": "process alive: kept",
            f".d.safetensors.ckptkit-tmp-{dead}-short": "not our form: kept",
            "e.safetensors": "a user's file: kept",
        }
        for n in names:
            with open(os.path.join(self.out, n), "wb") as f:
                f.write(b"x")
        os.makedirs(os.path.join(self.out, f".dir.ckptkit-tmp-{dead}-Dd00Ee", "vae"))
        locked = open(os.path.join(self.out, f".b.safetensors.ckptkit-tmp-{dead}-Zz99Yy"), "rb")
        fcntl.flock(locked, fcntl.LOCK_EX)
        try:
            src = random_model(self.input("a.safetensors"), 18, mib=1)
            run("convert", src, "-o", os.path.join(self.out, "new.safetensors"), *QUIET)
        finally:
            locked.close()
        kept = sorted(os.listdir(self.out))
        expected = sorted([n for n, why in names.items() if why.endswith("kept")] +
                          ["new.safetensors"])
        self.assertEqual(kept, expected)


class Durability(TempDirTest):
    def test_help_says_what_no_sync_skips(self):
        for cmd in ("convert", "merge", "split", "assemble", "swap", "prune", "meta", "sample"):
            with self.subTest(cmd=cmd):
                p = run(cmd, "--help")
                self.assertIn("--no-sync", p.stdout)
                self.assertIn("fsync", p.stdout)

    def test_syncs_by_default(self):
        """strace, where present, shows fsync of the file and of its folder after the link."""
        if shutil.which("strace") is None:
            self.skipTest("strace is not installed")
        src = random_model(self.path("a.safetensors"), 19, mib=1)
        for extra, expect in (([], True), (["--no-sync"], False)):
            out = self.path(f"o{len(extra)}.safetensors")
            log = self.path(f"strace{len(extra)}.log")
            # LeakSanitizer cannot run under ptrace: off for this run of the ASan build.
            asan = os.environ.get("ASAN_OPTIONS", "")
            env = dict(os.environ, ASAN_OPTIONS=(asan + ":" if asan else "") + "detect_leaks=0")
            subprocess.run(["strace", "-f", "-e", "trace=fsync,linkat,openat", "-o", log, BIN,
                            "convert", src, "-o", out, "--progress", "never", *extra], check=True,
                           env=env)
            with open(log) as f:
                calls = [line for line in f if "fsync(" in line or "linkat(" in line]
            kinds = [("linkat" if "linkat(" in c else "fsync") for c in calls]
            if expect:
                self.assertGreaterEqual(len(kinds), 3, calls)
                i = kinds.index("linkat")
                self.assertIn("fsync", kinds[:i])      # the data before the link
                self.assertIn("fsync", kinds[i + 1:])  # the folder after it
            else:
                self.assertNotIn("fsync", kinds)


if __name__ == "__main__":
    unittest.main()
