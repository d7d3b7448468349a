"""Reading a model checkpoint file tensor-only: ``.safetensors``, or ``.pth`` / ``.ckpt`` with
``torch.load(..., weights_only=True)`` (memory-mapped when the file allows), never unpickling arbitrary objects.

A file that cannot be read gets one kind of message, whichever loader reads it: the file, what it looks like
(:func:`file_problem`: empty, a git-lfs pointer, an HTML page, truncated, ...) and where to get it again.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass

import torch

LFS_POINTER = b"version https://git-lfs.github.com/spec/"


class ModelFileError(ValueError):
    """A model file that cannot be used: unreadable, truncated, not a checkpoint, or holding Python code."""


@dataclass(frozen=True)
class ModelSource:
    """What a file should be and where it comes from, for 'download it again' messages."""

    what: str  # e.g. "SAM checkpoint"
    folder: str  # ComfyUI's models/<folder>
    source: str  # where to download it


def read_state_dict(path: str | os.PathLike, expected: ModelSource | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth`` / ``.safetensors`` checkpoint, unwrapped from ``{"model": ...}`` and ``module.``.

    Raises :class:`ModelFileError` (naming the file, its problem and ``expected``'s source) for unreadable files.
    """
    path = os.fspath(path)
    obj = _load_safetensors(path, expected) if path.lower().endswith(".safetensors") else _torch_load(path, expected)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ModelFileError(unreadable_message(path, f"not a state dict (it holds a {type(obj).__name__})", expected))
    state = {key.removeprefix("module."): value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if not state:
        raise ModelFileError(unreadable_message(path, "not a model checkpoint (it holds no tensors)", expected))
    return state


def _load_safetensors(path: str, expected: ModelSource | None):
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except MemoryError:
        raise
    except Exception as error:  # safetensors' own SafetensorError, OSError, ...
        problem = file_problem(path) or f"not a readable safetensors file ({error})"
        raise ModelFileError(unreadable_message(path, problem, expected)) from None


def _torch_load(path: str, expected: ModelSource | None):
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except MemoryError:
        raise
    except Exception as error:  # bad bytes surface as IndexError, KeyError, EOFError, OSError, UnpicklingError ...
        code = pickled_code(error)
        if code is not None:
            raise ModelFileError(code_message(path, code, expected)) from None
        # torch's own text for a refused file suggests weights_only=False: never pass it on
        raise ModelFileError(unreadable_message(path, file_problem(path) or "truncated or damaged", expected)) from None


def pickled_code(error: Exception) -> str | None:
    """The Python class or function a weights-only load refused (a file holding pickled objects), or None."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else None


def where_to_get(source: ModelSource, paths: str = "") -> str:
    """The one sentence of every model-file message that says where the file goes and where it comes from."""
    where = f"ComfyUI's models/{source.folder} folder" + (f" ({paths})" if paths else "")
    return f"Put the {source.what} in {where}; get it from {source.source}."


def download_hint(path: str, expected: ModelSource | None) -> str:
    if expected is None:
        return f"Download (or export) {os.path.basename(path)} again."
    return f"Download it again. {where_to_get(expected)}"


def unreadable_message(path: str, problem: str, expected: ModelSource | None = None) -> str:
    return (
        f"{os.path.basename(path)} is not a readable model file: it is {problem}. "
        f"{download_hint(path, expected)} ({path})"
    )


def code_message(path: str, code: str, expected: ModelSource | None = None) -> str:
    where = (
        f"Use the official file. {where_to_get(expected)}"
        if expected
        else "Use a .safetensors file, or a checkpoint that holds only tensors."
    )
    return f"{code_problem(os.path.basename(path), code)} {where} ({path})"


def code_problem(name: str, code: str) -> str:
    """Why a file with pickled objects is refused; never the advice to load it with weights_only=False."""
    return (
        f"{name} contains Python code (pickled objects such as {code}), not only tensors, so it is not loaded: "
        "loading it could run code on this machine."
    )


# ---- what a bad file looks like -----------------------------------------------------------------------
def file_problem(path: str | os.PathLike) -> str | None:
    """What is visibly wrong with a model file, from its bytes ("empty (0 bytes)", "a git-lfs pointer file ...",
    "truncated ..."), or None when it looks like an intact PyTorch / safetensors file."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size == 0:
        return "empty (0 bytes)"
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(LFS_POINTER):
        return (
            f"a git-lfs pointer file ({size} bytes), not the model itself (a git clone made without "
            "git-lfs: `git lfs pull` in that clone fetches the file)"
        )
    text = _as_text(head)
    if text is not None:
        if text.lstrip().lower().startswith(("<!doctype html", "<html")):
            return "an HTML page (the page of a download link was saved instead of the file)"
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return f"a text file ({size} bytes, starting {first!r})"
    if head.startswith(b"PK\x03\x04"):
        return _zip_problem(path, size)
    if path.lower().endswith(".safetensors"):
        return _safetensors_problem(path, head, size)
    if head[:1] == b"\x80":  # a pickle: PyTorch's legacy format, judged by loading it
        return None
    return "not a PyTorch or safetensors file (unknown content)"


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as error:
        # a multi-byte character cut by the 4096-byte read is still text
        return head[: error.start].decode("utf-8") if error.start >= len(head) - 3 else None


def _zip_problem(path: str, size: int) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return f"truncated ({size} bytes, the end of the archive is missing: an interrupted download?)"
    if not any(name.endswith("data.pkl") for name in names):
        return "a zip archive, not a PyTorch checkpoint"
    return None


def _safetensors_problem(path: str, head: bytes, size: int) -> str | None:
    if size < 8 or head[8:9] != b"{":
        return "not a safetensors file (no safetensors header)"
    (length,) = struct.unpack("<Q", head[:8])
    if 8 + length > size:
        return f"truncated ({size} bytes, its header alone says {8 + length}: an interrupted download?)"
    with open(path, "rb") as handle:
        handle.seek(8)
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return "damaged (its safetensors header is not readable)"
    ends = [
        entry["data_offsets"][1] for key, entry in header.items() if isinstance(entry, dict) and "data_offsets" in entry
    ]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"truncated ({size} of {needed} bytes: an interrupted download?)"
    return None
