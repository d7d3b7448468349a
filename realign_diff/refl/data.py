"""Training data: prompts (txt / JSONL / MS-COCO captions), image-caption pairs, the validation split, and
a resumable sampler whose position is part of every checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_TEXT_FIELDS = ("prompt", "caption", "text")


class DataError(ValueError):
    """A prompts or pairs file that cannot be used, with what to fix."""


def _text_of(item, where: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for name in _TEXT_FIELDS:
            if isinstance(item.get(name), str):
                return item[name]
    raise DataError(f"{where}: expected a string or an object with one of {_TEXT_FIELDS}, got {str(item)[:80]!r}")


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a .txt (one per line), .jsonl, JSON list, or MS-COCO captions .json file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    prompts.append(_text_of(json.loads(line), f"{path}:{number}"))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number} is not valid JSON: {exc}") from exc
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from exc
        if isinstance(data, dict) and "annotations" in data:  # MS-COCO captions_*.json
            prompts = [_text_of(a, str(path)) for a in data["annotations"]]
        elif isinstance(data, list):
            prompts = [_text_of(item, str(path)) for item in data]
        else:
            raise DataError(f"{path}: expected an MS-COCO captions file (with 'annotations') or a JSON list of prompts")
    else:
        prompts = text.splitlines()
    prompts = [" ".join(p.split()) for p in prompts]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise DataError(f"no prompts in {path}")
    return prompts


@dataclass(frozen=True)
class Pair:
    image: Path
    caption: str


def read_pairs(path: str | Path, image_root: str | Path | None = None) -> list[Pair]:
    """Image-caption pairs from a folder (sidecar .txt captions or metadata.jsonl) or an MS-COCO captions .json."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pairs not found: {path}")
    pairs = _pairs_from_folder(path) if path.is_dir() else _pairs_from_coco(path, image_root)
    if not pairs:
        raise DataError(f"no image-caption pairs in {path}")
    missing = [p.image for p in pairs if not p.image.is_file()]
    if missing:
        hint = " (pass --pairs-image-root, the folder holding the COCO images)" if path.is_file() else ""
        raise DataError(f"{len(missing)} images listed in {path} do not exist, e.g. {missing[0]}{hint}")
    return pairs


def _pairs_from_folder(folder: Path) -> list[Pair]:
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        pairs = []
        for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                item = json.loads(line)
                if "file_name" not in item:
                    raise DataError(f"{metadata}:{number} has no 'file_name'")
                pairs.append(Pair(folder / item["file_name"], _text_of(item, f"{metadata}:{number}")))
        return pairs
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    without = [p.name for p in images if not p.with_suffix(".txt").is_file()]
    if without:
        raise DataError(f"{len(without)} images in {folder} have no same-named .txt caption, e.g. {without[0]}")
    return [Pair(p, " ".join(p.with_suffix(".txt").read_text(encoding="utf-8").split())) for p in images]


def _pairs_from_coco(path: Path, image_root) -> list[Pair]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(f"{path}: expected an MS-COCO captions file with 'images' and 'annotations'")
    root = Path(image_root) if image_root else path.parent
    files = {image["id"]: image["file_name"] for image in data["images"]}
    return [Pair(root / files[a["image_id"]], " ".join(a["caption"].split())) for a in data["annotations"]]


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """[3, R, R] in [-1, 1]: shorter side resized to R, centre crop."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resolution / min(image.size)
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def split_validation(prompts: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, validation): a seeded, reproducible hold-out of ``fraction`` of the prompts."""
    if fraction <= 0:
        return list(prompts), []
    count = max(1, round(len(prompts) * fraction))
    if count >= len(prompts):
        raise DataError(f"--validation-split {fraction} leaves no training prompts out of {len(prompts)}")
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:count])
    return [p for i, p in enumerate(prompts) if i not in held], [prompts[i] for i in sorted(held)]


class EpochSampler:
    """Shuffled indices over ``n`` items, epoch after epoch; each epoch's order depends only on (seed, epoch).

    Stateless: the item of global sample number ``position`` (counted from the start of the run over all
    processes) is ``sampler[position]``, so any process can look up its share and a resumed run continues
    from the number of samples seen.
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise DataError("nothing to sample from")
        self.n, self.seed = n, seed
        self._epoch, self._order = -1, []

    def __getitem__(self, position: int) -> int:
        epoch, index = divmod(position, self.n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n, generator=gen).tolist()
        return self._order[index]
