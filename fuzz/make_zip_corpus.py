#!/usr/bin/env python3
"""Writes the seed corpus of the ZIP reader fuzzer (fuzz/corpus/zip): archives of every shape
torch.save and Python's zipfile write, archives that are odd but readable (each with the finding
the reader should report) and archives with one thing broken. Standard library only; with
/usr/bin/python3 and PyTorch available it also adds two tiny real torch.save files.

    /usr/bin/python3 fuzz/make_zip_corpus.py

Files are named valid-* (readable, no finding), odd-* (readable, with findings), bad-* (refused)
and torch-* (real torch.save output). Stale valid-/odd-/bad-/torch- files are removed; found-*
files (inputs the fuzzer discovered, copied in by hand) are left alone. Deterministic except for
the torch-* files of PyTorch versions that write a random serialization id."""
import io
import os
import struct
import sys
import zipfile
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "zip")
OWNED_PREFIXES = ("valid-", "odd-", "bad-", "torch-")
DATE = (1980, 1, 1, 0, 0, 0)
M32 = 0xFFFFFFFF


def ramp(n, seed=0):
    return bytes((i * 7 + seed) % 251 for i in range(n))


# --- archives from Python's zipfile -----------------------------------------------------------

def pyzip(files, method=zipfile.ZIP_STORED, comment=b"", force_zip64=False):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, DATE)
            info.compress_type = method
            with zf.open(info, "w", force_zip64=force_zip64) as f:
                f.write(data)
        zf.comment = comment
    return buf.getvalue()


# --- archives byte by byte, with any field chosen -----------------------------------------------

def entry(name, data=b"", method=0, **kw):
    e = {"name": name, "data": data, "method": method}
    e.update(kw)
    return e


def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def build(entries, prefix=b"", comment=b"", trailing=b"", zip64=False, relative=False,
          count=None, cd_size=None, cd_offset=None, locator_offset=None, disk=0):
    """entries: dicts from entry(); optional keys override what is written:
    payload (stored bytes), crc, csize, usize (central values), flags, local_name, local_method,
    local_extra, central_extra, local_sizes (csize, usize), lho (central local header offset,
    relative to the archive start), zip64 (central ZIP64 extra for sizes and offset),
    descriptor (append a data descriptor; sets flag bit 3), gap (bytes after the entry)."""
    base = 0 if relative else len(prefix)
    body = bytearray()
    records = []
    for e in entries:
        data = e["data"]
        payload = e.get("payload", deflate(data) if e["method"] == 8 else data)
        crc = e.get("crc", zlib.crc32(data))
        csize, usize = e.get("csize", len(payload)), e.get("usize", len(data))
        flags = e.get("flags", 0) | (8 if e.get("descriptor") else 0)
        lname = e.get("local_name", e["name"]).encode()
        lextra = e.get("local_extra", b"")
        lcs, lus = e.get("local_sizes", (len(payload), len(data)))
        lcrc = crc
        if e.get("descriptor"):
            lcrc, lcs, lus = 0, 0, 0
        lho = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, e.get("local_method", e["method"]),
                            0, 0x21, lcrc, lcs & M32, lus & M32, len(lname), len(lextra))
        body += lname + lextra + payload
        if e.get("descriptor"):
            body += struct.pack("<IIII", 0x08074B50, crc, len(payload), len(data))
        body += e.get("gap", b"")
        records.append((e, crc, csize, usize, flags, e.get("lho", lho + base)))
    cd = bytearray()
    for e, crc, csize, usize, flags, lho in records:
        name = e["name"].encode()
        extra = e.get("central_extra", b"")
        c32, u32, o32 = csize, usize, lho
        if e.get("zip64"):
            extra = struct.pack("<HHQQQ", 1, 24, usize, csize, lho) + extra
            c32 = u32 = o32 = M32
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 20, flags, e["method"], 0, 0x21,
                          crc, c32 & M32, u32 & M32, len(name), len(extra), 0, e.get("disk", 0),
                          0, 0, o32 & M32)
        cd += name + extra
    n = len(entries) if count is None else count
    cdo = len(body) + base if cd_offset is None else cd_offset
    cds = len(cd) if cd_size is None else cd_size
    out = bytearray(prefix) + body + cd
    if zip64:
        z64 = len(out) - len(prefix) + base
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, disk, disk, n, n, cds, cdo)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64 if locator_offset is None else locator_offset,
                           1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, M32, M32,
                           len(comment))
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, disk, disk, n & 0xFFFF, n & 0xFFFF, cds & M32,
                           cdo & M32, len(comment))
    return bytes(out + comment + trailing)


