"""Node registry. Each module declares its own NODE_CLASS_MAPPINGS; one that cannot be used hides its own
nodes only, and the log says what is missing and how to install it.

A node module imports its heavy libraries inside functions (so importing the pack stays fast) and
declares the packages its nodes need as ``REQUIRES = {"import_name": "pip requirement"}``, e.g.
``{"segment_anything": "segment-anything>=1.0"}``. They are looked up without being imported
(``importlib.util.find_spec``); a module whose packages are missing, or whose import fails, is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

from . import model_folders

log = logging.getLogger("RealignDiff")

NODE_MODULES = (
    "attention_patch",
    "attention_maps",
    "grounded_sam",
    "caption_reward",
    "ram",
    "dense_captioner",
    "clip_score",
)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
UNAVAILABLE: dict[str, str] = {}  # node module -> why its nodes are hidden


def missing_requirements(requires: dict[str, str]) -> list[str]:
    """The pip requirements, among ``{import name: requirement}``, whose package cannot be found."""
    missing = []
    for import_name, requirement in requires.items():
        try:
            found = importlib.util.find_spec(import_name) is not None
        except (ImportError, ValueError):  # a broken install, or a finder that refuses the name
            found = False
        if not found:
            missing.append(requirement)
    return missing


def _hide(name: str, reason: str, requirements: list[str] | None = None, nodes: list[str] | None = None) -> None:
    install = " ".join(f'"{r}"' for r in requirements) if requirements else "-r requirements.txt"
    UNAVAILABLE[name] = reason
    log.warning(
        "[RealignDiff] %s nodes unavailable%s: %s. Install into ComfyUI's Python: python -m pip install %s "
        "(portable Windows: python_embeded\\python.exe -m pip install %s)",
        name,
        f" ({', '.join(nodes)})" if nodes else "",
        reason,
        install,
        install,
    )


model_folders.register()

for _name in NODE_MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
    except Exception as error:  # any failure hides this module's nodes only, never the whole pack
        _hide(_name, f"import failed ({type(error).__name__}: {error})")
        continue
    _missing = missing_requirements(getattr(_module, "REQUIRES", {}))
    if _missing:
        _hide(_name, "missing " + ", ".join(_missing), _missing, list(_module.NODE_DISPLAY_NAME_MAPPINGS.values()))
        continue
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
