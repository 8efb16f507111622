"""ckptkit: safe, zero-copy loading of diffusion-model checkpoints (see docs/python.md)."""
import os
from typing import (Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple,
                    Union)

import numpy

PathLike = Union[str, bytes, os.PathLike]
Framework = Literal["np", "numpy", "pt", "torch", "pytorch"]
Array = Any  # numpy.ndarray for framework="np", torch.Tensor for framework="pt"
GgufDtype = Literal["f32", "f16", "bf16"]
Report = Dict[str, Any]  # a command's --json document, parsed
Progress = Optional[Callable[[int, int], Any]]  # progress(done_bytes, total_bytes)

class Error(Exception):
    """Every error ckptkit raises for a file, besides FileNotFoundError and TypeError.

    code: the library's category ("corrupt", "unsupported", "io error", ...).
    path: the file. offset: the byte offset of the problem, or None."""
    code: Optional[str]
    path: Optional[str]
    offset: Optional[int]

class FormatError(Error, ValueError):
    """The file breaks its format (truncated, hostile, not a checkpoint); .path and .offset say
    where."""

class DangerousPickleError(Error):
    """torch.load of this file would run code. .report is scan()'s report for it. Pass
    allow_dangerous=True to take the tensors anyway (ckptkit never runs the file's code)."""
    report: Dict[str, Any]

def load(path: PathLike, framework: Framework = "np", allow_dangerous: bool = False,
         dtype: Optional[GgufDtype] = None, raw: bool = False) -> Dict[str, Array]:
    """Every tensor of a .safetensors, PyTorch .ckpt/.pt/.pth/.bin or GGUF file, without
    copying (GGUF blocks are dequantized into new arrays).

    The format is recognized by content. PyTorch pickles are read by a passive machine: nothing
    is imported or run; the state dict is unwrapped (`state_dict`, `model`, ...). Arrays view a
    private copy-on-write mapping of the file (writes never reach the file) that lives as long
    as any array of it. Views and shared storages of .ckpt files are built as torch.load builds
    them; big-endian archives and deflated storages are copied.

    framework="np" has no BF16/FP8 dtypes: such tensors raise Error naming framework="pt",
    unless raw=True, which gives their bits (BF16 as uint16, FP8 as uint8), zero-copy.

    GGUF: block-quantized tensors (Q4_0 ... Q6_K, IQ4_NL, IQ4_XS) are dequantized bit for bit
    as ggml's dequantize_row_<type>, to dtype "f32" (default), "f16" or "bf16" (framework="pt"),
    on every core; with dtype given, the file's float tensors are cast to it too (otherwise
    they stay zero-copy views). raw=True gives the blocks as 1-D uint8 views of their bytes.
    dtype on another format raises ValueError (ckptkit.convert casts files).

        sd = ckptkit.load("flux1-dev-Q4_K_S.gguf", framework="pt", dtype="bf16")

    Raises DangerousPickleError for a file scan() calls dangerous (unless allow_dangerous),
    FormatError for a malformed file, FileNotFoundError, TypeError for a wrong argument type.
    """

class _Slice:
    def get_shape(self) -> List[int]: ...
    def get_dtype(self) -> str:
        """The safetensors dtype name: "F16", "BF16", "F32", ..."""
    def __getitem__(self, key: Any) -> Array:
        """Integers, slices with positive steps and Ellipsis; negative steps raise ValueError."""

