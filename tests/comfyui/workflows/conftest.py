"""Fixtures for the shipped-workflow tests: ComfyUI's real HTTP server in a subprocess and a headless browser."""

from __future__ import annotations

import pytest

from realign_testkit.browser import WebUI, browser_available
from realign_testkit.comfyui import find_comfyui
from realign_testkit.comfyui_server import ComfyUIServer


@pytest.fixture(scope="session")
def comfyui_server(tmp_path_factory):
    """``main.py --cpu --listen 127.0.0.1`` on a free port, this pack linked into its custom_nodes."""
    path, reason = find_comfyui()
    if path is None:
        pytest.skip(reason)
    server = ComfyUIServer(path, tmp_path_factory.mktemp("comfyui-server"), settings={"Comfy.Minimap.Visible": False})
    with server:
        yield server


@pytest.fixture(scope="session")
def web_ui(comfyui_server):
    available, reason = browser_available()
    if not available:
        pytest.skip(reason)
    with WebUI(comfyui_server.url) as ui:
        yield ui
