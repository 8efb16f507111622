#!/usr/bin/env python3
"""Writes the seed corpus of the safetensors header fuzzer (fuzz/corpus/safetensors_header):
valid files of every shape the format allows and at least one hand-made file per reader rule
(include/ckptkit/safetensors.h lists the rules). Deterministic; run from anywhere:

    /usr/bin/python3 fuzz/make_corpus.py

Files are named by what they are: valid-*, edge-* (legal but unusual), bad-* (one rule broken)
and foreign-* (not safetensors at all). Stale valid-/edge-/bad-/foreign- files are removed;
found-* files (inputs the fuzzer discovered, copied in by hand) are left alone."""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors_header")
OWNED_PREFIXES = ("valid-", "edge-", "bad-", "foreign-")
# Bits per element, in the order of the safetensors specification.
BITS = {"BOOL": 8, "U8": 8, "I8": 8, "U16": 16, "I16": 16, "U32": 32, "I32": 32, "U64": 64,
        "I64": 64, "F16": 16, "BF16": 16, "F32": 32, "F64": 64, "F8_E4M3": 8, "F8_E5M2": 8,
        "F8_E8M0": 8, "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4, "C64": 64}
U64_MAX = 2**64 - 1


def file_bytes(header, data=b"", length=None):
    """8-byte little-endian length (the true one unless given), header, data."""
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def ramp(n):
    return bytes(i % 251 for i in range(n))


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    return n * BITS[dtype] // 8


def entry(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


def valid(tensors, metadata=None, pad=True, ensure_ascii=True):
    """tensors: (name, dtype, shape) in data order; the data is a byte ramp."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        size = nbytes(dtype, shape)
        header[name] = entry(dtype, shape, off, off + size)
        off += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=ensure_ascii)
    raw = text.encode()
    if pad:
        raw += b" " * ((8 - len(raw) % 8) % 8)
    return file_bytes(raw, ramp(off))


def sub_byte_shape(dtype):
    """A small shape that fills whole bytes for every dtype (F6: 4 x 6 bits = 3 bytes)."""
    return [4] if BITS[dtype] == 6 else [2]


def one(dtype, shape, b, e, data_len):
    return file_bytes(json.dumps({"a": entry(dtype, shape, b, e)}), b"\0" * data_len)


def cases():
    # --- valid files -----------------------------------------------------------------------
    yield "valid-empty", valid([])
    yield "valid-empty-metadata-object", file_bytes('{"__metadata__":{}}')
    yield "valid-null-metadata", file_bytes('{"__metadata__":null}')
    yield "valid-metadata-only", valid([], {"format": "pt", "title": "caf\u00e9 \"q\" \\ \n"})
    for d in BITS:
        yield f"valid-dtype-{d}", valid([("w", d, sub_byte_shape(d))])
    yield "valid-every-dtype", valid([(d, d, sub_byte_shape(d)) for d in BITS])
    yield "valid-scalar", valid([("s", "F32", [])])
    yield "valid-zero-size", valid([("z", "F16", [0])])
    yield "valid-scalar-and-zero-size", valid([("s", "F32", []), ("z", "F16", [0, 3]),
                                                ("w", "BF16", [2, 3])])
    yield "valid-zero-size-at-end", valid([("a", "U8", [3]), ("z", "I32", [4, 0])])
    yield "valid-sd-names", valid([
        ("cond_stage_model.transformer.text_model.embeddings.position_ids", "I64", [1, 3]),
        ("model.diffusion_model.input_blocks.0.0.weight", "F16", [2, 1, 3, 3]),
        ("first_stage_model.decoder.conv_in.bias", "F32", [2])],
        {"modelspec.title": "x", "ss_network_dim": "16"})
    # Raw (unescaped) UTF-8 in keys and values: 2-, 3- and 4-byte sequences.
    yield "valid-metadata-unicode", valid(
        [("caf\u00e9.\u6a21\u578b.\U0001F600", "U8", [1])],
        {"\u00e9t\u00e9": "\u65e5\u672c\u8a9e \U0001F3A8", "emoji": "\U0001F600"},
        ensure_ascii=False)
    # Every JSON escape, a surrogate pair and \u0000, in metadata and in a tensor name.
    yield "valid-metadata-escapes", file_bytes(
        '{"__metadata__":{"esc":"\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000 \\u00e9 \\ud83d\\ude00",'
        '"\\u006b\\u0065\\u0079":"v"},'
        '"t\\u0000\\n\\"\\\\":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"ab")
    yield "valid-leading-whitespace", file_bytes(" \t\r\n{}")
    yield "valid-trailing-whitespace", file_bytes("{} \t\r\n   ")
    yield "valid-whitespace-inside", file_bytes(
        '{ "a" : { "dtype" : "U8" , "shape" : [ 1 , 2 ] , "data_offsets" : [ 0 , 2 ] } }',
        b"xy")
    yield "valid-unpadded", valid([("a", "U8", [3])], pad=False)
    yield "valid-fields-reordered", file_bytes(
        '{"a":{"data_offsets":[0,4],"shape":[2],"dtype":"F16"}}', b"\0" * 4)
    # JSON key order differs from data order: the reader sorts by offset.
    yield "valid-keys-not-in-data-order", file_bytes(json.dumps(
        {"b": entry("F32", [1], 4, 8), "a": entry("F32", [1], 0, 4)}), ramp(8))
    # Legal but not the reference writer's order (F16 data before F32 data).
    yield "valid-noncanonical-order", valid([("h", "F16", [2]), ("f", "F32", [1])])
    yield "valid-metadata-last", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"__metadata__":{"k":"v"}}',
        b"\x07")
    # --- legal but unusual ---------------------------------------------------------------------
    yield "edge-huge-dim-times-zero", file_bytes(
        json.dumps({"a": entry("F64", [U64_MAX, 0], 0, 0)}))
    yield "edge-zero-then-huge-dim", file_bytes(
        json.dumps({"a": entry("F64", [0, U64_MAX], 0, 0)}))
    yield "edge-many-zero-size", valid([(f"z{i}", "F32", [0]) for i in range(6)] +
                                       [("a", "U8", [1])] + [("y", "U8", [0])])
    yield "edge-deep-shape", valid([("a", "U8", [1] * 40)])
    yield "edge-empty-name", valid([("", "U8", [1])])
    # --- one rule broken each -------------------------------------------------------------------
    ok = json.dumps({"a": entry("F32", [2], 0, 8)})
    # length prefix
    yield "bad-empty", b""
    yield "bad-short", b"\x05\x00\x00"
    yield "bad-short-7-bytes", b"\x02\x00\x00\x00\x00\x00\x00"
    yield "bad-length-past-eof", file_bytes("{}", length=1 << 40)
    yield "bad-length-u64-max", file_bytes("{}", length=U64_MAX)
    yield "bad-length-one-past-eof", file_bytes("{}", length=3)
    yield "bad-length-too-small", file_bytes("{", length=1)
    yield "bad-length-zero", file_bytes("", length=0)
    yield "bad-length-cuts-object", file_bytes(ok, b"\0" * 8, length=len(ok) - 1)
    # UTF-8
    yield "bad-utf8", file_bytes(b'{"__metadata__":{"k":"\xff"}}')
    yield "bad-utf8-overlong", file_bytes(b'{"__metadata__":{"k":"\xc0\xaf"}}')
    yield "bad-utf8-surrogate", file_bytes(b'{"__metadata__":{"k":"\xed\xa0\x80"}}')
    yield "bad-utf8-above-max", file_bytes(b'{"__metadata__":{"k":"\xf4\x90\x80\x80"}}')
    yield "bad-utf8-cut-at-end", file_bytes(b'{}\xe2\x82')
    yield "bad-utf8-in-key", file_bytes(
        b'{"\x80":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0")
    # a JSON object
    yield "bad-not-object", file_bytes("[1,2]")
    yield "bad-not-object-string", file_bytes('"{}"')
    yield "bad-not-object-number", file_bytes("42")
    yield "bad-whitespace-only", file_bytes("        ")
    yield "bad-bom", file_bytes(b"\xef\xbb\xbf{}")
    yield "bad-trailing-content", file_bytes("{} {}")
    yield "bad-trailing-garbage", file_bytes("{}x")
    yield "bad-trailing-nul", file_bytes(b"{}\0\0")
    yield "bad-unclosed-object", file_bytes('{"a":')
    yield "bad-unclosed-string", file_bytes('{"a')
    yield "bad-trailing-comma", file_bytes('{"__metadata__":{"k":"v"},}')
    yield "bad-single-quotes", file_bytes("{'__metadata__':{}}")
    yield "bad-bad-escape", file_bytes('{"__metadata__":{"k":"\\x41"}}')
    yield "bad-lone-surrogate-escape", file_bytes('{"__metadata__":{"k":"\\ud800"}}')
    yield "bad-control-char-in-string", file_bytes('{"__metadata__":{"k":"a\tb"}}')
    yield "bad-deep-nesting", file_bytes(
        '{"a":{"dtype":"U8","shape":' + "[" * 200 + "]" * 200 + ',"data_offsets":[0,1]}}', b"\0")
    # duplicate keys
    yield "bad-duplicate-key", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"\0\0")
    yield "bad-duplicate-key-escaped", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        '"\\u0061":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"\0\0")
    yield "bad-duplicate-metadata", file_bytes('{"__metadata__":{},"__metadata__":{}}')
    yield "bad-metadata-duplicate-key", file_bytes('{"__metadata__":{"k":"1","k":"2"}}')
    # __metadata__ maps strings to strings
    yield "bad-metadata-number", file_bytes('{"__metadata__":{"steps":1000}}')
    yield "bad-metadata-array", file_bytes('{"__metadata__":["a"]}')
    yield "bad-metadata-string", file_bytes('{"__metadata__":"a"}')
    yield "bad-metadata-nested-object", file_bytes('{"__metadata__":{"k":{"x":"y"}}}')
    yield "bad-metadata-null-value", file_bytes('{"__metadata__":{"k":null}}')
    yield "bad-metadata-bool-value", file_bytes('{"__metadata__":{"k":true}}')
    yield "bad-escaped-metadata-key-with-tensor", file_bytes(
        '{"\\u005f_metadata__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0")
    # known dtype
    yield "bad-unknown-dtype", one("F7", [1], 0, 1, 1)
    yield "bad-dtype-lowercase", one("f16", [1], 0, 2, 2)
    yield "bad-dtype-empty", one("", [1], 0, 1, 1)
    yield "bad-dtype-number", file_bytes('{"a":{"dtype":16,"shape":[1],"data_offsets":[0,2]}}',
                                         b"\0\0")
    yield "bad-dtype-twice", file_bytes(
        '{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0")
    # entry fields
    yield "bad-entry-not-object", file_bytes('{"a":[1]}')
    yield "bad-entry-null", file_bytes('{"a":null}')
    yield "bad-missing-dtype", file_bytes('{"a":{"shape":[1],"data_offsets":[0,1]}}', b"\0")
    yield "bad-missing-shape", file_bytes('{"a":{"dtype":"U8","data_offsets":[0,1]}}', b"\0")
    yield "bad-missing-offsets", file_bytes('{"a":{"dtype":"F32","shape":[1]}}')
    yield "bad-empty-entry", file_bytes('{"a":{}}')
    yield "bad-unexpected-field", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}', b"\0")
    yield "bad-shape-twice", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"shape":[1],"data_offsets":[0,1]}}', b"\0")
    yield "bad-offsets-twice", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"data_offsets":[0,1]}}', b"\0")
    # shape: non-negative integers
    yield "bad-negative-dim", file_bytes(
        '{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}', b"\0")
    yield "bad-minus-zero-dim", file_bytes(
        '{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}')
    yield "bad-float-dim", file_bytes(
        '{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}', b"\0")
    yield "bad-float-integral-dim", file_bytes(
        '{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', b"\0")
    yield "bad-exponent-dim", file_bytes(
        '{"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}', b"\0")
    yield "bad-dim-2pow64", file_bytes(
        '{"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}', b"\0")
    yield "bad-dim-leading-zero", file_bytes(
        '{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}', b"\0")
    yield "bad-dim-string", file_bytes(
        '{"a":{"dtype":"U8","shape":["1"],"data_offsets":[0,1]}}', b"\0")
    yield "bad-shape-not-array", file_bytes(
        '{"a":{"dtype":"U8","shape":1,"data_offsets":[0,1]}}', b"\0")
    yield "bad-shape-nested-array", file_bytes(
        '{"a":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}}', b"\0")
    # element and byte counts within 64 bits; sub-byte types fill whole bytes
    yield "bad-numel-overflow", file_bytes(json.dumps({"a": entry("U8", [2**32, 2**32, 2], 0, 0)}))
    yield "bad-numel-overflow-before-zero", file_bytes(
        json.dumps({"a": entry("U8", [2**63, 2, 0], 0, 0)}))
    yield "bad-bytes-overflow", file_bytes(json.dumps({"a": entry("F32", [2**62], 0, 0)}))
    yield "bad-subbyte", one("F4", [3], 0, 2, 2)
    yield "bad-subbyte-f6", one("F6_E2M3", [3], 0, 3, 3)
    # data_offsets: two integers, span == byte count
    yield "bad-offsets-one-element", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[1]}}', b"\0")
    yield "bad-offsets-three-elements", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,1]}}', b"\0")
    yield "bad-offsets-negative", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}', b"\0")
    yield "bad-offsets-not-array", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":{"0":1}}}', b"\0")
    yield "bad-end-before-begin", one("U8", [0], 4, 0, 4)
    yield "bad-size-mismatch", one("F32", [2], 0, 4, 4)
    yield "bad-size-mismatch-wraps", one("U8", [1], 2, 1, 2)
    # the spans tile the data section
    yield "bad-gap", file_bytes(json.dumps({"a": entry("F32", [1], 0, 4),
                                            "b": entry("F32", [1], 8, 12)}), b"\0" * 12)
    yield "bad-gap-at-start", one("F32", [1], 4, 8, 8)
    yield "bad-gap-zero-size-at-max-offset", file_bytes(
        json.dumps({"a": entry("U8", [0], U64_MAX, U64_MAX)}))
    yield "bad-overlap", file_bytes(json.dumps({"a": entry("F32", [2], 0, 8),
                                                "b": entry("F32", [2], 4, 12)}), b"\0" * 12)
    yield "bad-same-range-twice", file_bytes(json.dumps({"a": entry("F32", [1], 0, 4),
                                                         "b": entry("F32", [1], 0, 4)}),
                                             b"\0" * 4)
    yield "bad-zero-size-inside-other", file_bytes(json.dumps({"a": entry("F32", [2], 0, 8),
                                                               "z": entry("F32", [0], 4, 4)}),
                                                   b"\0" * 8)
    yield "bad-truncated", file_bytes(ok, b"\0" * 5)
    yield "bad-truncated-no-data", file_bytes(ok)
    yield "bad-trailing-bytes", file_bytes(ok, b"\0" * 11)
    yield "bad-data-without-tensors", file_bytes("{}      ", b"\0" * 8)
    # --- not safetensors at all ---------------------------------------------------------------
    yield "foreign-html", b"<!DOCTYPE html>\n<html><body>Not Found</body></html>\n"
    yield "foreign-html-lowercase", b"\n<html><head><title>401</title></head></html>\n"
    yield "foreign-lfs-pointer", (b"version https://git-lfs.github.com/spec/v1\n"
                                  b"oid sha256:" + b"0" * 64 + b"\nsize 2132625894\n")
    yield "foreign-zip", b"PK\x03\x04" + b"\0" * 60
    yield "foreign-zip-empty-archive", b"PK\x05\x06" + b"\0" * 18
    yield "foreign-pickle", b"\x80\x02}q\x00."
    yield "foreign-gguf", b"GGUF\x03\x00\x00\x00" + b"\0" * 16
    yield "foreign-json-config", b'{"_class_name": "UNet2DConditionModel", "sample_size": 64}\n'


def main():
    os.makedirs(OUT, exist_ok=True)
    names = set()
    for name, data in cases():
        assert name not in names, name
        names.add(name)
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    for old in sorted(os.listdir(OUT)):
        if old.startswith(OWNED_PREFIXES) and old not in names:
            os.remove(os.path.join(OUT, old))
            print(f"removed stale {old}")
    print(f"wrote {len(names)} files to {OUT}")


if __name__ == "__main__":
    main()
