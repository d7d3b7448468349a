"""ComfyUI runtime services for non-diffusion models: memory management, progress, Cancel.

Imported only from inside node functions, so node modules import without ComfyUI.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def managed(module: torch.nn.Module):
    """Wrap a module so ComfyUI loads it to the GPU on demand and offloads it under memory pressure."""
    import comfy.model_management as mm
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(
        module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def load(patcher, full: bool = True) -> torch.device:
    """Load a managed model onto its compute device; returns that device.

    Loaded whole by default: plain torch modules (transformers, segment-anything, ours) cannot run with
    some weights left on the offload device, which ComfyUI's low-VRAM partial load would otherwise do.
    """
    import comfy.model_management as mm

    mm.load_models_gpu([patcher], force_full_load=full)
    return patcher.load_device


def load_all(*patchers) -> list:
    """Load several managed models together and return the modules inside them.

    One call, so ComfyUI frees memory with all of them protected: loading them one after the other could
    partly offload the first to make room for the next, leaving a plain torch module split across devices.
    """
    import comfy.model_management as mm

    mm.load_models_gpu(list(patchers), force_full_load=True)
    return [patcher.model for patcher in patchers]


def progress(total: int) -> Callable[[int], None]:
    """A step callback for core loops: advances ComfyUI's progress bar and raises if the user pressed Cancel."""
    import comfy.model_management as mm
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)

    def step(advance: int = 1) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update(advance)

    return step


def show_on_node(node_id: str | None) -> Callable[[str], None] | None:
    """A function that shows a text on node ``node_id`` in the web UI (ComfyUI's progress text), or None outside
    a server (the executor alone, tests): the warnings of a patch that only acts later, inside the sampler."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    server = getattr(PromptServer, "instance", None)
    if node_id is None or server is None:
        return None
    shown: list[str] = []

    def show(text: str) -> None:
        shown.append(f"warning: {text}")
        server.send_progress_text("\n".join(shown), node_id)

    return show
