"""`ckptkit library serve`: the JSON API against the real server on an ephemeral loopback port
says what `library list/show/dupes --json` say; nothing outside the embedded page and the
database is reachable (traversal attempts, encoded or not, get 404); a Host header naming
another site is refused (DNS rebinding); only GET; bounded requests; a model titled with an
HTML script comes back as the same text, JSON-escaped, never as markup the server produced."""
import http.client
import json
import os
import socket
import subprocess
import tempfile
import unittest

from ckpt_testlib import BIN, run
from library_fixtures import XSS_TITLE, make_models, shared_tempdir
from library_server import Server


def lib_json(*args):
    return json.loads(run("library", *args, "--json").stdout)


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp, cls.tmp = shared_tempdir()
        cls.files = make_models(os.path.join(cls.tmp, "models"))
        cls.db = os.path.join(cls.tmp, "lib.sqlite")
        run("library", "index", os.path.join(cls.tmp, "models"), "--db", cls.db, "--no-hash",
            check=False)
        # The server must never hand out this file, whatever the path asked for.
        cls.secret = os.path.join(cls.tmp, "SECRET.txt")
        with open(cls.secret, "w") as f:
            f.write("TOP-SECRET-CONTENT")
        cls.server = Server(cls.db)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls._tmp.cleanup()

    def request(self, path, host=None, method="GET", body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host if host is not None else f"127.0.0.1:{self.server.port}")
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body.encode() if body is not None else None)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data

    def get_json(self, path):
        status, headers, data = self.request(path)
        self.assertEqual(status, 200, (path, data))
        self.assertTrue(headers["content-type"].startswith("application/json"))
        self.assertEqual(headers.get("x-content-type-options"), "nosniff")
        return json.loads(data)

    def test_models_match_cli(self):
        api = self.get_json("/api/models")
        cli = lib_json("list", "--db", self.db)
        self.assertEqual(api["models"], cli["models"])
        self.assertEqual(api["total"], len(cli["models"]))
        loras = self.get_json("/api/models?kind=LoRA")["models"]
        self.assertEqual({m["path"] for m in loras},
                         {m["path"] for m in lib_json("list", "--db", self.db, "--kind", "LoRA")["models"]})
        page = self.get_json("/api/models?limit=2&offset=1&sort=size&order=desc")
        self.assertEqual(page["count"], 2)
        self.assertEqual(page["total"], len(cli["models"]))
        unsafe = self.get_json("/api/models?unsafe=1")["models"]
        self.assertIn(self.files["evil"], [m["path"] for m in unsafe])
        self.assertEqual(self.request("/api/models?sort=evil")[0], 400)
        self.assertEqual(self.request("/api/models?limit=abc")[0], 400)

    def test_detail_matches_show(self):
        for name in ("sd15", "xss", "diffusers"):
            path = self.files[name]
            show = lib_json("show", path, "--db", self.db)
            api = self.get_json(f"/api/models/{show['model']['id']}")
            self.assertEqual(api, show)
        self.assertEqual(self.request("/api/models/999999")[0], 404)
        self.assertEqual(self.request("/api/models/abc")[0], 404)

    def test_dupes_and_stats(self):
        self.assertEqual(self.get_json("/api/dupes"), lib_json("dupes", "--db", self.db))
        s = self.get_json("/api/stats")
        self.assertEqual(s["files"], len(lib_json("list", "--db", self.db)["models"]))
        self.assertEqual(sum(k["files"] for k in s["by_kind"]), s["files"])
        self.assertEqual(sum(k["bytes"] for k in s["by_family"]), s["bytes"])
        self.assertIn("LoRA", [k["name"] for k in s["by_kind"]])

    def test_stats_match_the_table(self):
        # The stats are one grouped scan summed by the server: the same numbers as SQL on the
        # table, grouping by family and by kind.
        import sqlite3
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        fam = "COALESCE(NULLIF(family, ''), NULLIF(architecture, ''), kind, 'unknown')"
        want = lambda expr: {r[0]: (r[1], r[2]) for r in con.execute(
            f"SELECT {expr}, count(*), sum(size) FROM models GROUP BY 1")}
        s = self.get_json("/api/stats")
        for key, expr in (("by_family", fam), ("by_kind", "COALESCE(kind, 'unknown')")):
            self.assertEqual({g["name"]: (g["files"], g["bytes"]) for g in s[key]}, want(expr))
            self.assertEqual([g["bytes"] for g in s[key]],
                             sorted((g["bytes"] for g in s[key]), reverse=True))
        row = con.execute("SELECT count(*), sum(size), sum(scan_verdict IS NOT NULL AND "
                          "scan_verdict != 'safe'), sum(defect_count > 0), sum(error IS NOT "
                          "NULL), sum(sha256 IS NOT NULL) FROM models").fetchone()
        con.close()
        self.assertEqual(tuple(s[k] for k in ("files", "bytes", "unsafe", "with_defects",
                                              "errors", "hashed")), row)
        self.assertGreater(s["unsafe"], 0)

    def test_family_filter_total(self):
        page = self.get_json("/api/models?family=sd1&sort=size&order=desc&limit=1")
        full = self.get_json("/api/models?family=SD1&sort=size&order=desc")
        self.assertGreater(full["total"], 1)
        self.assertEqual(page["total"], full["total"])
        self.assertEqual(page["models"], full["models"][:1])
        sizes = [m["size"] for m in full["models"]]
        self.assertEqual(sizes, sorted(sizes, reverse=True))

    def test_page_and_assets(self):
        status, headers, data = self.request("/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        csp = headers["content-security-policy"]
        self.assertIn("script-src 'self'", csp)
        self.assertIn("default-src 'none'", csp)
        self.assertIn(b'<script src="/app.js"', data)
        self.assertNotIn(b"http://", data.replace(b"http://www.w3.org", b""))  # no CDN
        for asset, mime in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
            status, headers, data = self.request(asset)
            self.assertEqual(status, 200)
            self.assertTrue(headers["content-type"].startswith(mime))
            self.assertNotIn(b"https://", data)
        _, _, js = self.request("/app.js")
        self.assertNotIn(b"innerHTML", js)

    def test_traversal(self):
        secret = os.path.relpath(self.secret, "/")
        attempts = [
            "/../../../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/..%2f..%2f..%2fetc%2fpasswd", "/%252e%252e/etc/passwd", "/api/../../etc/passwd",
            "/api/models/..%2f..%2f..%2fetc%2fpasswd", "/app.js/../../../etc/passwd",
            "//etc/passwd", "/" + secret, "/../../../../../../" + secret,
            "/%2e%2e/" * 12 + secret.replace("/", "%2f"), "/api/models/1/../../../" + secret,
            "/web/app.js", "/index.html%00.js", "/.ckptkit", "/lib.sqlite",
            "/" + os.path.relpath(self.db, "/"),
        ]
        for path in attempts:
            with self.subTest(path):
                status, _, data = self.request(path)
                self.assertIn(status, (400, 404), (path, status, data[:200]))
                self.assertNotIn(b"root:", data)
                self.assertNotIn(b"TOP-SECRET", data)
                self.assertNotIn(b"SQLite format", data)
        # The raw request line too (http.client would not send some of these as they are).
        for raw in (b"GET /../../../etc/passwd HTTP/1.1\r\n", b"GET ../../etc/passwd HTTP/1.1\r\n",
                    b"GET /\\..\\..\\etc\\passwd HTTP/1.1\r\n"):
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
                s.sendall(raw + f"Host: 127.0.0.1:{self.server.port}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            self.assertRegex(data.split(b"\r\n")[0], rb"HTTP/1\.1 (400|404)")
            self.assertNotIn(b"root:", data)

    def test_host_header(self):
        port = self.server.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            self.assertEqual(self.request("/api/stats", host=host)[0], 200, host)
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}",
                     f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}", "",
                     f"10.0.0.1:{port}"):
            with self.subTest(host=host):
                status, _, data = self.request("/api/models", host=host)
                self.assertIn(status, (403, 421))
                self.assertNotIn(b"models", data)

    def test_read_only_and_bounded(self):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            self.assertEqual(self.request("/api/models", method=method, body="{}")[0], 405)
        self.assertEqual(self.request("/api/models?q=" + "a" * 300)[0], 400)
        status = self.request("/api/models?q=" + "a" * 9000)[0]
        self.assertIn(status, (400, 414))
        big = self.request("/api/models", method="POST", body="x" * 100000)[0]
        self.assertIn(big, (405, 413))
        # Still answering.
        self.assertEqual(self.request("/api/stats")[0], 200)

    def test_script_title_is_data(self):
        xss = [m for m in self.get_json("/api/models?q=script")["models"]]
        self.assertEqual([m["title"] for m in xss], [XSS_TITLE])
        _, headers, raw = self.request(f"/api/models/{xss[0]['id']}")
        self.assertTrue(headers["content-type"].startswith("application/json"))
        self.assertEqual(json.loads(raw)["model"]["title"], XSS_TITLE)

    def test_port_in_use(self):
        try:
            p = subprocess.run([BIN, "library", "serve", "--db", self.db, "--port",
                                str(self.server.port)], capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            self.fail("a second server started on a port in use")
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot listen", p.stderr)

    def test_missing_db(self):
        p = run("library", "serve", "--db", os.path.join(self.tmp, "none.sqlite"), "--port", "0",
                check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("library index", p.stderr)


class StatsFollowTheIndex(unittest.TestCase):
    def test_reindex_while_serving(self):
        # The server keeps the stats until the database changes: an `index` run while it serves
        # shows in the next request, whichever of its threads answers.
        from library_fixtures import sample
        root = os.environ.get("CKPTKIT_TEST_TMP")
        if root:
            os.makedirs(root, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            models, db = os.path.join(tmp, "m"), os.path.join(tmp, "lib.sqlite")
            sample("flux1-vae", os.path.join(models, "a.safetensors"))
            run("library", "index", models, "--db", db, "--no-hash")
            with Server(db) as srv:
                def files():
                    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
                    c.request("GET", "/api/stats", headers={"Host": f"127.0.0.1:{srv.port}"})
                    r = c.getresponse()
                    body = r.read()
                    c.close()
                    self.assertEqual(r.status, 200, body)
                    return json.loads(body)["files"]
                self.assertEqual({files() for _ in range(12)}, {1})
                sample("clip-l", os.path.join(models, "b.safetensors"))
                run("library", "index", models, "--db", db, "--no-hash")
                self.assertEqual({files() for _ in range(12)}, {2})


class Actions(unittest.TestCase):
    """`serve --allow-actions`: POST /api/actions/{prune,split,convert} {"id": N} writes a new
    file beside the input (never over one; the input left as it is) with the functions the CLI
    uses; each POST needs the page's token, and an Origin/Referer naming this server."""

    @classmethod
    def setUpClass(cls):
        cls._tmp, cls.tmp = shared_tempdir()
        cls.models = os.path.join(cls.tmp, "models")
        cls.files = make_models(cls.models)
        # A torch.save .ckpt whose pickle runs os.system after its tensors.
        import shutil
        import torch_fixtures as tf
        cls.canary = os.path.join(cls.tmp, ".canary")
        case = [c for c in tf.malicious_corpus(os.path.join(cls.tmp, ".corpus"), cls.canary)
                if c.name == "torch-zip-system-after-tensors"][0]
        cls.evil = os.path.join(cls.models, "unsafe", "evil-tensors.ckpt")
        shutil.copyfile(case.path, cls.evil)
        cls.evil_tensors = set(case.tensors)
        shutil.rmtree(os.path.join(cls.tmp, ".corpus"))
        cls.db = os.path.join(cls.tmp, "lib.sqlite")
        run("library", "index", cls.models, "--db", cls.db, "--no-hash", check=False)
        cls.ids = {m["path"]: m["id"] for m in lib_json("list", "--db", cls.db)["models"]}
        cls.server = Server(cls.db, "--allow-actions")
        page = cls.raw(cls.server, "GET", "/")[2].decode()
        m = __import__("re").search(r'<meta name="ckptkit-token" content="([0-9a-f]{64})">', page)
        assert m, page[:300]
        cls.token = m.group(1)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls._tmp.cleanup()

    @staticmethod
    def raw(server, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        h = {"Host": f"127.0.0.1:{server.port}", **(headers or {})}
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data

    def post(self, action, model_id, token=True, allow_dangerous=None, **headers):
        body = {"id": model_id}
        if allow_dangerous is not None:
            body["allow_dangerous"] = allow_dangerous
        h = {"Content-Type": "application/json", **headers}
        if token is True:
            h["X-Ckptkit-Token"] = self.token
        elif token:
            h["X-Ckptkit-Token"] = token
        status, _, data = self.raw(self.server, "POST", f"/api/actions/{action}", json.dumps(body), h)
        return status, json.loads(data)

    @staticmethod
    def digest(path):
        import hashlib
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def test_without_the_flag_every_post_is_405_and_the_page_has_no_token(self):
        folder = os.path.dirname(self.files["sd15"])
        files = sorted(os.listdir(folder))
        with Server(self.db) as srv:
            status, _, page = self.raw(srv, "GET", "/")
            self.assertEqual(status, 200)
            self.assertNotIn(b"ckptkit-token", page)
            status, _, _ = self.raw(srv, "POST", "/api/actions/prune",
                                    json.dumps({"id": self.ids[self.files["sd15"]]}),
                                    {"X-Ckptkit-Token": self.token})
            self.assertEqual(status, 405)
        self.assertEqual(sorted(os.listdir(folder)), files)

    def test_token_and_origin_checked(self):
        sd15 = self.ids[self.files["sd15"]]
        own = f"http://127.0.0.1:{self.server.port}"
        folder = os.path.dirname(self.files["sd15"])
        files = sorted(os.listdir(folder))
        for kw in ({"token": None}, {"token": "0" * 64}, {"token": self.token[:-1]},
                   {"Origin": "http://evil.example"}, {"Origin": "null"},
                   {"Origin": f"http://localhost:{self.server.port}"},
                   {"Referer": "http://evil.example/page"}, {"Referer": own + ".evil.example/"}):
            status, body = self.post("prune", sd15, **kw)
            self.assertEqual(status, 403, (kw, body))
        self.assertEqual(self.raw(self.server, "POST", "/api/actions/prune", "{}",
                                  {"X-Ckptkit-Token": self.token, "Host": "evil.example"})[0], 421)
        self.assertEqual(sorted(os.listdir(folder)), files)
        # Other POSTs stay 405, with the token too.
        self.assertEqual(self.raw(self.server, "POST", "/api/models", "{}",
                                  {"X-Ckptkit-Token": self.token})[0], 405)

    def test_prune_matches_the_cli_and_never_overwrites(self):
        src = self.files["sd15"]
        before = self.digest(src)
        own = f"http://127.0.0.1:{self.server.port}"
        status, r = self.post("prune", self.ids[src], Origin=own, Referer=own + "/")
        self.assertEqual(status, 200, r)
        out = os.path.join(os.path.dirname(src), "sd15-pruned.safetensors")
        self.assertEqual((r["input"], r["output"], r["written"]), (src, out, [out]))
        self.assertIn("library index", r["next"])
        cli = os.path.join(self.tmp, "cli-pruned.safetensors")
        run("prune", src, "-o", cli, "-q")
        self.assertEqual(self.digest(out), self.digest(cli))
        self.assertEqual(self.digest(src), before)
        # The same request again: a new name, the first output left alone.
        first = self.digest(out)
        status, r2 = self.post("prune", self.ids[src])
        self.assertEqual(status, 200, r2)
        self.assertEqual(r2["output"], os.path.join(os.path.dirname(src), "sd15-pruned-2.safetensors"))
        self.assertEqual(self.digest(out), first)
        self.assertEqual(self.digest(src), before)

    def test_split(self):
        src = self.files["sd15"]
        before = self.digest(src)
        status, r = self.post("split", self.ids[src])
        self.assertEqual(status, 200, r)
        self.assertEqual(r["output"], os.path.join(os.path.dirname(src), "sd15-split"))
        self.assertGreaterEqual(len(r["written"]), 3)
        for f in r["written"]:
            self.assertTrue(f.startswith(r["output"] + "/") and os.path.isfile(f), f)
        self.assertEqual(self.digest(src), before)

    def test_convert_malicious_ckpt_takes_only_the_tensors(self):
        evil = self.evil
        before = self.digest(evil)
        canary = self.canary
        status, r = self.post("convert", self.ids[evil])
        self.assertEqual(status, 409, r)  # dangerous: only when asked for
        self.assertIn("allow_dangerous", r["error"])
        status, r = self.post("convert", self.ids[evil], allow_dangerous=True)
        self.assertEqual(status, 200, r)
        out = os.path.join(os.path.dirname(evil), "evil-tensors.safetensors")
        self.assertEqual(r["output"], out)
        with open(out, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        self.assertEqual(set(header) - {"__metadata__"}, self.evil_tensors)
        self.assertFalse(os.path.exists(canary) and os.listdir(canary))
        self.assertEqual(self.digest(evil), before)
        # A pickle that is not a torch.save file: refused (409), nothing written.
        folder = sorted(os.listdir(os.path.dirname(evil)))
        status, r = self.post("convert", self.ids[self.files["evil"]], allow_dangerous=True)
        self.assertEqual(status, 409, r)
        self.assertEqual(sorted(os.listdir(os.path.dirname(evil))), folder)
        self.assertFalse(os.path.exists(canary) and os.listdir(canary))

    def test_unknown_id_and_bad_bodies(self):
        self.assertEqual(self.post("prune", 999999)[0], 404)
        for body in ("", "{}", '{"id": "1"}', '{"path": "/etc/passwd"}', '{"id": 1, "path": "/x"}'):
            status, _, _ = self.raw(self.server, "POST", "/api/actions/prune", body,
                                    {"X-Ckptkit-Token": self.token})
            self.assertEqual(status, 400, body)
        status, _, _ = self.raw(self.server, "POST", "/api/actions/delete", '{"id": 1}',
                                {"X-Ckptkit-Token": self.token})
        self.assertEqual(status, 404)


if __name__ == "__main__":
    unittest.main()
