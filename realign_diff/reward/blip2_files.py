"""Check a BLIP-2 folder before loading it, so a wrong or incomplete folder gets a message a user can act on.

Two kinds of folder (Hugging Face layout, as ``save_pretrained`` writes and the hub serves them):

- captioner: ``Blip2ForConditionalGeneration`` (``Salesforce/blip2-opt-2.7b``, ``Salesforce/blip2-flan-t5-xl``, ...)
- text encoder: an image-text retrieval folder (``Blip2ForImageTextRetrieval``, ``Salesforce/blip2-itm-vit-g``),
  or a ``Blip2TextModelWithProjection`` folder; only its Q-Former text tower and text projection are loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint_file import LFS_POINTER, file_problem

CAPTIONER_SOURCES = (
    "https://huggingface.co/Salesforce/blip2-opt-2.7b (or Salesforce/blip2-flan-t5-xl, blip2-opt-6.7b, ...)"
)
TEXT_ENCODER_SOURCES = "https://huggingface.co/Salesforce/blip2-itm-vit-g"

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "spiece.model")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")

# Salesforce's BLIP-2 repositories, to name the one a folder of that name came from
HUB_REPOS = (
    "blip2-opt-2.7b",
    "blip2-opt-6.7b",
    "blip2-opt-2.7b-coco",
    "blip2-opt-6.7b-coco",
    "blip2-flan-t5-xl",
    "blip2-flan-t5-xxl",
    "blip2-flan-t5-xl-coco",
    "blip2-itm-vit-g",
    "blip2-itm-vit-g-coco",
)

CAPTIONER_ARCHS = {"Blip2ForConditionalGeneration"}
TEXT_ENCODER_ARCHS = {"Blip2ForImageTextRetrieval", "Blip2TextModelWithProjection"}


class Blip2FolderError(ValueError):
    """A folder that is not the BLIP-2 model expected (wrong kind, or missing files)."""


class Blip2FolderMissing(FileNotFoundError):
    """A BLIP-2 folder that does not exist."""


def _files_hint(kind: str) -> str:
    files = [
        "config.json",
        "model.safetensors (or sharded model-*.safetensors + model.safetensors.index.json)",
        "tokenizer files (tokenizer.json / tokenizer_config.json ...)",
    ]
    if kind == "captioner":
        files.append("preprocessor_config.json or processor_config.json")
    return ", ".join(files)


def _describe(kind: str) -> tuple[str, str, str]:
    if kind == "captioner":
        return "BLIP-2 captioner (Blip2ForConditionalGeneration)", CAPTIONER_SOURCES, "blip2-opt-2.7b"
    return "BLIP-2 image-text retrieval model (text encoder)", TEXT_ENCODER_SOURCES, "blip2-itm-vit-g"


def read_architectures(folder: str | Path) -> list[str]:
    """The ``architectures`` a folder's config.json names ([] if unreadable)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(config.get("architectures") or [])


def check_blip2_dir(folder: str | Path, kind: str) -> Path:
    """Raise a clear error unless ``folder`` holds a BLIP-2 model of ``kind`` ("captioner" or "text_encoder")."""
    if kind not in ("captioner", "text_encoder"):
        raise ValueError(f"kind must be 'captioner' or 'text_encoder', got {kind!r}")
    what, source, example = _describe(kind)
    path = Path(folder)
    get = f"Download the whole model folder (e.g. {example}) from {source}"
    if not path.is_dir():
        raise Blip2FolderMissing(f"{what} folder not found: {path}. It should contain {_files_hint(kind)}. {get}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise Blip2FolderError(
            f"{path} is not a Hugging Face model folder: config.json is missing. "
            f"A {what} folder contains {_files_hint(kind)}. {get}"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise Blip2FolderError(f"{config_path} is not valid JSON ({error}). {get}") from error
    model_type = config.get("model_type")
    if model_type != "blip-2":
        raise Blip2FolderError(
            f"{path} holds a {model_type or 'unknown'} model, not BLIP-2 (config.json model_type "
            f"is {model_type!r}, expected 'blip-2'). Expected a {what}. {get}"
        )
    architectures = set(config.get("architectures") or [])
    if kind == "captioner" and architectures & TEXT_ENCODER_ARCHS:
        raise Blip2FolderError(
            f"{path} is a BLIP-2 image-text retrieval model ({', '.join(sorted(architectures))}), "
            f"which cannot write captions: use it as the text encoder. The captioner must be a "
            f"Blip2ForConditionalGeneration folder such as blip2-opt-2.7b: {source}"
        )
    if kind == "text_encoder" and architectures & CAPTIONER_ARCHS:
        raise Blip2FolderError(
            f"{path} is a BLIP-2 captioner (Blip2ForConditionalGeneration), which has no text "
            f"embedding tower: use it as the captioner. The text encoder must be an image-text "
            f"retrieval folder such as blip2-itm-vit-g: {source}"
        )
    missing = []
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append("weights (" + " / ".join(WEIGHT_FILES) + ")")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer (" + " / ".join(TOKENIZER_FILES) + ")")
    if kind == "captioner" and not any((path / name).is_file() for name in IMAGE_PROCESSOR_FILES):
        missing.append("image processor (" + " / ".join(IMAGE_PROCESSOR_FILES) + ")")
    if missing:
        raise Blip2FolderError(f"{path} is an incomplete {what} folder: missing {'; '.join(missing)}. {get}")
    broken = _broken_files(path)
    if broken:
        raise Blip2FolderError(f"{path} holds broken model files: {'; '.join(broken)}. {redownload_hint(path, kind)}")
    return path


def redownload_hint(path: Path, kind: str) -> str:
    return (
        f"If the folder is a git clone, run `git lfs pull` in {path}; otherwise download it again: "
        f"{download_command(path, kind)}"
    )


def download_command(path: Path, kind: str) -> str:
    repo = "Salesforce/" + (path.name if path.name in HUB_REPOS else _describe(kind)[2])
    return f"huggingface-cli download {repo} --local-dir {path}"


def _broken_files(path: Path) -> list[str]:
    """'<file> is <problem>' for each weight file (or shard) that is missing or visibly broken, and each other
    file left as a git-lfs pointer (a clone made without git-lfs)."""
    weights, broken = _weight_files(path)
    for file in weights:
        problem = file_problem(file) if file.is_file() else "missing (listed in the index)"
        if problem:
            broken.append(f"{file.name} is {problem}")
    for file in sorted(path.iterdir()):
        if (
            file not in weights
            and file.is_file()
            and file.stat().st_size < 1024
            and file.read_bytes().startswith(LFS_POINTER)
        ):
            broken.append(f"{file.name} is a git-lfs pointer file, not the file itself")
    return broken


def _weight_files(path: Path) -> tuple[list[Path], list[str]]:
    """The weight files a folder uses (shards from the index files), and problems with the index files."""
    files, broken = [path / name for name in ("model.safetensors", "pytorch_model.bin") if (path / name).is_file()], []
    for index in (path / "model.safetensors.index.json", path / "pytorch_model.bin.index.json"):
        if not index.is_file():
            continue
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            broken.append(f"{index.name} is not a valid weights index (JSON with a weight_map)")
            continue
        files += [path / shard for shard in shards]
    return files, broken
