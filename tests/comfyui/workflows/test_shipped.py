"""Every shipped workflow, end to end: converted with this ComfyUI's real node definitions, run by its
executor on random-weight models in the real file formats, every output node producing its output; and
loaded by the real web UI in headless Chromium with no missing-node or error dialog."""

import os
import time

import pytest

from realign_testkit.browser import prompt_as_executed
from realign_testkit.comfyui_server import PACK_FOLDER_NAME
from realign_testkit.shipped import environment_note, fast_settings, prepare_inputs, shipped_workflows
from realign_testkit.workflows import load_workflow, output_node_ids, workflow_to_prompt

pytestmark = pytest.mark.comfyui

WORKFLOWS = shipped_workflows()
IDS = [p.stem for p in WORKFLOWS]
NOTE_TYPES = ("Note", "MarkdownNote")


def test_workflows_are_shipped():
    assert len(WORKFLOWS) >= 3, [p.name for p in WORKFLOWS]


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_shipped_workflow_says_where_the_models_go(path):
    workflow = load_workflow(path)
    notes = " ".join(str(v) for n in workflow["nodes"] if n["type"] in NOTE_TYPES for v in n.get("widgets_values", []))
    assert "models/" in notes, f"{path.name}: no note naming a models/ folder"


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_shipped_workflow_runs_end_to_end(comfyui, path):
    nodes = comfyui.nodes.NODE_CLASS_MAPPINGS
    prompt = fast_settings(workflow_to_prompt(load_workflow(path), nodes))
    prepare_inputs(prompt, comfyui)
    outputs_expected = output_node_ids(prompt, nodes)
    assert outputs_expected, f"{path.name} has no output node"
    start = time.perf_counter()
    outputs = comfyui.run(prompt)
    seconds = time.perf_counter() - start
    print(f"\n[timing] {path.name}: {seconds:.1f} s ({environment_note()})")
    for node_id in outputs_expected:
        assert node_id in outputs, f"{prompt[node_id]['class_type']} (node {node_id}) produced no output"
        assert any(outputs[node_id].get(key) for key in outputs[node_id]), outputs[node_id]
    # every node of the graph ran and is cached (nothing was pruned as unreachable)
    for node_id, entry in prompt.items():
        assert comfyui.executor.caches.outputs.get(node_id) is not None, (
            f"{entry['class_type']} (node {node_id}) did not run"
        )


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_web_ui_loads_shipped_workflow(comfyui, web_ui, path, tmp_path):
    workflow = load_workflow(path)
    result = web_ui.load_workflow(workflow)
    assert result.error is None
    assert result.dialogs == [], result.dialogs
    assert result.console_errors == []
    assert sorted((n["id"], n["type"]) for n in result.nodes) == sorted((n["id"], n["type"]) for n in workflow["nodes"])
    missing = [n for n in result.nodes if not n["registered"] or n["has_errors"]]
    assert missing == []
    nodes = comfyui.nodes.NODE_CLASS_MAPPINGS
    assert prompt_as_executed(result.prompt, nodes) == prompt_as_executed(workflow_to_prompt(workflow, nodes), nodes)
    for node in workflow["nodes"]:
        if node["type"] != "Reroute":
            assert result.widgets_values[str(node["id"])] == node.get("widgets_values", []), node["type"]
    web_ui.fit_view()
    shots = os.environ.get("REALIGN_SCREENSHOT_DIR")
    web_ui.screenshot((shots and os.path.join(shots, f"{path.stem}.png")) or tmp_path / f"{path.stem}.png")


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_shipped_workflow_uses_only_core_and_pack_nodes(comfyui, pack, path):
    """Users need no other custom node pack."""
    for node in load_workflow(path)["nodes"]:
        if node["type"] in NOTE_TYPES + ("Reroute", "PrimitiveNode") or node["type"] in pack.NODE_CLASS_MAPPINGS:
            continue
        origin = getattr(comfyui.nodes.NODE_CLASS_MAPPINGS[node["type"]], "RELATIVE_PYTHON_MODULE", "nodes")
        assert not origin.startswith("custom_nodes"), f"{node['type']} comes from {origin}"


def test_template_browser_offers_the_shipped_workflows(web_ui):
    text = web_ui.open_templates(PACK_FOLDER_NAME)
    try:
        assert PACK_FOLDER_NAME in text
        for name in IDS:
            assert name in text, f"{name} not in the template browser:\n{text[:2000]}"
        shots = os.environ.get("REALIGN_SCREENSHOT_DIR")
        if shots:
            web_ui.screenshot(os.path.join(shots, "template_browser.png"))
    finally:
        web_ui.close_dialogs()
