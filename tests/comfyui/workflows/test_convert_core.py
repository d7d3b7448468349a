"""UI-format workflows of core nodes, converted with the real node definitions and run by ComfyUI's executor."""

import copy

import pytest

from realign_testkit import core_workflows
from realign_testkit.workflows import MissingNodeTypes, StaleWorkflow, output_node_ids, workflow_to_prompt

pytestmark = pytest.mark.comfyui


def test_plain_txt2img_workflow_runs(comfyui, sd15_checkpoint):
    nodes = comfyui.nodes.NODE_CLASS_MAPPINGS
    prompt = workflow_to_prompt(core_workflows.txt2img(nodes, sd15_checkpoint), nodes)
    sampler = next(e for e in prompt.values() if e["class_type"] == "KSampler")
    assert sampler["inputs"]["seed"] == 7 and "control_after_generate" not in sampler["inputs"]
    outputs = comfyui.run(prompt)
    for node_id in output_node_ids(prompt, nodes):
        assert outputs[node_id]["images"][0]["filename"].startswith("core_txt2img")


def test_reroutes_primitive_bypass_mute_and_notes_run(comfyui, sd15_checkpoint):
    nodes = comfyui.nodes.NODE_CLASS_MAPPINGS
    workflow = core_workflows.txt2img_with_ui_only_features(nodes, sd15_checkpoint)
    prompt = workflow_to_prompt(workflow, nodes)
    types = sorted(e["class_type"] for e in prompt.values())
    assert types == sorted(
        [
            "CheckpointLoaderSimple",
            "CLIPTextEncode",
            "CLIPTextEncode",
            "EmptyLatentImage",
            "KSampler",
            "VAEDecode",
            "SaveImage",
        ]
    )
    sampler = next(e for e in prompt.values() if e["class_type"] == "KSampler")
    assert sampler["inputs"]["seed"] == 123  # from the primitive, not the sampler's own saved 0
    outputs = comfyui.run(prompt)
    assert output_node_ids(prompt, nodes) and all(outputs[n]["images"] for n in output_node_ids(prompt, nodes))


def test_stale_and_missing_nodes_fail_before_running(comfyui, sd15_checkpoint):
    nodes = comfyui.nodes.NODE_CLASS_MAPPINGS
    workflow = core_workflows.txt2img(nodes, sd15_checkpoint)
    stale = copy.deepcopy(workflow)
    sampler = next(n for n in stale["nodes"] if n["type"] == "KSampler")
    del sampler["widgets_values"][1]  # an old save without the seed's control widget
    with pytest.raises(StaleWorkflow, match="KSampler"):
        workflow_to_prompt(stale, nodes)
    missing = copy.deepcopy(workflow)
    missing["nodes"][0]["type"] = "RealignDiffNoSuchNode"
    with pytest.raises(MissingNodeTypes, match="RealignDiffNoSuchNode"):
        workflow_to_prompt(missing, nodes)
