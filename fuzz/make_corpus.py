#!/usr/bin/env python3
"""Writes the seed corpus of the safetensors header fuzzer (fuzz/corpus/safetensors_header):
valid files of every shape the format allows and one hand-made file per reader rule.
Deterministic; run from anywhere: /usr/bin/python3 fuzz/make_corpus.py"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors_header")
BITS = {"BOOL": 8, "U8": 8, "I8": 8, "U16": 16, "I16": 16, "U32": 32, "I32": 32, "U64": 64,
        "I64": 64, "F16": 16, "BF16": 16, "F32": 32, "F64": 64, "F8_E4M3": 8, "F8_E5M2": 8,
        "F8_E8M0": 8, "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4, "C64": 64}


def file_bytes(header_text, data=b"", length=None):
    h = header_text.encode() if isinstance(header_text, str) else header_text
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def valid(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape); data is a byte ramp."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        nbytes = n * BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    text = json.dumps(header, separators=(",", ":"))
    if pad:
        text += " " * ((8 - len(text) % 8) % 8)
    return file_bytes(text, bytes(i % 251 for i in range(off)))


def entry(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


def cases():
    yield "valid-empty", valid([])
    yield "valid-metadata-only", valid([], {"format": "pt", "title": "caf\u00e9 \"q\" \\ \n"})
    yield "valid-every-dtype", valid([("t_" + d, d, [8]) for d in BITS])
    yield "valid-scalar-and-zero-size", valid([("s", "F32", []), ("z", "F16", [0, 3]),
                                                ("w", "BF16", [2, 3])])
    yield "valid-sd-names", valid([
        ("cond_stage_model.transformer.text_model.embeddings.position_ids", "I64", [1, 77]),
        ("model.diffusion_model.input_blocks.0.0.weight", "F16", [320, 4, 3, 3]),
        ("first_stage_model.decoder.conv_in.bias", "F32", [512])], {"modelspec.title": "x"})
    yield "valid-leading-whitespace", file_bytes("  \n{}")
    yield "valid-unpadded", valid([("a", "U8", [3])], pad=False)
    yield "valid-null-metadata", file_bytes('{"__metadata__":null}')
    ok = json.dumps({"a": entry("F32", [2], 0, 8)})
    yield "bad-empty", b""
    yield "bad-short", b"\x05\x00\x00"
    yield "bad-length-past-eof", file_bytes("{}", length=1 << 40)
    yield "bad-length-too-small", file_bytes("{", length=1)
    yield "bad-utf8", file_bytes(b'{"__metadata__":{"k":"\xff"}}')
    yield "bad-not-object", file_bytes("[1,2]")
    yield "bad-trailing-content", file_bytes("{} {}")
    yield "bad-duplicate-key", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"\0\0")
    yield "bad-metadata-number", file_bytes('{"__metadata__":{"steps":1000}}')
    yield "bad-metadata-array", file_bytes('{"__metadata__":["a"]}')
    yield "bad-unknown-dtype", file_bytes(json.dumps({"a": entry("F7", [1], 0, 1)}), b"\0")
    yield "bad-missing-offsets", file_bytes('{"a":{"dtype":"F32","shape":[1]}}')
    yield "bad-unexpected-field", file_bytes(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}', b"\0")
    yield "bad-negative-dim", file_bytes('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}', b"\0")
    yield "bad-float-dim", file_bytes('{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}', b"\0")
    yield "bad-numel-overflow", file_bytes(json.dumps({"a": entry("U8", [2**32, 2**32, 2], 0, 0)}))
    yield "bad-bytes-overflow", file_bytes(json.dumps({"a": entry("F32", [2**62], 0, 0)}))
    yield "bad-subbyte", file_bytes(json.dumps({"a": entry("F4", [3], 0, 2)}), b"\0\0")
    yield "bad-end-before-begin", file_bytes(json.dumps({"a": entry("U8", [0], 4, 0)}), b"\0" * 4)
    yield "bad-size-mismatch", file_bytes(json.dumps({"a": entry("F32", [2], 0, 4)}), b"\0" * 4)
    yield "bad-gap", file_bytes(json.dumps({"a": entry("F32", [1], 0, 4),
                                            "b": entry("F32", [1], 8, 12)}), b"\0" * 12)
    yield "bad-overlap", file_bytes(json.dumps({"a": entry("F32", [2], 0, 8),
                                                "b": entry("F32", [2], 4, 12)}), b"\0" * 12)
    yield "bad-truncated", file_bytes(ok, b"\0" * 5)
    yield "bad-trailing-bytes", file_bytes(ok, b"\0" * 11)
    yield "foreign-html", b"<!DOCTYPE html>\n<html><body>Not Found</body></html>\n"
    yield "foreign-lfs-pointer", (b"version https://git-lfs.github.com/spec/v1\n"
                                  b"oid sha256:" + b"0" * 64 + b"\nsize 2132625894\n")
    yield "foreign-zip", b"PK\x03\x04" + b"\0" * 60
    yield "foreign-pickle", b"\x80\x02}q\x00."


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in cases():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(list(cases()))} files to {OUT}")


if __name__ == "__main__":
    main()
