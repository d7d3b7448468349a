"""The Local Dense Captioner node's declaration, as ComfyUI reads it (no ComfyUI needed)."""

from __future__ import annotations


def test_node_is_registered_with_its_stable_id(pack):
    from realign_pack.nodes.dense_captioner import LocalDenseCaptioner

    assert pack.NODE_CLASS_MAPPINGS["RealignDiffLocalDenseCaptioner"] is LocalDenseCaptioner
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["RealignDiffLocalDenseCaptioner"] == "Local Dense Captioner"


def test_every_input_has_a_tooltip_and_no_input_takes_a_key(pack):
    from realign_pack.nodes.dense_captioner import LocalDenseCaptioner

    spec = LocalDenseCaptioner.INPUT_TYPES()
    inputs = {**spec["required"], **spec["optional"]}
    for name, (_kind, options) in inputs.items():
        assert options.get("tooltip"), name
        assert not any(word in name.lower() for word in ("key", "token", "secret", "password")), name
    assert inputs["scorer"][0] == ["offline", "openai-compatible"] and inputs["scorer"][1]["default"] == "offline"
    assert (inputs["ram"][0], inputs["grounding_dino"][0], inputs["sam"][0]) == (
        "REALIGN_RAM",
        "REALIGN_GROUNDING_DINO",
        "REALIGN_SAM",
    )
    node = LocalDenseCaptioner
    assert node.RETURN_TYPES == ("REALIGN_GUIDANCE", "MASK", "IMAGE", "STRING")
    assert len(node.RETURN_NAMES) == len(node.OUTPUT_TOOLTIPS) == 4
    assert node.CATEGORY == "RealignDiff" and node.DESCRIPTION
    import inspect

    params = set(inspect.signature(getattr(node, node.FUNCTION)).parameters) - {"self"}
    assert params == set(inputs)