def torch_like(root="archive", pad=True, descriptor=True):
    """What torch.save writes: data.pkl, data/<key>, version; data aligned to 64 bytes by an
    'FB' extra field in the local header; flag bits 3 and 11; a data descriptor per entry."""
    files = [(f"{root}/data.pkl", b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01s."),
             (f"{root}/data/0", ramp(40)), (f"{root}/version", b"3\n")]
    es, offset = [], 0
    for name, data in files:
        extra = b""
        if pad:
            start = offset + 30 + len(name) + 4
            extra = b"FB" + struct.pack("<H", (-start) % 64) + b"Z" * ((-start) % 64)
        es.append(entry(name, data, local_extra=extra, descriptor=descriptor, flags=0x800))
        offset += 30 + len(name) + len(extra) + len(data) + (16 if descriptor else 0)
    return build(es)


def corrupt(data, offset, new):
    b = bytearray(data)
    b[offset:offset + len(new)] = new
    return bytes(b)


def find(data, sig, nth=0):
    pos = -1
    for _ in range(nth + 1):
        pos = data.index(sig, pos + 1)
    return pos


def cases():
    three = [("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/data/0", ramp(100)),
             ("archive/version", b"3\n")]
    # --- valid -------------------------------------------------------------------------------
    stored = pyzip(three)
    deflated = pyzip([(n, d * 3) for n, d in three], zipfile.ZIP_DEFLATED)
    yield "valid-stored", stored
    yield "valid-deflated", deflated
    yield "valid-force-zip64", pyzip(three, zipfile.ZIP_DEFLATED, force_zip64=True)
    yield "valid-empty", pyzip([])
    yield "valid-empty-entries", pyzip([("a/x", b""), ("a/y", b"")], zipfile.ZIP_DEFLATED)
    yield "valid-torch-like", torch_like()
    yield "valid-zip64-records", build([entry("archive/data/0", ramp(70), zip64=True),
                                        entry("archive/data/1", ramp(9), method=8, zip64=True)],
                                       zip64=True)
    yield "valid-deflate-descriptor", build([entry("r/a", ramp(300), method=8, descriptor=True),
                                             entry("r/b", b"", method=8, descriptor=True)])
    # --- odd: readable, with findings --------------------------------------------------------
    yield "odd-comment", pyzip(three, comment=b"hello, this is a comment")
    yield "odd-prefix-absolute", build([entry("r/a", b"abc")], prefix=b"#!/bin/sh\nexit 0\n")
    yield "odd-prefix-relative", b"GIF89a........" + stored
    yield "odd-two-archives", pyzip([("x/1", b"first")]) + stored
    yield "odd-trailing-bytes", stored + b"\0" * 33
    yield "odd-trailing-second-eocd", stored + b"junk" + stored[-22:-2] + b"\xff\x00"
    yield "odd-overlap", build([entry("r/a", b"abcdef"), entry("r/b", b"abcdef", lho=0,
                                                                 local_name="r/a")])
    yield "odd-gap", build([entry("r/a", b"abc", gap=b"HIDDEN"), entry("r/b", b"def")])
    yield "odd-duplicate-name", build([entry("r/a", b"one"), entry("r/a", b"two")])
    yield "odd-local-name-differs", build([entry("r/a", b"abc", local_name="r/evil")])
    yield "odd-local-method-differs", build([entry("r/a", b"abc", local_method=8)])
    yield "odd-names-outside-root", build([entry("r/a", b"1"), entry("r/b", b"2"),
                                           entry("other/c", b"3"), entry("../d", b"4"),
                                           entry("/abs", b"5"), entry("top", b"6")])
    # --- bad: truncations --------------------------------------------------------------------
    for cut in (0, 30, len(deflated) // 2, len(deflated) - 1):
        yield f"bad-truncated-{cut}", deflated[:cut]
    z64 = build([entry("archive/data/0", ramp(70), zip64=True)], zip64=True)
    yield "bad-truncated-zip64-locator", z64[:-22 - 10] + z64[-22:]
    # --- bad: end record and central directory -----------------------------------------------
    eocd = len(stored) - 22
    yield "bad-no-end-record", corrupt(stored, eocd, b"PK\x05\x07")
    yield "bad-comment-past-eof", corrupt(stored, eocd + 20, struct.pack("<H", 500))
    yield "bad-cd-offset-past-eof", corrupt(stored, eocd + 16, struct.pack("<I", 99999))
    yield "bad-cd-size-past-end", corrupt(stored, eocd + 12, struct.pack("<I", 9999))
    yield "bad-cd-offset-wrong", corrupt(stored, eocd + 16, struct.pack("<I", 5))
    yield "bad-count-too-high", corrupt(stored, eocd + 8, struct.pack("<HH", 4, 4))
    yield "bad-count-too-low", corrupt(stored, eocd + 8, struct.pack("<HH", 2, 2))
    yield "bad-count-disk-mismatch", corrupt(stored, eocd + 8, struct.pack("<H", 2))
    yield "bad-count-huge", corrupt(stored, eocd + 8, struct.pack("<HH", 0xFFFF, 0xFFFF))
    yield "bad-multi-disk", corrupt(stored, eocd + 4, struct.pack("<HH", 1, 1))
    # --- bad: entries ------------------------------------------------------------------------
    cd0 = find(stored, b"PK\x01\x02")
    yield "bad-local-offset-past-eof", corrupt(stored, cd0 + 42, struct.pack("<I", 1 << 20))
    yield "bad-local-offset-into-cd", corrupt(stored, cd0 + 42, struct.pack("<I", cd0 - 10))
    yield "bad-local-signature", corrupt(stored, 0, b"PK\x03\x05")
    yield "bad-size-past-eof", build([entry("r/a", b"abc", csize=1 << 20, usize=1 << 20)])
    yield "bad-stored-sizes-differ", build([entry("r/a", b"abc", usize=4)])
    yield "bad-encrypted", build([entry("r/a", b"abc", flags=1)])
    yield "bad-method-12", build([entry("r/a", b"abc", method=12, payload=b"abc")])
    yield "bad-deflate-garbage", build([entry("r/a", ramp(50), method=8, payload=b"\xff" * 20)])
    yield "bad-deflate-cut", build([entry("r/a", ramp(500), method=8,
                                          payload=deflate(ramp(500))[:-5])])
    yield "bad-deflate-trailing", build([entry("r/a", ramp(50), method=8,
                                               payload=deflate(ramp(50)) + b"extra")])
    yield "bad-crc", build([entry("r/a", b"abc", crc=0x12345678)])
    yield "bad-inflated-size-larger", build([entry("r/a", ramp(80), method=8, usize=81)])
    yield "bad-inflated-size-smaller", build([entry("r/a", ramp(80), method=8, usize=79)])
    yield "bad-inflate-bomb-claim", build([entry("r/a", b"\0" * 100000, method=8, usize=1 << 40,
                                                 zip64=True)], zip64=True)
    # --- bad: ZIP64 --------------------------------------------------------------------------
    yield "bad-zip64-locator-past-eof", build([entry("r/a", b"abc")], zip64=True,
                                              locator_offset=1 << 40)
    yield "bad-zip64-locator-max", build([entry("r/a", b"abc")], zip64=True,
                                         locator_offset=2**64 - 1)
    yield "bad-zip64-count-huge", build([entry("r/a", b"abc")], zip64=True, count=2**63)
    yield "bad-zip64-cd-wraps", build([entry("r/a", b"abc")], zip64=True, cd_offset=2**64 - 8)
    yield "bad-zip64-extra-missing", build([entry("r/a", b"abc", lho=M32)])
    yield "bad-zip64-extra-short", build([entry("r/a", b"abc", usize=M32, csize=M32,
                                                central_extra=struct.pack("<HHQ", 1, 8, 3))])
    yield "bad-zip64-offset-wraps", build([entry("r/a", b"abc", zip64=True, lho=2**64 - 10)],
                                          zip64=True)
    yield "bad-zip64-size-wraps", build([entry("r/a", b"abc", zip64=True, csize=2**64 - 40,
                                               usize=2**64 - 40)], zip64=True)
    yield "bad-zip64-multi-disk", build([entry("r/a", b"abc")], zip64=True, disk=2)


def torch_cases():
    try:
        import torch  # noqa: F401 (optional oracle)
    except ImportError:
        return
    import torch
    for name, obj in (("torch-arange", {"a": torch.arange(10)}),
                      ("torch-two-tensors", {"w": torch.ones(2, 3, dtype=torch.float16),
                                             "b": torch.zeros(3)})):
        buf = io.BytesIO()
        torch.save(obj, buf)
        yield name, buf.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.startswith(OWNED_PREFIXES):
            os.remove(os.path.join(OUT, f))
    n = 0
    for name, data in list(cases()) + list(torch_cases()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        n += 1
    print(f"wrote {n} files to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
