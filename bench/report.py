#!/usr/bin/python3
"""Formats bench/run's measurements: a table on stdout and the same as markdown.

Usage: report.py RESULTS.tsv CAST_BENCH.json|- RESULTS.md
(Standard library only; called by bench/run.)
"""
import json
import os
import statistics
import sys

LABELS = {
    "cat": "cat IN > /dev/null",
    "cp": "cp IN COPY (no sync)",
    "cp_sync": "cp IN COPY && sync COPY",
    "convert": "ckptkit convert --dtype f16",
    "convert_nosync": "ckptkit convert --dtype f16 --no-sync",
    "torch": "PyTorch (torch_convert.py, fsync)",
    "torch_import": "  of which: python3 -c 'import torch'",
}
MIB = 1024 * 1024

# Targets are defined for the full-size workload (SD1.5 F32→F16, sparse SDXL inspect).
CONVERT_VS_CP_SYNC_MAX = 1.0
CONVERT_RSS_MAX_MIB = 256
INSPECT_MS_MAX = 20.0
INSPECT_RSS_MAX_MIB = 16  # strictly below


def load(path):
    meta, runs, inspect = {}, {}, None
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "run":
                _, key, walls, rss, cmd, cpus = parts
                runs[key] = {"walls": [float(w) for w in walls.split()], "rss_kb": int(rss),
                             "cmd": cmd, "cpus": [float(c) for c in cpus.split()]}
            elif parts[0] == "inspect":
                ms = [float(x) for x in parts[1].split()]
                true_ms = [float(x) for x in parts[3].split()]
                inspect = {"ms": ms, "rss_kb": int(parts[2]), "true_ms": true_ms}
            else:
                meta[parts[0]] = parts[1]
    return meta, runs, inspect


def cast_rows(path):
    if path == "-" or not os.path.exists(path):
        return None, []
    with open(path) as f:
        data = json.load(f)
    best = data.get("context", {}).get("ckptkit_simd_best", "")
    rows = []
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        parts = name.split("/")
        kernel = parts[0]
        target = parts[1] if len(parts) == 3 else b.get("label", "")
        rows.append({"kernel": kernel, "target": target, "bps": b["bytes_per_second"],
                     "rw": b.get("rw_bytes", float("nan")), "ms": b["real_time"]})
    return best, rows


