"""Writing results and resumable checkpoints, always atomically (temp file or folder, then rename)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import torch

from .. import sd15_keys

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# what a run killed mid-write leaves behind: ``.checkpoint-7.tmp-1234``, ``.trainable.safetensors.tmp-1234``, ...
TEMPORARY_RE = re.compile(r"^\..+\.(tmp|old)-(\d+)$")


def atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


class RunLock:
    """The writing process's exclusive lock on a run folder: a second run started on the same folder stops with a
    message instead of writing beside the first. The OS releases it when the process ends, killed or not."""

    NAME = ".lock"

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / self.NAME
        self._file = None

    def acquire(self) -> RunLock:
        from .config import ConfigError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(
                f"another training run (process {holder}) is writing to {self.path.parent}: wait for it "
                "to end, or give this run another --run-dir (or --output)"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()  # closing drops the lock
            self._file = None


def _try_lock(handle) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def unet_to_checkpoint_tensors(
    unet_state: dict[str, torch.Tensor], unet_config: dict, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """diffusers UNet weights -> ``model.diffusion_model.*`` tensors on CPU in ``dtype``."""
    return {k: v.detach().to("cpu", dtype) for k, v in sd15_keys.unet_to_ldm(unet_state, unet_config).items()}


def write_checkpoint_with_unet(
    base_path: str | Path, out_path: str | Path, unet_tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> Path:
    """The base checkpoint with its UNet tensors replaced by ``unet_tensors``; every other tensor as it was."""
    from .models import read_checkpoint

    base = read_checkpoint(base_path)
    base_unet = {k for k in base if k.startswith(sd15_keys.UNET_PREFIX)}
    if base_unet != set(unet_tensors):
        raise ValueError(
            f"trained UNet keys differ from the base file's: {sorted(base_unet ^ set(unet_tensors))[:5]} "
            "(a bug, please report)"
        )
    for key, tensor in unet_tensors.items():
        if tensor.shape != base[key].shape:
            raise ValueError(f"{key}: trained shape {tuple(tensor.shape)} != base {tuple(base[key].shape)}")
    merged = {k: unet_tensors.get(k, v) for k, v in base.items()}
    meta = {}
    if str(base_path).endswith(".safetensors"):
        meta.update(read_metadata(base_path))
    meta.update(metadata)
    return atomic_save_safetensors(merged, out_path, meta)


# --- resumable training checkpoints -----------------------------------------------------------------------


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() for m in [CHECKPOINT_RE.match(p.name)] if m]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_training_checkpoint(
    run_dir: str | Path, step: int, tensors: dict[str, torch.Tensor], state: dict, total_limit: int = 0
) -> Path:
    """``run_dir/checkpoint-<step>/`` with ``trainable.safetensors`` and ``state.pt``, written as a whole or not at
    all."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".checkpoint-{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / "trainable.safetensors"))
    torch.save(state, tmp / "state.pt")
    if final.exists():  # the same step saved again after a resume: swap, never leave a half folder
        old = run_dir / f".checkpoint-{step}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    if total_limit > 0:
        for _, path in list_checkpoints(run_dir)[:-total_limit]:
            shutil.rmtree(path, ignore_errors=True)
    return final


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        try:
            import psutil
        except ImportError:
            return True
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours, or the platform cannot tell: leave its files alone
        return True
    return True


def remove_stale_temporaries(folder: str | Path, only_for: str | None = None) -> list[Path]:
    """Cleans up after runs killed while saving: their temporary files and folders (a full checkpoint's is
    the size of the UNet plus its optimizer state) are deleted, and a checkpoint caught between the two
    renames of a re-save is put back. Whole run folder, or only the temporaries of the file ``only_for``
    (the output's folder may be a large models folder). Those of a live process stay."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if only_for:
        candidates = [p for p in folder.iterdir() if p.name.startswith(f".{only_for}.")]
    else:
        candidates = list(folder.rglob(".*"))
    removed = []
    for path in sorted(candidates):
        match = TEMPORARY_RE.match(path.name)
        if not match or not path.exists() or _process_alive(int(match.group(2))):
            continue
        kept = path.with_name(path.name[1 : match.start(1) - 1])
        if match.group(1) == "old" and CHECKPOINT_RE.match(kept.name) and not kept.exists():
            os.replace(path, kept)
            log.info("restored %s, which a killed run was replacing", kept)
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("removed %d half-written file(s) of an earlier, killed run from %s", len(removed), folder)
    return removed


def load_training_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "trainable.safetensors").is_file() or not (path / "state.pt").is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (needs trainable.safetensors and state.pt)")
    return load_file(str(path / "trainable.safetensors")), torch.load(
        path / "state.pt", map_location="cpu", weights_only=True
    )
