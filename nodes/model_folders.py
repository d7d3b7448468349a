"""Model folders, all in one place, registered with ComfyUI's folder_paths.

Folders other packs already use (``sams``, ``grounding-dino``) are shared. Registration only
appends: paths a user set in ``extra_model_paths.yaml`` stay first.
"""

from __future__ import annotations

import logging
import os

from ..realign_diff.checkpoint_file import ModelSource, where_to_get

log = logging.getLogger("RealignDiff")

# folder name -> file extensions listed in the UI (empty: folders, listed by the node itself)
FOLDERS: dict[str, set[str]] = {
    "blip2": set(),
    "ram": {".pth", ".safetensors"},
    "grounding-dino": {".pth", ".safetensors"},
    "sams": {".pth", ".safetensors"},
    "bert-base-uncased": set(),
    "clip_score": set(),  # CLIP in Hugging Face format (openai/clip-vit-large-patch14) for the CLIP score
}
# further folders searched for a registered name: the RAM pack users already have keeps its checkpoints in models/rams
ALSO: dict[str, tuple[str, ...]] = {"ram": ("rams",)}


def register() -> None:
    try:
        import folder_paths
    except ImportError:  # outside ComfyUI
        return
    for name, extensions in FOLDERS.items():
        defaults = [os.path.join(folder_paths.models_dir, folder) for folder in (name, *ALSO.get(name, ()))]
        for alias in ALSO.get(name, ()):  # and the paths another pack or extra_model_paths.yaml gave the alias
            defaults += folder_paths.folder_names_and_paths.get(alias, ([], set()))[0]
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.folder_names_and_paths[name] = ([], set(extensions))
        paths, known = folder_paths.folder_names_and_paths[name]
        paths.extend(path for path in dict.fromkeys(defaults) if path not in paths)
        if isinstance(known, set):
            known.update(extensions)


def folder_paths_for(name: str) -> list[str]:
    import folder_paths

    return folder_paths.get_folder_paths(name)


def list_model_dirs(name: str, marker: str = "config.json", report_skipped: bool = False) -> list[str]:
    """Sub-folders (one level deep) of a registered folder that hold ``marker``: Hugging Face model folders.

    ``report_skipped``: log the sub-folders without ``marker`` (once per distinct set, not on every UI refresh).
    """
    found, skipped = set(), set()
    for root in folder_paths_for(name):
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            if os.path.isfile(os.path.join(path, marker)):
                found.add(entry)
            elif report_skipped and os.path.isdir(path) and not entry.startswith("."):
                skipped.add(path)
    if skipped:
        _report_skipped(name, marker, frozenset(skipped))
    return sorted(found)


_reported: set[tuple[str, frozenset[str]]] = set()


def _report_skipped(name: str, marker: str, skipped: frozenset[str]) -> None:
    if (name, skipped) in _reported:
        return
    _reported.add((name, skipped))
    log.warning(
        "[RealignDiff] models/%s: skipped %s (no %s: an incomplete download?)", name, ", ".join(sorted(skipped)), marker
    )


def find_model_dir(name: str, entry: str) -> str | None:
    for root in folder_paths_for(name):
        candidate = os.path.join(root, entry)
        if os.path.isdir(candidate):
            return candidate
    return None


def missing_model_message(missing: str, source: ModelSource) -> str:
    """``No <missing> found.`` and where the file goes (every folder ComfyUI searches) and comes from."""
    paths = ", ".join(folder_paths_for(source.folder)) if _comfy_available() else ""
    return f"No {missing} found. {where_to_get(source, paths)}"


def model_dir(name: str, missing: str, source: ModelSource) -> str:
    """The model folder ``name`` picked from ``source.folder``'s list; a clear error when it is gone."""
    path = find_model_dir(source.folder, name) if name else None
    if path is None:
        raise FileNotFoundError(missing_model_message(missing, source))
    return path


def model_file(name: str, missing: str, source: ModelSource) -> str:
    """The full path of the file ``name`` picked from ``source.folder``'s list; a clear error when it is gone."""
    import folder_paths

    path = folder_paths.get_full_path(source.folder, name)
    if path is None:
        raise FileNotFoundError(missing_model_message(missing, source))
    return path


def _comfy_available() -> bool:
    try:
        import folder_paths  # noqa: F401
    except ImportError:
        return False
    return True
