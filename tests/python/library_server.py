"""Starts `ckptkit library serve --port 0` on a database and reads the URL it prints."""
import os
import re
import subprocess
import threading

from ckpt_testlib import BIN


class Server:
    def __init__(self, db, *extra):
        self.proc = subprocess.Popen([BIN, "library", "serve", "--db", db, "--port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._readline(20)
        m = re.match(r"serving (http://([^/]+):(\d+)/)", line or "")
        if not m:
            self.proc.kill()
            err = self.proc.stderr.read()
            self.stop()
            raise AssertionError(f"no URL from library serve: {line!r} {err}")
        self.url, self.host, self.port = m.group(1), m.group(2), int(m.group(3))

    def _readline(self, timeout):
        out = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return out[0].strip() if out else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