class safe_open:
    """safetensors.safe_open's interface, for .safetensors and PyTorch files.

        with ckptkit.safe_open("model.safetensors", framework="pt") as f:
            names = f.keys()
            w = f.get_tensor(names[0])
            part = f.get_slice(names[0])[:, :16]
    """
    def __init__(self, path: PathLike, framework: Framework = "pt", device: str = "cpu",
                 allow_dangerous: bool = False, dtype: Optional[GgufDtype] = None,
                 raw: bool = False) -> None:
        """Opens .safetensors, PyTorch and GGUF files (dtype and raw as in load)."""
    def __enter__(self) -> "safe_open": ...
    def __exit__(self, *exc: Any) -> bool: ...
    def keys(self) -> List[str]:
        """The tensor names, sorted."""
    def metadata(self) -> Optional[Dict[str, str]]:
        """The file's string metadata, or None when it has none."""
    def get_tensor(self, name: str) -> Array:
        """One tensor, zero-copy (KeyError when absent)."""
    def get_slice(self, name: str) -> _Slice:
        """A view of one tensor to index: f.get_slice("w")[0:2, ...]."""

def save_file(tensors: Mapping[str, Array], path: PathLike,
              metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes {name: tensor} (torch CPU tensors or NumPy arrays) as .safetensors, atomically
    (whole or not at all; an existing file is replaced), in the reference writer's order.
    Tensors sharing storage or memory, and non-contiguous torch tensors, raise ValueError."""

def scan(path: PathLike) -> Dict[str, Any]:
    """Would torch.load of this file run code? The fields of one file of `ckptkit scan --json`:
    path, format, verdict ("safe" | "suspicious" | "dangerous" | None), summary, globals,
    findings, error."""

def inspect(path: PathLike, tensors: bool = False) -> Dict[str, Any]:
    """What the file is: the fields of `ckptkit inspect --json` (tensors=True: `--json
    --tensors`): path, format, file_size, tensors, parameters, dtypes, metadata, architecture,
    components, defects; for PyTorch files state_dict_key, other_entries and the scan report."""

# --- every command as a function ---------------------------------------------------------------
#
# Each runs the command itself in this process (its flags, checks and --json report: a function
# and the program cannot disagree) with the GIL released. Keyword arguments are the command's
# flags, dashes as underscores; a wrong type raises TypeError naming the parameter, a missing
# input FileNotFoundError, a malformed input FormatError (.path, .offset), a refused value
# ckptkit.Error, a dangerous PyTorch input DangerousPickleError (unless allow_dangerous=True).
# The result is the command's --json document as Python objects (docs/cli.md lists the fields).
#
# The writing functions also take threads, max_memory (bytes or "256M"), force (replace the
# output), no_sync (skip the fsyncs) and progress: progress(done_bytes, total_bytes) is called
# on the calling thread a few times a second and once at the end. An exception it raises, or
# Ctrl-C (KeyboardInterrupt), stops the work within one chunk and is raised; the output is not
# written (outputs appear whole or not at all).

def hash(path: Union[PathLike, Sequence[PathLike]], *, algo: str = "sha256",
         jobs: Optional[int] = None, progress: Progress = None) -> Union[Report, List[Report]]:
    """`ckptkit hash --json`: {path, size, hashes: {algo: hex}, not_defined, embedded} from one
    read. algo: comma-separated sha256, autov1, autov2, autov3, crc32, blake3, or "all". One
    path gives one dict, a list of paths a list.

        ckptkit.hash("model.safetensors", algo="sha256,autov2")["hashes"]["autov2"]
    """

def verify(path: Union[PathLike, Sequence[PathLike]], *, structure_only: bool = False,
           max_abs: Optional[float] = None, threads: Optional[int] = None,
           progress: Progress = None) -> Union[Report, List[Report]]:
    """`ckptkit verify --json`: {path, format, architecture, ok, tensors_checked, values_checked,
    bytes_read, seconds, findings}; problems are findings, not exceptions.

        bad = [f for f in ckptkit.verify("merge.safetensors")["findings"]]
    """

def convert(input: PathLike, output: PathLike, *, dtype: Optional[str] = None,
            quant: Optional[str] = None, target: Optional[str] = None, to: Optional[str] = None,
            prediction_type: Optional[str] = None, tokenizers_from: Optional[PathLike] = None,
            max_shard_size: Optional[str] = None, clip_l: Optional[PathLike] = None,
            clip_g: Optional[PathLike] = None, t5xxl: Optional[PathLike] = None,
            vae: Optional[PathLike] = None,
            max_header_size: Optional[int] = None, allow_dangerous: bool = False,
            threads: Optional[int] = None, max_memory: Union[int, str, None] = None,
            force: bool = False, no_sync: bool = False, progress: Progress = None) -> Report:
    """`ckptkit convert`: to safetensors (dtype "f16", "bf16", "f32", "f8_e4m3", "f8_e5m2" or
    "keep"), to GGUF (output *.gguf with quant "q8_0", "q4_k_m", ...; target "comfyui" or
    "sdcpp"), to a diffusers folder (to="diffusers"; max_shard_size such as "10GB"; a FLUX or
    SD3 transformer given alone takes clip_l, clip_g, t5xxl and vae part files) or from one
    (input a folder).

        ckptkit.convert("model.ckpt", "model.safetensors", dtype="f16",
                        progress=lambda done, total: print(f"{done / total:.0%}"))
        ckptkit.convert("flux1-dev.safetensors", "flux1-dev-Q8_0.gguf", quant="q8_0")
        ckptkit.convert("sd15.safetensors", "sd15-diffusers", to="diffusers")
    """

def split(input: PathLike, output: PathLike, *, name: Optional[str] = None,
          quant: Optional[str] = None, target: Optional[str] = None,
          title: Optional[str] = None, max_header_size: Optional[int] = None,
          allow_dangerous: bool = False, threads: Optional[int] = None,
          max_memory: Union[int, str, None] = None, force: bool = False, no_sync: bool = False,
          progress: Progress = None) -> Report:
    """`ckptkit split`: a single file into ComfyUI parts under the folder `output`. Report:
    {architecture, family, outputs: [{path, part, tensors, bytes}], dropped, notes,
    input_bytes, output_bytes, seconds}.

        parts = ckptkit.split("sd_xl_base_1.0.safetensors", "ComfyUI/models")["outputs"]
    """

def assemble(diffusion_model: PathLike, output: PathLike, *, clip_l: Optional[PathLike] = None,
             clip_g: Optional[PathLike] = None, clip_h: Optional[PathLike] = None,
             t5xxl: Optional[PathLike] = None, vae: Optional[PathLike] = None,
             allow_missing: bool = False, title: Optional[str] = None,
             max_header_size: Optional[int] = None, allow_dangerous: bool = False,
             threads: Optional[int] = None, max_memory: Union[int, str, None] = None,
             force: bool = False, no_sync: bool = False, progress: Progress = None) -> Report:
    """`ckptkit assemble`: parts into the family's single-file layout (split's report).

        ckptkit.assemble("unet.safetensors", "aio.safetensors", clip_l="clip_l.safetensors",
                         vae="vae.safetensors")
    """

def swap(input: PathLike, output: PathLike, *, clip_l: Optional[PathLike] = None,
         clip_g: Optional[PathLike] = None, clip_h: Optional[PathLike] = None,
         t5xxl: Optional[PathLike] = None, vae: Optional[PathLike] = None,
         title: Optional[str] = None, max_header_size: Optional[int] = None,
         allow_dangerous: bool = False, threads: Optional[int] = None,
         max_memory: Union[int, str, None] = None, force: bool = False, no_sync: bool = False,
         progress: Progress = None) -> Report:
    """`ckptkit swap`: replaces parts of a single-file model (split's report).

        ckptkit.swap("merge.safetensors", "fixed.safetensors", vae="sdxl_vae.safetensors")
    """

def prune(input: PathLike, output: PathLike, *, ema: Optional[str] = None,
          drop_training_extras: bool = False, keep_training_extras: bool = False,
          dtype: Optional[str] = None, title: Optional[str] = None,
          max_header_size: Optional[int] = None, allow_dangerous: bool = False,
          threads: Optional[int] = None, max_memory: Union[int, str, None] = None,
          force: bool = False, no_sync: bool = False, progress: Progress = None) -> Report:
    """`ckptkit prune`: drops the EMA copy (ema "drop", "keep" or "use") and training buffers,
    optionally casting (split's report).

        ckptkit.prune("v1-5-pruned.ckpt", "v1-5-emaonly.safetensors", ema="use", dtype="f16")
    """

def merge(inputs: Optional[Sequence[PathLike]] = None, output: Optional[PathLike] = None, *,
          method: Optional[str] = None,
          alpha: Union[float, str, Mapping[str, float], Sequence[str], None] = None,
          blocks: Optional[str] = None, weights: Union[str, Sequence[float], None] = None,
          normalize: bool = False, allow_extrapolation: bool = False,
          density: Optional[float] = None, drop: Optional[float] = None,
          seed: Optional[int] = None, dtype: Optional[str] = None,
          missing: Optional[str] = None, vae_from: Optional[str] = None,
          text_encoder_from: Optional[str] = None, hash_inputs: bool = False,
          title: Optional[str] = None, recipe: Optional[PathLike] = None,
          list_blocks: Optional[PathLike] = None, dry_run: bool = False,
          max_header_size: Optional[int] = None, allow_dangerous: bool = False,
          threads: Optional[int] = None, max_memory: Union[int, str, None] = None,
          force: bool = False, no_sync: bool = False, progress: Progress = None) -> Report:
    """`ckptkit merge`: A (the base), B, ... tensor by tensor; method "weighted-sum",
    "add-difference", "train-difference", "slerp", "ties", "dare", "dare-ties"; alpha a number
    or per group ({"IN03": 0.3} or ["IN03=0.3"]); recipe a TOML file (docs/merge.md).

        ckptkit.merge(["a.safetensors", "b.safetensors"], "ab.safetensors", alpha=0.3)
        ckptkit.merge(list_blocks="sdxl.safetensors")["groups"]
    """

def meta(path: PathLike, *, set: Union[Mapping[str, Any], Sequence[str], None] = None,
         delete: Union[str, Sequence[str], None] = None, from_json: Optional[PathLike] = None,
         clear: bool = False, output: Optional[PathLike] = None, threads: Optional[int] = None,
         max_memory: Union[int, str, None] = None, force: bool = False, no_sync: bool = False,
         progress: Progress = None) -> Dict[str, str]:
    """`ckptkit meta`: the metadata; with edits, writes `output` (same data bytes) and returns
    its metadata.

        ckptkit.meta("model.safetensors")
        ckptkit.meta("model.safetensors", set={"modelspec.title": "Mine"},
                     delete=["ss_tag_frequency"], output="clean.safetensors")
    """

def sample(layout: Optional[str] = None, output: Optional[PathLike] = None, *,
           dtype: Optional[str] = None, seed: Optional[int] = None, sparse: bool = False,
           list: bool = False, threads: Optional[int] = None,
           max_memory: Union[int, str, None] = None, force: bool = False, no_sync: bool = False,
           progress: Progress = None) -> Union[Report, List[Report]]:
    """`ckptkit sample`: a synthetic checkpoint with a published layout ({output, layout,
    tensors, output_bytes, sparse, seconds}); list=True: the layouts.

        ckptkit.sample("sdxl-sgm", "sdxl.safetensors", sparse=True)
    """

def lora_bake(base: PathLike,
              loras: Union[PathLike, Tuple[PathLike, float], Sequence[Union[PathLike,
                                                                      Tuple[PathLike, float]]]],
              output: PathLike, *, strength_te: Optional[float] = None,
              dtype: Optional[str] = None, fp8_rounding: Optional[str] = None,
              seed: Optional[int] = None, quant: Optional[str] = None,
              target: Optional[str] = None,
              block: Union[Mapping[str, float], Sequence[str], None] = None,
              block_weights: Optional[str] = None, strict: bool = False,
              allow_dangerous: bool = False, threads: Optional[int] = None,
              max_memory: Union[int, str, None] = None, force: bool = False,
              no_sync: bool = False, progress: Progress = None) -> Report:
    """`ckptkit lora bake`: LoRAs (path or (path, strength)) added into the base's weights.

        ckptkit.lora_bake("sdxl.safetensors", [("style.safetensors", 0.8)], "baked.safetensors")
    """

def lora_extract(tuned: PathLike, base: PathLike, output: PathLike, *, rank: int,
                 conv_rank: Optional[int] = None, text_encoders: bool = False,
                 min_diff: Optional[float] = None, alpha: Optional[float] = None,
                 clamp_quantile: Optional[float] = None, no_clamp: bool = False,
                 exact: bool = False, format: Optional[str] = None, dtype: Optional[str] = None,
                 allow_dangerous: bool = False, threads: Optional[int] = None,
                 max_memory: Union[int, str, None] = None, force: bool = False,
                 no_sync: bool = False, progress: Progress = None) -> Report:
    """`ckptkit lora extract`: a LoRA of rank `rank` from tuned - base.

        ckptkit.lora_extract("tuned.safetensors", "base.safetensors", "lora.safetensors",
                             rank=64)
    """

def lora_resize(lora: PathLike, output: PathLike, *, rank: int, conv_rank: Optional[int] = None,
                dynamic: Optional[str] = None, dtype: Optional[str] = None,
                allow_dangerous: bool = False, threads: Optional[int] = None,
                max_memory: Union[int, str, None] = None, force: bool = False,
                no_sync: bool = False, progress: Progress = None) -> Report:
    """`ckptkit lora resize`: a LoRA cut to rank `rank` (dynamic "sv_fro=0.9", ...).

        ckptkit.lora_resize("r128.safetensors", "r32.safetensors", rank=32)
    """

def lora_convert(input: PathLike, output: PathLike, *, to: str, base: Optional[PathLike] = None,
                 allow_dangerous: bool = False, threads: Optional[int] = None,
                 max_memory: Union[int, str, None] = None, force: bool = False,
                 no_sync: bool = False, progress: Progress = None) -> Report:
    """`ckptkit lora convert`: a LoRA's names to "kohya", "diffusers" or "peft".

        ckptkit.lora_convert("kohya.safetensors", "peft.safetensors", to="peft")
    """


def library_index(folders: Union[PathLike, Sequence[PathLike]], *, db: Optional[PathLike] = None,
                  deep: bool = False, no_hash: bool = False,
                  threads: Optional[int] = None) -> Dict[str, Any]:
    """`ckptkit library index` of one folder or several (incremental); the --json summary.

    Example::

        ckptkit.library_index("~/ComfyUI/models", db="lib.sqlite")
    """
    ...

def library_list(*, db: Optional[PathLike] = None, kind: Optional[str] = None,
                 arch: Optional[str] = None, family: Optional[str] = None,
                 format: Optional[str] = None, unsafe: bool = False, defects: bool = False,
                 errors: bool = False, search: Optional[str] = None, sort: Optional[str] = None,
                 desc: bool = False) -> Dict[str, Any]:
    """`ckptkit library list`: {"total", "count", "models": [...]}.

    Example::

        big_loras = ckptkit.library_list(kind="LoRA", sort="size", desc=True)["models"]
    """
    ...

def library_dupes(*, db: Optional[PathLike] = None) -> Dict[str, Any]:
    """`ckptkit library dupes`: identical files and identical components."""
    ...

def library_show(path: PathLike, *, db: Optional[PathLike] = None) -> Dict[str, Any]:
    """`ckptkit library show`: one indexed file's record."""
    ...

def library_loras(model: PathLike, *, db: Optional[PathLike] = None) -> Dict[str, Any]:
    """`ckptkit library loras --for MODEL`: the indexed LoRAs for the model's family."""
    ...