def fmt_table(headers, rows, align):
    """Plain-text and markdown renderings of the same table."""
    w = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    def line(cells):
        return "  ".join(str(c).rjust(w[i]) if align[i] == "r" else str(c).ljust(w[i])
                         for i, c in enumerate(cells)).rstrip()
    text = [line(headers), "  ".join("-" * x for x in w)] + [line(r) for r in rows]
    md = ["| " + " | ".join(headers) + " |",
          "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
    md += ["| " + " | ".join(str(c).strip() for c in r) + " |" for r in rows]
    return "\n".join(text), "\n".join(md)


def verdict(ok):
    return "PASS" if ok else "MISS"


def main():
    tsv, cast_json, md_path = sys.argv[1:4]
    meta, runs, inspect = load(tsv)
    quick = meta.get("mode") == "quick"
    in_b, out_b = int(meta["in_bytes"]), int(meta["out_bytes"])
    gb = 1e9
    out_text, out_md = [], []

    def both(s):
        out_text.append(s)
        out_md.append(s)

    title = ("QUICK SMOKE RUN (BENCH_QUICK=1: %s, not the target workload; PASS/MISS below is "
             "indicative only)" % meta["layout"]) if quick else "full run"
    out_text.append("ckptkit benchmark — " + title)
    out_md.append("# ckptkit benchmark — " + title)
    both("")
    facts = [
        ("date", meta.get("date", "")), ("commit", meta.get("commit", "")),
        ("binary", meta.get("version", "")), ("cpu", meta.get("cpu", "")),
        ("load avg (1 min) start → end", meta.get("load", "")),
        ("job", "F32→F16 of %s: %.2f GB in, %.2f GB out" % (meta["layout"], in_b / gb,
                                                           out_b / gb)),
        ("method", "warm page cache (input read with cat first; nothing dropped); before each run "
                   "the previous output of the same size is removed and `sync` run (untimed); "
                   "%s interleaved rounds, median reported; peak RSS = max over rounds (GNU "
                   "time %%M)" % meta["reps"]),
        ("input resident in page cache", meta.get("residency", "")),
        ("ckptkit output == PyTorch output", meta.get("torch_same", "")),
    ]
    for k, v in facts:
        out_text.append("%-34s %s" % (k, v))
        out_md.append("- **%s**: %s" % (k, v))
    try:
        loads = [float(x) for x in meta.get("load", "").split(" → ")]
    except ValueError:
        loads = []
    if loads and max(loads) > 0.5:
        w = ("WARNING: the machine was busy (load average up to %.2f on %s); other processes "
             "compete for the CPUs and the disk, so these timings are noisy." %
             (max(loads), meta.get("cpu", "?").split(", ")[-1]))
        out_text.append(w)
        out_md.append("")
        out_md.append("**" + w + "**")
    both("")

    med = {k: statistics.median(r["walls"]) for k, r in runs.items()}
    rows = []
    for k in LABELS:
        if k not in runs:
            continue
        r = runs[k]
        rate = "" if k == "torch_import" else "%.2f" % (in_b / med[k] / gb)
        rows.append([LABELS[k], "%.3f" % med[k],
                     "%.3f–%.3f" % (min(r["walls"]), max(r["walls"])), rate,
                     "%.2f" % statistics.median(r["cpus"]), "%.1f" % (r["rss_kb"] / 1024)])
    t, m = fmt_table(["command (IN = %s F32)" % meta["layout"], "median s", "range s",
                      "GB/s in", "CPU s", "peak RSS MiB"], rows, "lrrrrr")
    note = ("GB/s = input bytes / median wall seconds (GB = 10^9); CPU s = median user+sys "
            "time of all threads (CPU much below wall: waiting for the disk or for the cores)")
    out_text += ["Wall time", t, note, ""]
    out_md += ["## Wall time", "", note + ".", "", m, ""]

    if inspect:
        ims = statistics.median(inspect["ms"])
        rows = [["ckptkit inspect (sparse %s, %.2f GB)" % (meta["sparse_layout"],
                                                           int(meta["sparse_bytes"]) / gb),
                 "%.2f" % ims, "%.2f–%.2f" % (min(inspect["ms"]), max(inspect["ms"])),
                 "%.1f" % (inspect["rss_kb"] / 1024)],
                ["/bin/true (process start floor)", "%.2f" % statistics.median(inspect["true_ms"]),
                 "%.2f–%.2f" % (min(inspect["true_ms"]), max(inspect["true_ms"])), ""]]
        t, m = fmt_table(["command", "median ms", "range ms", "peak RSS MiB"], rows, "lrrr")
        out_text += ["Inspect (%s runs)" % meta["inspect_reps"], t, ""]
        out_md += ["## Inspect", "", "%s runs, wall time of the whole process." %
                   meta["inspect_reps"], "", m, ""]

    # Ratios, all from this run.
    ratios = []
    def ratio(name, a, b, note=""):
        if a in med and b in med and med[b] > 0:
            ratios.append([name, "%.2f×" % (med[a] / med[b]), note])
    ratio("convert / cp+sync", "convert", "cp_sync", "both durable (fsync); target ≤ 1.00×")
    ratio("convert / cp", "convert", "cp", "fsynced convert vs unsynced copy")
    ratio("convert --no-sync / cp", "convert_nosync", "cp", "neither synced")
    ratio("convert / cat", "convert", "cat", "vs only reading the input")
    ratio("convert --no-sync / cat", "convert_nosync", "cat", "")
    ratio("torch / convert", "torch", "convert", "> 1: ckptkit is faster")
    if inspect:
        ratios.append(["inspect", "%.2f ms" % statistics.median(inspect["ms"]), "median wall"])
    t, m = fmt_table(["ratio (same run)", "value", "note"], ratios, "lrl")
    out_text += ["Ratios", t, ""]
    out_md += ["## Ratios", "", m, ""]

    # Targets.
    tgt = []
    if "convert" in med and "cp_sync" in med:
        r = med["convert"] / med["cp_sync"]
        tgt.append(["convert F32→F16 wall ≤ %.1f× cp+sync" % CONVERT_VS_CP_SYNC_MAX,
                    "%.2f×" % r, verdict(round(r, 2) <= CONVERT_VS_CP_SYNC_MAX)])
    if "convert" in runs:
        mib = runs["convert"]["rss_kb"] / 1024
        tgt.append(["convert peak RSS ≤ %d MiB" % CONVERT_RSS_MAX_MIB, "%.1f MiB" % mib,
                    verdict(mib <= CONVERT_RSS_MAX_MIB)])
    if inspect:
        ims = statistics.median(inspect["ms"])
        mib = inspect["rss_kb"] / 1024
        tgt.append(["inspect of %s ≤ %g ms" % (meta["sparse_layout"], INSPECT_MS_MAX),
                    "%.2f ms" % ims, verdict(round(ims, 2) <= INSPECT_MS_MAX)])
        tgt.append(["inspect peak RSS < %d MiB" % INSPECT_RSS_MAX_MIB, "%.1f MiB" % mib,
                    verdict(mib < INSPECT_RSS_MAX_MIB)])
    t, m = fmt_table(["target", "measured", "result"], tgt, "lrl")
    head = "Targets" + (" (quick run: convert targets apply to SD1.5; indicative only)"
                        if quick else "")
    out_text += [head, t, ""]
    out_md += ["## " + head, "", m, ""]

    out_md += ["## Commands", ""]
    out_md += ["- `%s`: `%s`" % (LABELS.get(k, k).strip(), r["cmd"]) for k, r in runs.items()]
    out_md += ["- inspect: `ckptkit inspect FILE > /dev/null` (FILE = the sparse %s sample)" %
               meta["sparse_layout"], ""]

    best, crows = cast_rows(cast_json)
    if crows:
        memcpy = next((r["bps"] for r in crows if r["kernel"] == "memcpy"), None)
        rows = []
        for r in crows:
            mark = " *" if r["target"] == best else ""
            rows.append([r["kernel"], r["target"] + mark, "%.2f" % (r["bps"] / gb),
                         "%.2f" % (r["rw"] / gb),
                         "%.2f×" % (r["bps"] / memcpy) if memcpy else ""])
        t, m = fmt_table(["kernel (16 MiB input, warm)", "SIMD target", "GB/s in",
                          "GB/s in+out", "vs memcpy"], rows, "llrrr")
        note = ("median of 3 repetitions; GB/s in = input bytes/s; '*' = the target ckptkit "
                "dispatches to; vs memcpy = input rate / memcpy's rate for the same input bytes")
        out_text += ["Cast kernels (ckptkit_cast_bench)", t, note]
        out_md += ["## Cast kernels (ckptkit_cast_bench)", "", note + ".", "", m, ""]

    print("\n".join(out_text))
    with open(md_path, "w") as f:
        f.write("\n".join(out_md).rstrip() + "\n")


if __name__ == "__main__":
    main()
