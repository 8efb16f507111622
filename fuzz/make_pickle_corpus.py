#!/usr/bin/env python3
"""Writes the seed corpus of the pickle fuzzer (fuzz/corpus/pickle): Python's own pickles of
plain data at every protocol, torch.save data.pkl files (when python3-torch is installed), hand
-made pickles for the opcodes Python's pickler never writes, the malicious shapes ckptkit scan
must see, and broken ones (truncations, lengths past the end, bad memo indices, missing MARKs).
Every opcode of protocols 0-5 appears at least once (checked below). Deterministic; run from
anywhere:

    /usr/bin/python3 fuzz/make_pickle_corpus.py

Files are named valid-*, torch-*, hand-*, mal-* and bad-*; stale files with those prefixes are
removed, found-* files (inputs the fuzzer discovered, copied in by hand) are left alone."""
import collections
import io
import os
import pickle
import pickletools
import struct
import zipfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "pickle")
OWNED_PREFIXES = ("valid-", "torch-", "hand-", "mal-", "bad-")
MAX_SIZE = 64 * 1024


def su(s):
    """SHORT_BINUNICODE."""
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def bu(s):
    """BINUNICODE."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def u64(n):
    return struct.pack("<Q", n)


def data_objects():
    shared = [1, 2]
    selfref = [1]
    selfref.append(selfref)
    rectuple = ([],)
    rectuple[0].append(rectuple)
    return {
        "data": [None, True, False, 0, -1, 255, 65536, -2**31, 2**63, -2**100, 3**80, 0.0, -0.0,
                 1.5, float("inf"), float("nan"), 5e-324, "", "abc", "h\xe9llo", "\u65e5\u672c",
                 "\U0001F600", "back\\slash\n", "\ud800", b"", b"\x00\xff", bytearray(b"ab")],
        "graph": {"t": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)], "s": {1, "x"},
                  "f": frozenset({3}), "d": {(1, 2): [{}]}, "shared": [shared, shared],
                  "selfref": selfref, "rectuple": rectuple},
        "memo": ["s%d" % i for i in range(300)] * 2,
        "big": list(range(1100)),
    }


def torch_pickles():
    try:
        import torch
    except Exception:
        return {}

    def data_pkl(obj):
        b = io.BytesIO()
        torch.save(obj, b)
        z = zipfile.ZipFile(b)
        return z.read([n for n in z.namelist() if n.endswith("data.pkl")][0])

    sd = collections.OrderedDict()
    sd["w32"] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    sd["h16"] = torch.zeros(3, 4, dtype=torch.float16)[1:, ::2]
    sd["bf"] = torch.ones(5, dtype=torch.bfloat16)
    sd["i64"] = torch.arange(3)
    sd["u8"] = torch.zeros(2, dtype=torch.uint8)
    sd["b"] = torch.zeros(2, dtype=torch.bool)
    return {
        "torch-state-dict": data_pkl(sd),
        "torch-checkpoint": data_pkl({"state_dict": sd, "epoch": 3, "lr": 1e-4,
                                      "dtype": torch.float16, "size": torch.Size([2, 3]),
                                      "device": torch.device("cpu")}),
        "torch-parameter": data_pkl({"p": torch.nn.Parameter(torch.ones(2, 2))}),
        "torch-untyped-storage": data_pkl(torch.ones(2).storage().untyped()),
    }


def hand_pickles():
    return {
        # py2 strings and protocol-0 text forms
        "hand-string-escapes": b"S'abc\\n\\x41\\101\\'q\\\\'\n.",
        "hand-string-bad-escape": b"S'a\\x4'\n.",
        "hand-py2-strings": b"(S'a'\nU\x03bcdT\x02\x00\x00\x00efl.",
        "hand-int-forms": b"(I01\nI00\nI010\nI-017\nI0x1F\nI 12 \nI1_000\n"
                          b"I123456789012345678901234567890\nl.",
        "hand-long-forms": b"(L-99999999999999999999999L\nL5L\nL0x10L\nl.",
        "hand-float-forms": b"(F1.5\nF-0.0\nFnan\nF1e999\nF 2.5 \nl.",
        "hand-unicode": b"Vcaf\xe9 \\u20ac \\\\u0041 \\U0001F600 \\u12\n.",
        "hand-dict-list-get-put": b"((I1\nI2\ndp0\n(lp1\nI1\naI2\nag0\ng1\ntp2\n0g2\n.",
        "hand-frame-memoize": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01\x94\x85.",
        # A frame that runs past STOP into trailing bytes (the fuzzer's first finding: valid for
        # Python, whose check is against the whole input).
        "hand-frame-past-stop": b"\x80\x04\x95\x0c" + b"\x00" * 7 + b"K\x01.trailing!",
        "hand-long1-long4": b"\x80\x02(\x8a\x09\x01" + b"\x00" * 8 + b"\x8a\x01\xff\x8b\x03\x00\x00"
                            b"\x00\x00\x00\x80\x8b\x00\x00\x00\x00l.",
        "hand-sets": b"\x80\x04\x8f(K\x01K\x02\x90(K\x03\x91\x86.",
        "hand-pop-popmark-dup": b"(K\x01K\x021K\x05(0]2a.",
        "hand-eight-byte-lengths": b"\x80\x05(\x8d\x02" + b"\x00" * 7 + b"hi\x8e\x01" + b"\x00" * 7 +
                                   b"x\x96\x01" + b"\x00" * 7 + b"yl.",
        "hand-buffers": b"\x80\x05(C\x02ab\x98\x97\x98l.",
        "hand-binints": b"(J\xff\xff\xff\xffM\xff\xffK\xffJ\x00\x00\x00\x80G\x3f\xf8" + b"\x00" * 6 +
                        b"l.",
        "hand-binbytes": b"\x80\x03(B\x03\x00\x00\x00abcC\x01zl.",
        "hand-setitem-list": b"]K\x01aK\x00K\x07s.",
        "hand-put-overwrite": b"K\x01q\x00K\x02q\x00\x94h\x01.",
        "hand-long-binput": b"K\x05r\xff\xff\xff\xffj\xff\xff\xff\xff.",
        "hand-persid": b"(P12\nK\x07Ql.",
        "hand-reduce-build": b"\x80\x02cm\nC\n)R}b(K\x01K\x02u(K\x03K\x04e.",
        "hand-newobj": b"\x80\x02cm\nC\n)\x81.",
        "hand-newobj-ex": b"\x80\x04" + su("m") + su("C") + b"\x93K\x01\x85}\x92.",
        "hand-build-on-list": b"]K\x01b.",
        "hand-inst-obj": b"((S'id'\nim\nC\n(cm\nD\nK\x01ol.",
        "hand-ext": b"\x80\x02(\x82\x01\x83\x01\x02\x84\xff\xff\xff\xffl.",
        "hand-proto0-trailing": b"K\x01.trailing bytes after STOP",
        "hand-billion-laughs": b"\x80\x02]q\x00" + b"".join(
            b"(" + (b"h" + bytes([lv - 1])) * 10 + b"lq" + bytes([lv]) for lv in range(1, 30)) + b".",
    }


def malicious_pickles():
    return {
        "mal-os-system": b"cos\nsystem\n(Vecho pwned\ntR.",
        "mal-posix-system": b"\x80\x02cposix\nsystem\n" + bu("id") + b"\x85R.",
        "mal-builtins-exec": b"\x80\x04" + su("builtins") + su("exec") + b"\x93" +
                             su("print('hi')") + b"\x85R.",
        "mal-py2-eval": b"c__builtin__\neval\n(V1+1\ntR.",
        "mal-stack-global-memo": b"\x80\x04" + su("subprocess") + b"q\x00" + su("Popen") +
                                 b"q\x0100h\x00h\x01\x93" + su("id") + b"\x85\x85R.",
        "mal-inst": b"(S'id'\nios\nsystem\n.",
        "mal-obj": b"(cos\nsystem\nS'id'\no.",
        "mal-ext1": b"\x80\x02\x82\x01)R.",
        "mal-getattr-chain": b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR"
                             b"(Vid\ntR.",
        "mal-runpy": b"crunpy\n_run_code\n(Vprint(1)\n}tR.",
        "mal-importlib": b"\x80\x04" + su("importlib") + su("import_module") + b"\x93" + su("os") +
                         b"\x85R.",
        "mal-newobj-ex": b"\x80\x04" + su("subprocess") + su("Popen") + b"\x93" + su("id") +
                         b"\x85}\x92.",
        "mal-dotted": b"\x80\x04" + su("torch") + su("serialization.os.system") + b"\x93" +
                      su("id") + b"\x85R.",
        "mal-after-benign": b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01ccollections\nOrderedDict\n"
                            b"q\x02)Rq\x03X\x01\x00\x00\x00bcos\nsystem\nX\x02\x00\x00\x00id\x85"
                            b"Rq\x04u.",
        "mal-non-string": b"\x80\x04K\x01K\x02\x93)R.",
        "mal-py2-string-names": b"\x80\x02U\x02osU\x06system\x93U\x02id\x85R.",
        "mal-torch-load": b"\x80\x02ctorch\nload\n" + bu("/tmp/x") + b"\x85R.",
    }


def bad_pickles(valid):
    out = {
        "bad-empty": b"",
        "bad-no-stop": b"\x80\x02K\x01",
        "bad-unknown-opcode": b"K\x01\xff.",
        "bad-get-missing": b"\x80\x02h\x07.",
        "bad-reduce-underflow": b"(K\x01R.",
        "bad-stop-empty": b".",
        "bad-odd-setitems": b"}(K\x01u.",
        "bad-odd-dict": b"(K\x01d.",
        "bad-append-to-tuple": b")K\x01a.",
        "bad-binunicode8-huge": b"\x8d" + u64(2**63) + b".",
        "bad-binunicode-past-end": b"\x80\x02X\xff\xff\xff\xffabc.",
        "bad-long4-huge": b"\x8b\xff\xff\xff\x7f.",
        "bad-long4-negative": b"\x8b\xff\xff\xff\xff.",
        "bad-binstring-negative": b"T\xff\xff\xff\xff.",
        "bad-frame-past-end": b"\x80\x04\x95\x10" + b"\x00" * 7 + b"K\x01.",
        "bad-proto-6": b"\x80\x06.",
        "bad-global-no-newline": b"cos\nsystem",
        "bad-int-text": b"I12x\n.",
        "bad-int-many-digits": b"I" + b"7" * 4400 + b"\n.",
        "bad-string-unquoted": b"Sabc\n.",
        "bad-put-negative": b"K\x01p-1\n.",
        "bad-deep-marks": b"(" * 5000 + b".",
        "bad-node-bomb": b"]" * 20000 + b".",
        "bad-dup-bomb": b"]" + b"2" * 5000 + b".",
    }
    # Truncations of valid pickles, at a few interesting places.
    for name in ("valid-p2-graph", "valid-p4-data", "torch-checkpoint"):
        data = valid.get(name)
        if data is not None:
            out["bad-cut-%s" % name] = data[: len(data) // 2]
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.startswith(OWNED_PREFIXES):
            os.remove(os.path.join(OUT, f))
    files = {}
    for name, obj in data_objects().items():
        for proto in range(6):
            files["valid-p%d-%s" % (proto, name)] = pickle.dumps(obj, proto)
    files.update(torch_pickles())
    files.update(hand_pickles())
    files.update(malicious_pickles())
    files.update(bad_pickles(files))

    # Every opcode of protocols 0-5 at least once (pickletools reads INT as decimal only, so
    # files it cannot walk are skipped here).
    seen = set()
    for name, data in files.items():
        if name.startswith("bad-"):
            continue
        try:
            for op, _, _ in pickletools.genops(data):
                seen.add(op.name)
        except ValueError:
            pass
    missing = sorted(op.name for op in pickletools.opcodes if op.name not in seen)
    assert not missing, "opcodes missing from the corpus: %s" % missing

    for name, data in sorted(files.items()):
        assert len(data) < MAX_SIZE, (name, len(data))
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote %d files to %s" % (len(files), OUT))


if __name__ == "__main__":
    main()
