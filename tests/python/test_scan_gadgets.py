"""`ckptkit scan` against published pickle gadgets (issue 19): every gadget of the picklescan
advisories, JFrog's CVE-2025-1015x classes, fickling's and modelscan's lists is a dangerous row
whose reason names its advisory; a PyTorch or standard-library global the pickle *calls* is
dangerous unless it is a benign data constructor; parser differentials never read as "safe".

Each gadget that exists here (torch 1.13, Python 3.11 without idlelib) is first shown to run
under torch.load: the oracle loads the file in a throwaway /usr/bin/python3 subprocess whose
working directory is this test's temp dir, and the payload only creates a canary file there.
ckptkit itself must never create one."""
import concurrent.futures
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest
import zipfile

import torch_fixtures as tf
from ckpt_testlib import BIN

PY = "/usr/bin/python3"


# --- a tiny pickle assembler (protocol 4: GLOBAL may name "Class.method") ------------------------

class G:
    """A global: GLOBAL module\\nname\\n."""
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """callable(*args) through REDUCE."""
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args


class Build:
    """obj, then BUILD with state (a Namespace's attributes)."""
    def __init__(self, obj, state):
        self.obj, self.state = obj, state


def enc(v):
    if v is None:
        return b"N"
    if v is True or v is False:
        return b"\x88" if v else b"\x89"
    if isinstance(v, int):
        return b"J" + struct.pack("<i", v)
    if isinstance(v, str):
        b = v.encode("utf-8")
        return b"X" + struct.pack("<I", len(b)) + b
    if isinstance(v, bytes):
        return b"B" + struct.pack("<I", len(v)) + v
    if isinstance(v, tuple):
        return b"(" + b"".join(enc(x) for x in v) + b"t"
    if isinstance(v, list):
        return b"](" + b"".join(enc(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"}(" + b"".join(enc(k) + enc(x) for k, x in v.items()) + b"u"
    if isinstance(v, G):
        return b"c" + v.module.encode() + b"\n" + v.name.encode() + b"\n"
    if isinstance(v, Call):
        return enc(v.fn) + enc(tuple(v.args)) + b"R"
    if isinstance(v, Build):
        return enc(v.obj) + enc(v.state) + b"b"
    raise TypeError(v)


def pickle_of(obj):
    return b"\x80\x04" + enc(obj) + b"."


def namespace(**attrs):
    return Build(Call(G("argparse", "Namespace")), attrs)


# --- the gadgets ---------------------------------------------------------------------------------

def py_payload(canary):
    return f"open({canary!r}, 'w').write('ran')"


def sh_payload(canary):
    return f"touch '{canary}'"


def inner_exec_pickle(canary):
    return pickle_of(Call(G("builtins", "exec"), py_payload(canary)))


# name -> (module, name, advisory, build(canary) -> object, or None where the gadget does not
# exist here (scanned only)).
CE = "torch.utils.collect_env"
BN = "torch.utils.bottleneck.__main__"
GADGETS = {
    "collect_env.run": (CE, "run", "GHSA-f745-w6jp-hpxx",
                        lambda c: Call(G(CE, "run"), sh_payload(c))),
    "collect_env.run_and_read_all": (CE, "run_and_read_all", "GHSA-jhph-76pp-mggw",
                                     lambda c: Call(G(CE, "run_and_read_all"), G(CE, "run"),
                                                    sh_payload(c))),
    "bottleneck.run_cprofile": (BN, "run_cprofile", "GHSA-4r9r-ch6f-vxmx",
                                lambda c: Call(G(BN, "run_cprofile"), py_payload(c), {})),
    "bottleneck.run_autograd_prof": (BN, "run_autograd_prof", "GHSA-4whj-rm5r-c2v8",
                                     lambda c: Call(G(BN, "run_autograd_prof"), py_payload(c), {})),
    "decoder.basichandlers": ("torch.utils.data.datapipes.utils.decoder", "basichandlers",
                              "GHSA-h3qp-7fh3-f8h4",
                              lambda c: Call(G("torch.utils.data.datapipes.utils.decoder",
                                               "basichandlers"), "pickle", inner_exec_pickle(c))),
    "jit.execWrapper": ("torch.jit.unsupported_tensor_ops", "execWrapper", "GHSA-vr7h-p6mm-wpmh",
                        lambda c: Call(G("torch.jit.unsupported_tensor_ops", "execWrapper"),
                                       py_payload(c), {}, {})),
    "doctest.debug_script": ("doctest", "debug_script", "GHSA-fqq6-7vqf-w3fg",
                             lambda c: Call(G("doctest", "debug_script"), py_payload(c), True)),
    "cProfile.run": ("cProfile", "run", "GHSA-49gj-c84q-6qm9",
                     lambda c: Call(G("cProfile", "run"), py_payload(c))),
    "cProfile.runctx": ("cProfile", "runctx", "GHSA-9w88-8rmg-7g2p",
                        lambda c: Call(G("cProfile", "runctx"), py_payload(c), {}, {})),
    "ensurepip._run_pip": ("ensurepip", "_run_pip", "GHSA-xp4f-hrf8-rxw7",
                           lambda c: Call(G("ensurepip", "_run_pip"), "[]; " + py_payload(c))),
    "lib2to3.make_label": ("lib2to3.pgen2.pgen", "ParserGenerator.make_label",
                           "GHSA-p9w7-82w4-7q8m",
                           lambda c: Call(G("lib2to3.pgen2.pgen", "ParserGenerator.make_label"),
                                          None, namespace(labels=[]),
                                          '""+str(exec(%r))' % py_payload(c))),
    "lib2to3.Grammar.loads": ("lib2to3.pgen2.grammar", "Grammar.loads", "GHSA-f54q-57x4-jg88",
                              lambda c: Call(G("lib2to3.pgen2.grammar", "Grammar.loads"),
                                             namespace(), inner_exec_pickle(c))),
    "code.runcode": ("code", "InteractiveInterpreter.runcode", "GHSA-cj3c-v495-4xqh",
                     lambda c: Call(G("code", "InteractiveInterpreter.runcode"),
                                    namespace(locals={}), py_payload(c))),
    "profile.Profile.run": ("profile", "Profile.run", "GHSA-x696-vm39-cp64",
                            lambda c: Call(G("profile", "Profile.run"),
                                           Call(G("profile", "Profile")), py_payload(c))),
    "profile.Profile.runctx": ("profile", "Profile.runctx", "GHSA-6vqj-c2q5-j97w",
                               lambda c: Call(G("profile", "Profile.runctx"),
                                              Call(G("profile", "Profile")), py_payload(c),
                                              {}, {})),
    "trace.Trace.run": ("trace", "Trace.run", "GHSA-5qwp-399c-mjwf",
                        lambda c: Call(G("trace", "Trace.run"),
                                       Call(G("trace", "Trace"), 0, 0), py_payload(c))),
    "trace.Trace.runctx": ("trace", "Trace.runctx", "GHSA-g344-hcph-8vgg",
                           lambda c: Call(G("trace", "Trace.runctx"),
                                          Call(G("trace", "Trace"), 0, 0), py_payload(c), {}, {})),
    "timeit.timeit": ("timeit", "timeit", "GHSA-v7x6-rv5q-mhwc",
                      lambda c: Call(G("timeit", "timeit"), "pass", py_payload(c))),
    "distutils.write_file": ("distutils.file_util", "write_file", "GHSA-m273-6v24-x4m4",
                             lambda c: Call(G("distutils.file_util", "write_file"), c, ["ran"])),
    "pkgutil.resolve_name": ("pkgutil", "resolve_name", "GHSA-vvpj-8cmc-gx39",
                             lambda c: Call(Call(G("pkgutil", "resolve_name"), "builtins:exec"),
                                            py_payload(c))),
    "pydoc.pipepager": ("pydoc", "pipepager", "GHSA-84r2-jw7c-4r5q",
                        lambda c: Call(G("pydoc", "pipepager"), "", sh_payload(c))),
    "numpy.runstring": ("numpy.testing._private.utils", "runstring", "picklescan",
                        lambda c: Call(G("numpy.testing._private.utils", "runstring"),
                                       py_payload(c), {})),
    "runpy._run_code": ("runpy", "_run_code", "picklescan",
                        lambda c: Call(G("runpy", "_run_code"), py_payload(c), {})),
    # Not in torch 1.13 or not installed here: scanned only.
    "dynamo.GuardBuilder.get": ("torch._dynamo.guards", "GuardBuilder.get",
                                "GHSA-86cj-95qr-2p4f", None),
    "symbolic_shapes.evaluate_guards_expression": (
        "torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression",
        "GHSA-f4x7-rfwp-v3xw", None),
    "config_module.load_config": ("torch.utils._config_module", "ConfigModule.load_config",
                                  "GHSA-vv6j-3g6g-2pvj", None),
    "inductor.compile_file": ("torch._inductor.codecache", "compile_file", "compile_file", None),
    "dynamo.utils": ("torch._dynamo.utils", "run_node", "torch._dynamo", None),
    "idlelib.run.runcode": ("idlelib.run", "Executive.runcode", "GHSA-m869-42cg-3xwr", None),
    "idlelib.pyshell.runcommand": ("idlelib.pyshell", "ModifiedInterpreter.runcommand",
                                   "GHSA-j343-8v2j-ff7w", None),
    "idlelib.pyshell.runcode": ("idlelib.pyshell", "ModifiedInterpreter.runcode",
                                "GHSA-3gf5-cxq9-w223", None),
    "idlelib.debugobj.SetText": ("idlelib.debugobj", "ObjectTreeItem.SetText",
                                 "GHSA-3vg9-h568-4w9m", None),
    "idlelib.autocomplete.get_entity": ("idlelib.autocomplete", "AutoComplete.get_entity",
                                        "GHSA-6w4w-5w54-rjvr", None),
    "idlelib.autocomplete.fetch_completions": ("idlelib.autocomplete",
                                               "AutoComplete.fetch_completions",
                                               "GHSA-7cq8-mj8x-j263", None),
    "idlelib.calltip.fetch_tip": ("idlelib.calltip", "Calltip.fetch_tip", "GHSA-8r4j-24qv-fmq9",
                                  None),
    "idlelib.calltip.get_entity": ("idlelib.calltip", "get_entity", "GHSA-9xph-j2h6-g47v", None),
    "asyncio.UnixSubprocessTransport": ("asyncio.unix_events", "_UnixSubprocessTransport._start",
                                        "CVE-2025-10157", None),
    "ctypes.CDLL": ("ctypes", "CDLL", "GHSA-4675-36f9-wf6r", None),
    "pty.spawn": ("pty", "spawn", "GHSA-vqmv-47xg-9wpr", None),
    "f2py.getlincoef": ("numpy.f2py.crackfortran", "getlincoef", "GHSA-r8g5-cgf2-4m4m", None),
    "pydoc.locate": ("pydoc", "locate", "GHSA-84r2-jw7c-4r5q", None),
    "operator.attrgetter": ("_operator", "attrgetter", "GHSA-955r-x9j8-7rhh", None),
    "importlib.import_module": ("importlib", "import_module", "PR 74", None),
    "marshal.loads": ("marshal", "loads", "PR 74", None),
    "venv.create": ("venv", "create", "picklescan", None),
    "scipy.io.loadmat": ("scipy.io", "loadmat", "loadmat", None),
    "torch.serialization.load": ("torch.serialization", "load", "picklescan", None),
}


def oracle_runs(path, cwd):
    """Loads path with torch.load (weights_only=False, torch 1.13) in a throwaway process."""
    code = ("import sys, torch\n"
            "try:\n    torch.load(sys.argv[1])\n"
            "except BaseException as e:\n    print('raised', type(e).__name__)\n")
    subprocess.run([PY, "-c", code, path], cwd=cwd, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=300)


class GadgetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        root = os.environ.get("CKPTKIT_TEST_TMP")
        if root:
            os.makedirs(root, exist_ok=True)
        cls._tmp = tempfile.TemporaryDirectory(dir=root)
        d = cls._tmp.name
        cls.dir = d
        cls.oracle_dir = os.path.join(d, "oracle")   # the oracle's canaries and cwd
        cls.scan_dir = os.path.join(d, "scan")       # ckptkit's canaries (must stay empty)
        cls.work = os.path.join(d, "work")           # ckptkit's cwd
        for p in (cls.oracle_dir, cls.scan_dir, cls.work):
            os.makedirs(p)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def scan(self, path):
        p = subprocess.run([BIN, "scan", "--json", path], cwd=self.work, capture_output=True,
                           text=True, timeout=120)
        try:
            doc = json.loads(p.stdout)
        except ValueError:
            self.fail(f"scan --json {path} -> {p.returncode}: {p.stdout[:500]} {p.stderr}")
        return p.returncode, doc["files"][0]

    def assert_ckptkit_ran_nothing(self):
        self.assertEqual(os.listdir(self.scan_dir), [], "A PAYLOAD RAN under ckptkit")
        self.assertEqual(os.listdir(self.work), [], "ckptkit wrote into its working directory")

    def write_case(self, folder, name, obj):
        path = os.path.join(folder, name + ".pt")
        tf.handmade_torch_zip(path, pickle_of(obj), {})
        return path


class Gadgets(GadgetTest):
    def test_gadgets_run_under_torch_load(self):
        """The oracle: each gadget that exists here runs its payload under torch.load."""
        cases = {n: g for n, g in GADGETS.items() if g[3] is not None}
        self.assertGreaterEqual(len(cases), 20)
        jobs = {}
        for name, (_, _, _, build) in cases.items():
            canary = os.path.join(self.oracle_dir, "CANARY-" + name)
            path = self.write_case(self.dir, "oracle-" + name, build(canary))
            jobs[name] = (path, canary)
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda j: oracle_runs(j[0], self.oracle_dir), jobs.values()))
        for name, (_, canary) in jobs.items():
            with self.subTest(name):
                self.assertTrue(os.path.exists(canary),
                                f"{name}: the gadget did not run under torch.load (fixture error)")

    def test_every_gadget_is_dangerous_with_its_advisory(self):
        for name, (module, gname, advisory, build) in GADGETS.items():
            with self.subTest(name):
                canary = os.path.join(self.scan_dir, "CANARY-" + name)
                obj = build(canary) if build else Call(G(module, gname))
                path = self.write_case(self.dir, "scan-" + name, obj)
                rc, f = self.scan(path)
                self.assertEqual((rc, f["verdict"]), (1, "dangerous"), f"{name}: {f['summary']}")
                rows = [g for g in f["globals"] if (g["module"], g["name"]) == (module, gname)]
                self.assertTrue(rows, f"{name}: {module}.{gname} not listed: {f['globals']}")
                self.assertEqual(rows[0]["category"], "dangerous", rows[0])
                self.assertIn(advisory, rows[0]["reason"], rows[0])
                self.assertIn(f"{module}.{gname}", f["summary"])
                self.assertNotIn("normal for training checkpoints", f["summary"])
        self.assert_ckptkit_ran_nothing()

    def test_the_reported_one_liners(self):
        """The issue's repro: GLOBAL m n, empty tuple, REDUCE, as a bare pickle."""
        for module, name in [("torch.utils.collect_env", "run"),
                             ("torch._inductor.codecache", "compile_file"),
                             ("torch._dynamo.utils", "compile_times"),
                             ("lib2to3.pgen2.pgen", "ParserGenerator"),
                             ("scipy.io", "loadmat")]:
            with self.subTest(f"{module}.{name}"):
                path = os.path.join(self.dir, f"oneliner-{module}-{name}.pkl")
                with open(path, "wb") as fh:
                    fh.write(f"c{module}\n{name}\n)R.".encode())
                rc, f = self.scan(path)
                self.assertEqual((rc, f["verdict"]), (1, "dangerous"), f["summary"])
                self.assertEqual([g["category"] for g in f["globals"]], ["dangerous"])
                self.assertTrue(f["globals"][0]["called"])


