"""The pack as ComfyUI's real server sees it: registry metadata through ComfyUI's own parser, the
workflow-template browser's endpoints, and a missing optional package hiding only its own nodes."""

import importlib
import json
import urllib.request

import pytest

from realign_testkit.comfyui import find_comfyui
from realign_testkit.comfyui_server import HIDE_ENV, PACK_FOLDER_NAME, ComfyUIServer
from realign_testkit.pack import PACK_ROOT

pytestmark = pytest.mark.comfyui

SHIPPED = sorted(p.stem for p in (PACK_ROOT / "workflows").glob("*.json"))
OPTIONAL_PACKAGES = ("segment_anything", "groundingdino", "openai")  # ComfyUI itself never imports these


def test_comfyuis_own_parser_reads_our_pyproject(comfyui):
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(PACK_ROOT))
    assert config.project.name == "realigndiff"
    assert config.tool_comfy.publisher_id and config.tool_comfy.display_name == "RealignDiff"
    assert config.tool_comfy.icon.endswith(".svg")
    assert config.project.supported_os == ["OS Independent"]
    assert config.project.license.file == "LICENSE"
    assert sorted(config.project.dependencies) == sorted(
        line.strip()
        for line in (PACK_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def test_workflow_template_browser_lists_and_serves_the_shipped_workflows(comfyui_server):
    templates = comfyui_server.get_json("/workflow_templates")
    assert sorted(templates.get(PACK_FOLDER_NAME, [])) == SHIPPED
    for name in SHIPPED:
        served = comfyui_server.get_json(
            f"/api/workflow_templates/{PACK_FOLDER_NAME}/{urllib.request.quote(name)}.json"
        )
        assert served == json.loads((PACK_ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8"))


def _expected_visible_nodes(hidden: set[str]) -> tuple[set[str], dict[str, list[str]]]:
    """(node ids that must stay, {module: missing requirements}) when the packages ``hidden`` are absent."""
    from realign_testkit.pack import load_pack

    load_pack()
    from realign_pack import nodes

    visible, gone = set(), {}
    for module_name in nodes.NODE_MODULES:
        module = importlib.import_module(f"realign_pack.nodes.{module_name}")
        missing = [req for name, req in getattr(module, "REQUIRES", {}).items() if name.split(".")[0] in hidden]
        if missing:
            gone[module_name] = missing
        else:
            visible |= set(module.NODE_CLASS_MAPPINGS)
    return visible, gone


def test_missing_optional_package_hides_only_its_nodes_and_says_how_to_install(tmp_path_factory):
    path, reason = find_comfyui()
    if path is None:
        pytest.skip(reason)
    hidden = set(OPTIONAL_PACKAGES)
    visible, gone = _expected_visible_nodes(hidden)
    import os

    env = dict(os.environ, **{HIDE_ENV: ",".join(sorted(hidden))})
    with ComfyUIServer(path, tmp_path_factory.mktemp("comfyui-hidden-deps"), env=env) as server:
        object_info = server.get_json("/object_info")
        log = server.log()
    ours = {name for name, info in object_info.items() if info.get("category", "").startswith("RealignDiff")}
    assert ours == visible
    ours_lines = [line for line in log.splitlines() if PACK_FOLDER_NAME in line]
    assert any("seconds" in line for line in ours_lines), "the pack is not in ComfyUI's import-times list"
    assert not [line for line in ours_lines if "IMPORT FAILED" in line or "Cannot import" in line]
    for module_name, requirements in gone.items():
        line = next((row for row in log.splitlines() if f"[RealignDiff] {module_name} nodes unavailable" in row), None)
        assert line is not None, f"no log line for {module_name}:\n{log[-3000:]}"
        for requirement in requirements:
            assert requirement in line and "pip install" in line
