"""The UI-format -> API-format converter's rules, on small node classes declared here.

The same rules are checked against the real web UI's ``graphToPrompt`` in
tests/comfyui/test_workflow_browser.py and run through real ComfyUI in tests/comfyui/test_workflow_convert.py.
"""

import pytest

from realign_testkit.workflow_builder import GraphBuilder
from realign_testkit.workflows import (
    MissingNodeTypes,
    StaleWorkflow,
    node_info,
    output_node_ids,
    widget_layout,
    workflow_to_prompt,
)


class Loader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (["a.safetensors", "b.safetensors"],)}}

    RETURN_TYPES = ("MODEL", "IMAGE")


class Sampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "seed": ("INT", {"default": 0, "min": 0}),
                "steps": ("INT", {"default": 20}),
                "text": ("STRING", {"multiline": True, "default": "hi"}),
                "strength": ("FLOAT", {"forceInput": True}),
            },
            "optional": {
                "mode": (["x", "y"], {"control_after_generate": True}),
                "flag": ("BOOLEAN", {"default": True}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("IMAGE",)


class NoControlSeed:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 3, "control_after_generate": False}), "image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)


class Upload:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"image": (["x.png"], {"image_upload": True})},
            "optional": {"scale": ("FLOAT", {"default": 1.0})},
        }

    RETURN_TYPES = ("IMAGE", "MASK")


