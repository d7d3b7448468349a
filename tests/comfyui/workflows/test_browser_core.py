"""The browser check itself, on core-node workflows: the web UI loads them, and its own graphToPrompt
gives exactly what our converter gives (so the converter follows the frontend's widget rules)."""

import pytest

from realign_testkit import core_workflows
from realign_testkit.browser import prompt_as_executed
from realign_testkit.workflows import workflow_to_prompt

pytestmark = pytest.mark.comfyui


@pytest.mark.parametrize("build", [core_workflows.txt2img, core_workflows.txt2img_with_ui_only_features])
def test_web_ui_loads_core_workflow_and_agrees_with_the_converter(comfyui, web_ui, build):
    nodes = comfyui.nodes.NODE_CLASS_MAPPINGS
    workflow = build(nodes, "v1-5-pruned-emaonly-fp16.safetensors")
    result = web_ui.load_workflow(workflow)
    assert result.error is None
    assert result.dialogs == []
    assert result.console_errors == []
    assert sorted((n["id"], n["type"]) for n in result.nodes) == sorted((n["id"], n["type"]) for n in workflow["nodes"])
    assert all(n["registered"] and not n["has_errors"] for n in result.nodes)
    assert prompt_as_executed(result.prompt, nodes) == prompt_as_executed(workflow_to_prompt(workflow, nodes), nodes)
    for node in workflow["nodes"]:  # loading did not shift any widget value
        if node["type"] not in ("Reroute",):
            assert result.widgets_values[str(node["id"])] == node.get("widgets_values", [])


def test_browser_check_sees_the_missing_node_dialog(comfyui, web_ui):
    workflow = core_workflows.txt2img(comfyui.nodes.NODE_CLASS_MAPPINGS, "v1-5-pruned-emaonly-fp16.safetensors")
    workflow["nodes"][1]["type"] = "RealignDiffNoSuchNode"
    result = web_ui.load_workflow(workflow)
    assert any("RealignDiffNoSuchNode" in text for text in result.dialogs), result.dialogs
    web_ui.close_dialogs()
