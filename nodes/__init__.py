"""Node registry. Each module declares its own NODE_CLASS_MAPPINGS; one that fails to import
(a missing optional dependency) hides its own nodes only, and the log says what to install."""

from __future__ import annotations

import importlib
import logging

from . import model_folders

log = logging.getLogger("RealignDiff")

NODE_MODULES = ("attention_patch", "grounded_sam", "caption_reward", "ram", "dense_captioner")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

model_folders.register()

for _name in NODE_MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
    except ImportError as error:
        log.warning(
            "[RealignDiff] the %s nodes are unavailable: %s. Install the pack's requirements into "
            "ComfyUI's Python: python -m pip install -r requirements.txt",
            _name,
            error,
        )
        continue
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