class Sink:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "prefix": ("STRING", {"default": "out"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True


NODES = {"Loader": Loader, "Sampler": Sampler, "NoControlSeed": NoControlSeed, "Upload": Upload, "Sink": Sink}


def test_widget_layout_follows_the_frontend_rules():
    names = [(w.name, w.kind) for w in widget_layout(node_info(Sampler))]
    # forceInput and sockets have no widget; seed gets a control widget; an optional combo saying
    # control_after_generate gets one too; hidden inputs are not widgets
    assert names == [
        ("seed", "value"),
        ("control_after_generate", "control"),
        ("steps", "value"),
        ("text", "value"),
        ("mode", "value"),
        ("control_after_generate", "control"),
        ("flag", "value"),
    ]
    assert [w.name for w in widget_layout(node_info(NoControlSeed))] == ["seed"]
    assert [(w.name, w.kind) for w in widget_layout(node_info(Upload))] == [
        ("image", "value"),
        ("scale", "value"),
        ("upload", "upload"),
    ]


def _graph():
    g = GraphBuilder(NODES)
    loader = g.add("Loader", (0, 0), name="b.safetensors")
    sampler = g.add("Sampler", (400, 0), seed=42, control_after_generate="randomize", steps=4, text="a red book")
    sink = g.add("Sink", (800, 0), prefix="realign")
    g.connect(loader, "MODEL", sampler, "model")
    g.connect(sampler, "IMAGE", sink, "images")
    return g, loader, sampler, sink


def test_plain_graph_converts_with_widget_values_by_name():
    g, loader, sampler, sink = _graph()
    prompt = workflow_to_prompt(g.to_json(), NODES)
    assert prompt[str(sampler.id)] == {
        "class_type": "Sampler",
        "inputs": {
            "seed": 42,
            "steps": 4,
            "text": "a red book",
            "mode": "x",
            "flag": True,
            "model": [str(loader.id), 0],
        },
    }
    assert prompt[str(loader.id)]["inputs"] == {"name": "b.safetensors"}
    assert output_node_ids(prompt, NODES) == [str(sink.id)]


def test_linked_widget_input_takes_the_link_and_force_input_links_are_kept():
    g, loader, sampler, sink = _graph()
    up = g.add("Upload", (0, 300))
    seed_source = g.add("NoControlSeed", (0, 500))
    g.connect(up, "IMAGE", seed_source, "image")
    # strength is forceInput: a socket only; wiring an IMAGE into it is a type error for the server, not for us
    g.connect(up, "MASK", sampler, "strength")
    prompt = workflow_to_prompt(g.to_json(), NODES)
    assert prompt[str(sampler.id)]["inputs"]["strength"] == [str(up.id), 1]
    assert prompt[str(up.id)]["inputs"] == {"image": "x.png", "scale": 1.0}  # no "upload" sent


def test_notes_reroutes_primitives_and_groups_are_resolved_like_the_web_ui():
    g = GraphBuilder(NODES)
    loader = g.add("Loader", (0, 0))
    reroute_a, reroute_b = g.reroute((200, 0)), g.reroute((300, 0))
    sampler = g.add("Sampler", (400, 0))
    primitive = g.primitive((0, 300), 1234, control="fixed", title="seed")
    sink = g.add("Sink", (800, 0))
    g.note("# Models\nput a.safetensors in models/checkpoints", (0, -200))
    g.group("Generate", (-20, -240, 1200, 700))
    g.connect(loader, "MODEL", reroute_a, "")
    g.connect(reroute_a, 0, reroute_b, "")
    g.connect(reroute_b, 0, sampler, "model")
    g.connect(primitive, 0, sampler, "seed")
    g.connect(sampler, "IMAGE", sink, "images")
    prompt = workflow_to_prompt(g.to_json(), NODES)
    assert set(prompt) == {str(loader.id), str(sampler.id), str(sink.id)}
    assert prompt[str(sampler.id)]["inputs"]["model"] == [str(loader.id), 0]
    assert prompt[str(sampler.id)]["inputs"]["seed"] == 1234


def test_bypassed_node_passes_its_input_of_the_same_type_and_muted_nodes_drop_out():
    g = GraphBuilder(NODES)
    up = g.add("Upload", (0, 0))
    bypassed = g.add("NoControlSeed", (300, 0), mode=4)
    muted = g.add("NoControlSeed", (300, 300), mode=2)
    sink = g.add("Sink", (600, 0))
    sink2 = g.add("Sink", (600, 300))
    g.connect(up, "IMAGE", bypassed, "image")
    g.connect(bypassed, "IMAGE", sink, "images")
    g.connect(up, "IMAGE", muted, "image")
    g.connect(muted, "IMAGE", sink2, "images")
    prompt = workflow_to_prompt(g.to_json(), NODES)
    assert str(bypassed.id) not in prompt and str(muted.id) not in prompt
    assert prompt[str(sink.id)]["inputs"]["images"] == [str(up.id), 0]
    assert "images" not in prompt[str(sink2.id)]["inputs"]  # as the web UI: the server then reports it missing


def test_missing_node_types_are_all_named():
    g, *_ = _graph()
    workflow = g.to_json()
    workflow["nodes"].append(dict(workflow["nodes"][0], id=10, type="RealignDiffGone"))
    workflow["nodes"].append(dict(workflow["nodes"][0], id=11, type="OtherGone"))
    with pytest.raises(MissingNodeTypes) as error:
        workflow_to_prompt(workflow, NODES)
    assert error.value.missing == {"RealignDiffGone": ["10"], "OtherGone": ["11"]}
    assert "RealignDiffGone: node(s) 10" in str(error.value)


def test_stale_widget_values_fail_loudly():
    g, loader, sampler, sink = _graph()
    workflow = g.to_json()
    node = next(n for n in workflow["nodes"] if n["id"] == sampler.id)
    node["widgets_values"] = [42, 4, "a red book", "x", "fixed", True]  # saved without the seed's control widget
    with pytest.raises(StaleWorkflow, match=r"node 2 \(Sampler\) has 6 widget values .* has 7 widgets"):
        workflow_to_prompt(workflow, NODES)


def test_trailing_null_from_unsaved_preview_widgets_is_tolerated():
    g, loader, sampler, sink = _graph()
    workflow = g.to_json()
    next(n for n in workflow["nodes"] if n["id"] == sink.id)["widgets_values"].append(None)
    assert workflow_to_prompt(workflow, NODES)[str(sink.id)]["inputs"]["prefix"] == "realign"


def test_links_into_unknown_inputs_or_out_of_missing_outputs_are_stale():
    g, loader, sampler, sink = _graph()
    workflow = g.to_json()
    node = next(n for n in workflow["nodes"] if n["id"] == sampler.id)
    node["inputs"][0]["name"] = "unet"  # an input renamed since the workflow was saved
    with pytest.raises(StaleWorkflow, match="input 'unet'"):
        workflow_to_prompt(workflow, NODES)
    g, loader, sampler, sink = _graph()
    workflow = g.to_json()
    workflow["links"][0][2] = 5
    with pytest.raises(StaleWorkflow, match="output 5"):
        workflow_to_prompt(workflow, NODES)


def test_widgets_saved_as_a_dict_map_by_name():
    g, loader, sampler, sink = _graph()
    workflow = g.to_json()
    next(n for n in workflow["nodes"] if n["id"] == loader.id)["widgets_values"] = {"name": "a.safetensors"}
    assert workflow_to_prompt(workflow, NODES)[str(loader.id)]["inputs"] == {"name": "a.safetensors"}
