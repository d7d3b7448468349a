"""Every node of the pack, as ComfyUI registered it: stable prefixed ID, display name, one category,
a description, a tooltip on every input and output, and no widget that could hold an API key."""

import pytest

from realign_testkit.pack import load_pack

pytestmark = pytest.mark.comfyui


def ours(comfyui):
    ids = sorted(load_pack().NODE_CLASS_MAPPINGS)
    assert len(ids) >= 10
    return [(node_id, comfyui.nodes.NODE_CLASS_MAPPINGS[node_id]) for node_id in ids]


def test_ids_names_category_and_description(comfyui):
    for node_id, cls in ours(comfyui):
        assert node_id.startswith("RealignDiff"), node_id
        assert comfyui.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id), f"{node_id} has no display name"
        assert cls.CATEGORY == "RealignDiff", node_id
        assert getattr(cls, "DESCRIPTION", ""), f"{node_id} has no description"


def test_every_input_and_output_has_a_tooltip_and_no_input_takes_a_key(comfyui):
    for node_id, cls in ours(comfyui):
        for section, inputs in cls.INPUT_TYPES().items():
            if section == "hidden":
                continue
            for name, spec in inputs.items():
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
                assert not {"key", "apikey", "token", "secret", "password"} & set(name.lower().split("_")), (
                    f"{node_id}.{name} looks like a secret: keys come from the environment or a config file"
                )
        tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None)
        assert tooltips is not None and len(tooltips) == len(cls.RETURN_TYPES), f"{node_id} output tooltips"