class CallRule(GadgetTest):
    """Rule 5: what no list names is judged by origin and by whether the pickle calls it."""

    def verdict_of(self, label, obj):
        path = self.write_case(self.dir, "rule-" + label, obj)
        rc, f = self.scan(path)
        return rc, f

    def row(self, f, module, name):
        rows = [g for g in f["globals"] if (g["module"], g["name"]) == (module, name)]
        self.assertEqual(len(rows), 1, f["globals"])
        return rows[0]

    def test_called_torch_and_stdlib_functions_are_dangerous(self):
        for module, name, origin in [("torch.utils.hooks", "RemovableHandle", "torch"),
                                     ("torch.cuda", "set_sync_debug_mode", "torch"),
                                     ("shlex", "split", "stdlib"),
                                     ("threading", "Thread", "stdlib"),
                                     ("builtins", "print", "stdlib"),
                                     ("__builtin__", "map", "stdlib")]:
            with self.subTest(f"{module}.{name}"):
                rc, f = self.verdict_of(f"call-{module}-{name}", Call(G(module, name), "x"))
                self.assertEqual((rc, f["verdict"]), (1, "dangerous"), f)
                g = self.row(f, module, name)
                self.assertEqual((g["category"], g["origin"], g["called"]),
                                 ("dangerous", origin, True))

    def test_referenced_only_stays_unknown(self):
        """The same names only referenced (an argument of a tuple, not called): not dangerous,
        and the summary says where they come from."""
        obj = (G("torch.utils.hooks", "RemovableHandle"), G("shlex", "split"),
               G("pytorch_lightning.trainer.states", "TrainerFn"))
        rc, f = self.verdict_of("referenced", obj)
        self.assertEqual((rc, f["verdict"]), (1, "suspicious"), f)
        for module, name, origin in [("torch.utils.hooks", "RemovableHandle", "torch"),
                                     ("shlex", "split", "stdlib"),
                                     ("pytorch_lightning.trainer.states", "TrainerFn",
                                      "third_party")]:
            g = self.row(f, module, name)
            self.assertEqual((g["category"], g["origin"], g["called"]), ("unknown", origin, False))
        s = f["summary"]
        self.assertIn("from inside PyTorch, outside torch.load's allowlist "
                      "(torch.utils.hooks.RemovableHandle)", s)
        self.assertIn("from the standard library (shlex.split)", s)
        self.assertIn("from third-party packages (pytorch_lightning.trainer.states.TrainerFn)", s)

    def test_third_party_calls_stay_suspicious(self):
        for module, name in [("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
                             ("omegaconf.dictconfig", "DictConfig"), ("__main__", "MyConfig")]:
            with self.subTest(f"{module}.{name}"):
                rc, f = self.verdict_of(f"third-{module}-{name}", Call(G(module, name)))
                self.assertEqual((rc, f["verdict"]), (1, "suspicious"), f)
                g = self.row(f, module, name)
                self.assertEqual((g["category"], g["origin"], g["called"]),
                                 ("unknown", "third_party", True))
                self.assertIn("from third-party packages", f["summary"])
                self.assertNotIn("inside PyTorch", f["summary"])

    def test_calls_through_partial_count(self):
        """functools.partial(f)() calls f: a stdlib f no list names is dangerous."""
        obj = Call(Call(G("functools", "partial"), G("shlex", "split"), "a b"))
        rc, f = self.verdict_of("partial", obj)
        self.assertEqual(f["verdict"], "dangerous", f)
        self.assertEqual(self.row(f, "shlex", "split")["category"], "dangerous")
        self.assertEqual(self.row(f, "functools", "partial")["category"], "unknown")

    def test_benign_constructors_are_not_dangerous(self):
        for module, name, args in [("argparse", "Namespace", ()), ("pathlib", "PosixPath", ("/x",)),
                                   ("datetime", "datetime", (2024, 1, 2)),
                                   ("decimal", "Decimal", ("1.5",)),
                                   ("fractions", "Fraction", (1, 3)),
                                   ("collections", "defaultdict", ()),
                                   ("collections", "deque", ()), ("enum", "FlagBoundary", ("strict",)),
                                   ("uuid", "UUID", ("12345678123456781234567812345678",)),
                                   ("torch.torch_version", "TorchVersion", ("1.13.0",)),
                                   ("torch.nn.modules.linear", "Linear", (2, 2)),
                                   ("builtins", "dict", ())]:
            with self.subTest(f"{module}.{name}"):
                rc, f = self.verdict_of(f"benign-{module}-{name}", Call(G(module, name), *args))
                self.assertEqual((rc, f["verdict"]), (1, "suspicious"), f)
                g = self.row(f, module, name)
                self.assertEqual((g["category"], g["called"]), ("unknown", True), g)


def _benign_lightning_child(path):
    """Runs in a subprocess with the fake pytorch_lightning on sys.path."""
    import argparse
    import collections
    import datetime
    import decimal
    import fractions
    import pathlib
    import uuid
    import torch
    from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint
    from pytorch_lightning.utilities.parsing import AttributeDict
    ckpt = {
        "epoch": 3, "global_step": 99, "pytorch-lightning_version": "1.9.0",
        "torch_version": torch.__version__,  # a TorchVersion
        "state_dict": tf.lightning_state_dict(),
        "callbacks": {ModelCheckpoint(monitor="val/loss"): {"dirpath": pathlib.PosixPath("/runs")}},
        "hyper_parameters": AttributeDict(
            args=argparse.Namespace(lr=1e-4, out=pathlib.PosixPath("/runs/x")),
            started=datetime.datetime(2024, 5, 6, 7, 8, 9), elapsed=datetime.timedelta(hours=2),
            lr=decimal.Decimal("0.0001"), ratio=fractions.Fraction(1, 3),
            counts=collections.Counter(a=2), queue=collections.deque([1, 2]),
            groups=collections.defaultdict(list), run_id=uuid.UUID(int=5)),
        "ema_model": torch.nn.Linear(2, 2),  # a whole nn.Module
    }
    torch.save(ckpt, path)
    back = torch.load(path)
    assert back["hyper_parameters"]["args"].lr == 1e-4


class BenignLightning(GadgetTest):
    BENIGN = [("argparse", "Namespace"), ("pathlib", "PosixPath"), ("datetime", "datetime"),
              ("datetime", "timedelta"), ("decimal", "Decimal"), ("fractions", "Fraction"),
              ("collections", "Counter"), ("collections", "deque"), ("collections", "defaultdict"),
              ("uuid", "UUID"), ("torch.torch_version", "TorchVersion"),
              ("torch.nn.modules.linear", "Linear")]

    def test_lightning_with_benign_constructors_is_not_dangerous(self):
        path = os.path.join(self.dir, "lightning-benign.ckpt")
        with tempfile.TemporaryDirectory() as fake:
            for rel, text in tf.FAKE_LIGHTNING.items():
                os.makedirs(os.path.join(fake, os.path.dirname(rel)), exist_ok=True)
                with open(os.path.join(fake, rel), "w") as fh:
                    fh.write(text)
            here = os.path.dirname(os.path.abspath(__file__))
            code = (f"import sys; sys.path[:0] = [{fake!r}, {here!r}]; import test_scan_gadgets; "
                    f"test_scan_gadgets._benign_lightning_child({path!r})")
            p = subprocess.run([PY, "-c", code], capture_output=True, text=True,
                               env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            self.assertEqual(p.returncode, 0, p.stderr)
        rc, f = self.scan(path)
        self.assertEqual((rc, f["verdict"]), (1, "suspicious"), json.dumps(f)[:3000])
        self.assertEqual([g for g in f["globals"] if g["category"] == "dangerous"], [])
        found = {(g["module"], g["name"]): g for g in f["globals"]}
        for key in self.BENIGN:
            self.assertIn(key, found, f"fixture: {key} not in the checkpoint")
            self.assertEqual(found[key]["category"], "unknown", found[key])
            self.assertTrue(found[key]["called"], found[key])
        for key in tf.LIGHTNING_UNKNOWN:
            self.assertEqual((found[key]["category"], found[key]["origin"]),
                             ("unknown", "third_party"))
        self.assertIn("from third-party packages", f["summary"])
        self.assertIn("from the standard library", f["summary"])
        self.assertIn("normal for training checkpoints", f["summary"])


class TorchScriptArchive(GadgetTest):
    """CVE-2025-32434's class: torch.load dispatches an archive with constants.pkl to
    torch.jit.load, whatever weights_only says (before PyTorch 2.6)."""

    def test_torchscript_archive_is_dangerous(self):
        path = os.path.join(self.dir, "scripted.pt")
        code = textwrap.dedent("""
            import sys, warnings, torch
            class M(torch.nn.Module):
                def forward(self, x):
                    return x * 2
            torch.jit.save(torch.jit.trace(M(), torch.tensor(1)), sys.argv[1])
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                m = torch.load(sys.argv[1], weights_only=True)
            print(type(m).__name__, int(m(torch.tensor(3))))
            """)
        p = subprocess.run([PY, "-c", code, path], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        # The oracle: torch.load(weights_only=True) returned a TorchScript module and ran it.
        self.assertEqual(p.stdout.split(), ["RecursiveScriptModule", "6"])
        rc, f = self.scan(path)
        self.assertEqual((rc, f["verdict"]), (1, "dangerous"), f)
        self.assertIn("torchscript_archive", [x["kind"] for x in f["findings"]])
        self.assertIn("CVE-2025-32434", f["summary"])
        self.assert_ckptkit_ran_nothing()


class ParserDifferentials(GadgetTest):
    """Whatever torch.load accepts, scan reads (dangerous) or refuses (exit 2); never safe."""

    def payload_pickle(self, canary):
        return pickle_of(Call(G("builtins", "exec"), py_payload(canary)))

    def check(self, name, build, torch_runs):
        """build(path, canary) writes the file. torch_runs: what torch 1.13 is known to do
        (asserted with the oracle, so the case tests what it claims)."""
        oracle_canary = os.path.join(self.oracle_dir, "CANARY-diff-" + name)
        opath = os.path.join(self.dir, "oracle-diff-" + name)
        build(opath, oracle_canary)
        oracle_runs(opath, self.oracle_dir)
        self.assertEqual(os.path.exists(oracle_canary), torch_runs,
                         f"{name}: torch.load {'did not run' if torch_runs else 'ran'} the payload")
        path = os.path.join(self.dir, "scan-diff-" + name)
        build(path, os.path.join(self.scan_dir, "CANARY-diff-" + name))
        rc, f = self.scan(path)
        self.assertNotEqual(f["verdict"], "safe", f)
        if torch_runs:
            self.assertTrue(rc == 2 or f["verdict"] == "dangerous", f)
        self.assert_ckptkit_ran_nothing()
        return rc, f

    def zip_with(self, path, entries):
        tf.write_zip(path, entries)

    def test_wrong_crc(self):
        """JFrog CVE-2025-10156: torch does not check CRCs."""
        def build_crc(path, canary):
            pkl = self.payload_pickle(canary)
            self.zip_with(path, [("archive/data.pkl", pkl), ("archive/version", b"3\n")])
            with zipfile.ZipFile(path) as z:
                info = z.getinfo("archive/data.pkl")
            with open(path, "r+b") as fh:
                data = bytearray(fh.read())
                bad = struct.pack("<I", info.CRC ^ 0xFFFFFFFF)
                data[14:18] = bad  # local header of the first entry
                cd = data.index(b"PK\x01\x02")
                data[cd + 16:cd + 20] = bad
                fh.seek(0)
                fh.write(data)
        rc, f = self.check("crc", build_crc, True)
        self.assertEqual(f["verdict"], "dangerous", f)
        self.assertIn("crc_mismatch", [x["kind"] for x in f["findings"]])

    def test_flag_bits(self):
        """GHSA-w8jq-xcqf-f792 (modelscan's gap list): odd general-purpose flag bits."""
        for bit in (0x0002, 0x0004, 0x0800, 0x4000):
            with self.subTest(hex(bit)):
                def build(path, canary, bit=bit):
                    self.zip_with(path, [("archive/data.pkl", self.payload_pickle(canary)),
                                         ("archive/version", b"3\n")])
                    with open(path, "r+b") as fh:
                        data = bytearray(fh.read())
                        for off in [0, data.index(b"PK\x01\x02") + 2]:
                            old = struct.unpack_from("<H", data, off + 6)[0]
                            struct.pack_into("<H", data, off + 6, old | bit)
                        fh.seek(0)
                        fh.write(data)
                self.check(f"flag-{bit:x}", build, True)

    def test_unusual_names_and_extensions(self):
        """CVE-2025-10155 / GHSA-769v-p64c-89pr: the file's extension and the archive folder's
        name do not matter to torch.load, nor to scan."""
        for fname, prefix in [("model.bin", "archive"), ("model.txt", "archive"),
                              ("model", "weird.name"), ("model.jpg", "a b")]:
            with self.subTest(f"{fname} {prefix}"):
                def build(path, canary, prefix=prefix):
                    tf.handmade_torch_zip(path, self.payload_pickle(canary), {}, prefix=prefix)
                rc, f = self.check(f"name-{prefix}-{fname}", build, True)
                self.assertEqual(f["verdict"], "dangerous", f)

    def test_data_after_stop(self):
        """torch reads data.pkl up to STOP: a payload before it runs; one after it does not, but
        the file is still not plain data."""
        def before(path, canary):
            tf.handmade_torch_zip(path, self.payload_pickle(canary) + b"\x00garbage", {})
        rc, f = self.check("after-stop-payload-first", before, True)
        self.assertEqual(f["verdict"], "dangerous", f)

        def after(path, canary):
            tf.handmade_torch_zip(path, pickle_of({}) + self.payload_pickle(canary), {})
        rc, f = self.check("after-stop-payload-second", after, False)
        self.assertEqual(f["verdict"], "suspicious", f)
        self.assertIn("data_after_stop", [x["kind"] for x in f["findings"]])

    def test_duplicate_entry_names(self):
        """Two archive/data.pkl entries: whichever torch reads, scan must not say safe, and the
        payload must be reported dangerous."""
        for order in ("payload-first", "payload-last"):
            with self.subTest(order):
                def build(path, canary, order=order):
                    bad = ("archive/data.pkl", self.payload_pickle(canary))
                    good = ("archive/data.pkl", pickle_of({}))
                    pair = [bad, good] if order == "payload-first" else [good, bad]
                    import warnings
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # zipfile: "Duplicate name"
                        self.zip_with(path, pair + [("archive/version", b"3\n")])
                oracle_canary = os.path.join(self.oracle_dir, "CANARY-diff-dup-" + order)
                opath = os.path.join(self.dir, "oracle-dup-" + order)
                build(opath, oracle_canary)
                oracle_runs(opath, self.oracle_dir)
                path = os.path.join(self.dir, "scan-dup-" + order)
                build(path, os.path.join(self.scan_dir, "CANARY-dup-" + order))
                rc, f = self.scan(path)
                self.assertTrue(rc == 2 or f["verdict"] == "dangerous", f)
                self.assert_ckptkit_ran_nothing()

    def test_unparseable_pickle_is_an_error(self):
        """Bad input is unchanged: a bare file that is not a pickle -> exit 2, never safe."""
        path = os.path.join(self.dir, "not-a-pickle.pkl")
        with open(path, "wb") as fh:
            fh.write(b"\x80\x02\xff\xff")
        p = subprocess.run([BIN, "scan", path], cwd=self.work, capture_output=True, text=True)
        self.assertNotIn(": safe", p.stdout)
        self.assertIn(p.returncode, (1, 2), p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()
