"""Shared fixtures. Tests marked ``comfyui`` run inside a real ComfyUI and skip without one."""

from __future__ import annotations

import pytest

from realign_diff.compat.torchvision_ops import ensure_torchvision_importable
from realign_testkit.comfyui import find_comfyui, start_comfyui
from realign_testkit.pack import load_pack

ensure_torchvision_importable()  # before any test imports transformers


def pytest_collection_modifyitems(config, items):
    path, reason = find_comfyui()
    if path is not None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "comfyui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pack():
    """The pack imported as ComfyUI imports it (package ``realign_pack``), without ComfyUI."""
    return load_pack()


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """A real ComfyUI in this process, on a temp base directory, with this pack loaded by its loader."""
    return start_comfyui(tmp_path_factory.mktemp("comfyui-base"))


@pytest.fixture(scope="session")
def sd15_checkpoint(comfyui):
    """File name (in models/checkpoints) of a random-weight SD-1.5 checkpoint with a small UNet."""
    from realign_testkit.sd15_checkpoint import write_sd15_checkpoint

    name = "realign_sd15_random.safetensors"
    path = comfyui.models_dir / "checkpoints" / name
    if not path.exists():
        write_sd15_checkpoint(path, small_unet=True)
    return name
