"""ckptkit: safe, zero-copy loading of diffusion-model checkpoints (see docs/python.md)."""
import os
from typing import Any, Dict, List, Literal, Mapping, Optional, Union

import numpy

PathLike = Union[str, bytes, os.PathLike]
Framework = Literal["np", "numpy", "pt", "torch", "pytorch"]
Array = Any  # numpy.ndarray for framework="np", torch.Tensor for framework="pt"

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

def load(path: PathLike, framework: Framework = "np",
         allow_dangerous: bool = False) -> Dict[str, Array]:
    """Every tensor of a .safetensors or PyTorch .ckpt/.pt/.pth/.bin file, without copying.

    The format is recognized by content. PyTorch pickles are read by a passive machine: nothing
    is imported or run; the state dict is unwrapped (`state_dict`, `model`, ...). Arrays view a
    private copy-on-write mapping of the file (writes never reach the file) that lives as long
    as any array of it. Views and shared storages of .ckpt files are built as torch.load builds
    them; big-endian archives and deflated storages are copied.

    framework="np" has no BF16/FP8 dtypes: such tensors raise Error naming framework="pt".
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
                 allow_dangerous: bool = False) -> None: ...
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
