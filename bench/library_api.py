#!/usr/bin/env python3
"""Section r of bench/run: N requests against a running `ckptkit library serve`, one keep-alive
connection, a fixed mix (a filtered page of the model list, a model's detail, the stats, a text
search); prints per-request latency percentiles as `API p50_ms p90_ms p99_ms max_ms N`."""
import http.client
import json
import random
import sys
import time

port, n = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(0)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def get(path):
    c.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: HTTP {r.status}: {body[:200]!r}")
    return body


ids = [m["id"] for m in json.loads(get("/api/models?limit=10000"))["models"]]
paths = ["/api/models?kind=LoRA&limit=100", "/api/models?family=sdxl&sort=size&order=desc&limit=100",
         "/api/stats", "/api/models?q=sd15&limit=100"]
times = []
for i in range(n):
    path = f"/api/models/{rng.choice(ids)}" if i % 2 else paths[(i // 2) % len(paths)]
    t0 = time.perf_counter()
    get(path)
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
pct = lambda p: times[min(len(times) - 1, int(p / 100 * len(times)))]
print(f"API {pct(50):.3f} {pct(90):.3f} {pct(99):.3f} {times[-1]:.3f} {n}")
