"""Real ggml as a test oracle: libggml-base.so from the npm package @node-llama-cpp/linux-x64
(scripts/deps.sh installs it into build/oracles; CMake passes its path in CKPTKIT_GGML_LIB),
loaded once through ctypes with the signatures of every function the GGUF tests call. Nothing
of it is linked into ckptkit. A missing library is a test failure, never a skip."""
import ctypes
import os

GGML_LIB = os.environ.get("CKPTKIT_GGML_LIB", "")

# ggml's type ids (ggml.h enum ggml_type) by ggml_type_name.
TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
            "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14, "iq4_nl": 20,
            "iq4_xs": 23, "bf16": 30}


class GgufInitParams(ctypes.Structure):
    """struct gguf_init_params {bool no_alloc; struct ggml_context ** ctx;}"""
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


_VP, _I64, _SZ = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
_SIGNATURES = {
    "ggml_quantize_chunk": (_SZ, [ctypes.c_int, _VP, _VP, _I64, _I64, _I64, _VP]),
    "ggml_row_size": (_SZ, [ctypes.c_int, _I64]),
    "gguf_init_from_file": (_VP, [ctypes.c_char_p, GgufInitParams]),
    "gguf_free": (None, [_VP]),
    "gguf_get_version": (ctypes.c_uint32, [_VP]),
    "gguf_get_alignment": (_SZ, [_VP]),
    "gguf_get_data_offset": (_SZ, [_VP]),
    "gguf_get_n_kv": (_I64, [_VP]),
    "gguf_get_key": (ctypes.c_char_p, [_VP, _I64]),
    "gguf_get_kv_type": (ctypes.c_int, [_VP, _I64]),
    "gguf_get_arr_type": (ctypes.c_int, [_VP, _I64]),
    "gguf_get_arr_n": (_SZ, [_VP, _I64]),
    "gguf_get_arr_data": (_VP, [_VP, _I64]),
    "gguf_get_arr_str": (ctypes.c_char_p, [_VP, _I64, _SZ]),
    "gguf_get_val_str": (ctypes.c_char_p, [_VP, _I64]),
    "gguf_get_val_data": (_VP, [_VP, _I64]),
    "gguf_get_n_tensors": (_I64, [_VP]),
    "gguf_get_tensor_name": (ctypes.c_char_p, [_VP, _I64]),
    "gguf_get_tensor_type": (ctypes.c_int, [_VP, _I64]),
    "gguf_get_tensor_offset": (_SZ, [_VP, _I64]),
    "gguf_get_tensor_size": (_SZ, [_VP, _I64]),
    "ggml_get_tensor": (_VP, [_VP, ctypes.c_char_p]),
    "ggml_get_data": (_VP, [_VP]),
    "ggml_nbytes": (_SZ, [_VP]),
    "ggml_free": (None, [_VP]),
}
_LIB = None


def lib():
    """The loaded library with its signatures set (loaded on first use)."""
    global _LIB
    if _LIB is None:
        if not GGML_LIB or not os.path.isfile(GGML_LIB):
            raise AssertionError(f"ggml oracle library not found (CKPTKIT_GGML_LIB={GGML_LIB!r}); "
                                 "run scripts/deps.sh")
        loaded = ctypes.CDLL(GGML_LIB)
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(loaded, name)
            fn.restype = res
            fn.argtypes = args
        for name in TYPE_IDS:
            if name in ("f32", "f16", "bf16"):
                continue
            fn = getattr(loaded, f"dequantize_row_{name}")
            fn.restype = None
            fn.argtypes = [_VP, _VP, _I64]
        _LIB = loaded
    return _LIB
