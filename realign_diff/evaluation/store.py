"""The output folder of an evaluation, where every file is written whole or not at all (a temp file, then
``os.replace``), so a killed evaluation leaves only finished records and resumes from them:

- ``settings.json``: what it was started with (workflow and prompt set fingerprints, checked on resume);
- ``images/<run>_coarse.png``, ``images/<run>_realigned.png``: each prompt x seed's two images, as ComfyUI saved them;
- ``runs/<run>.json``: one per prompt x seed, ``status`` "ok" (image files, attention shares) or "failed" (the error);
- ``scores/<run>.json``: the metrics of both images, metric by metric (a metric is never computed twice);
- ``report/``: per_image.csv, failed.csv, table.md, grid.png.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, value) -> None:
    write_atomic(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def run_name(prompt_id: str, seed: int) -> str:
    return f"{prompt_id}_s{seed}"


class SettingsMismatch(ValueError):
    pass


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.images, self.runs, self.scores, self.report = (
            self.root / d for d in ("images", "runs", "scores", "report")
        )

    def check_settings(self, settings: dict, keys: tuple[str, ...]) -> None:
        """Write ``settings.json`` on the first start; later starts must agree on ``keys``."""
        path = self.root / "settings.json"
        if path.is_file():
            saved = read_json(path)
            changed = [k for k in keys if saved.get(k) != settings.get(k)]
            if changed:
                raise SettingsMismatch(
                    f"{self.root} holds an evaluation started with another {', '.join(changed)} "
                    f"({', '.join(f'{k}: {saved.get(k)!r} then, {settings.get(k)!r} now' for k in changed)}): "
                    "pass another --output, or the same workflow and prompt set to continue it"
                )
        write_json(path, settings)

    def run(self, name: str) -> dict | None:
        path = self.runs / f"{name}.json"
        return read_json(path) if path.is_file() else None

    def save_run(self, name: str, record: dict) -> None:
        write_json(self.runs / f"{name}.json", record)

    def image_path(self, name: str, kind: str) -> Path:
        return self.images / f"{name}_{kind}.png"

    def scores_of(self, name: str) -> dict:
        path = self.scores / f"{name}.json"
        return read_json(path) if path.is_file() else {}

    def save_scores(self, name: str, scores: dict) -> None:
        write_json(self.scores / f"{name}.json", scores)
