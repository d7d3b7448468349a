"""RAM node glue that needs no ComfyUI: the text inputs of the RAM Tagger node."""

import pytest


@pytest.fixture(scope="module")
def ram_nodes(pack):
    from realign_pack.nodes import ram

    return ram


def test_nodes_are_registered_under_stable_ids(pack):
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["RealignDiffRamLoader"] == "RAM Tagger Loader"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["RealignDiffRamTagger"] == "RAM Tagger"


def test_threshold_overrides_text(ram_nodes):
    parse = ram_nodes.parse_threshold_overrides
    assert parse("") == {}
    assert parse("pen: 0.5, desk=0.8\n 3D CG rendering : 1\n\n") == {"pen": 0.5, "desk": 0.8, "3D CG rendering": 1.0}
    for bad in ("pen", "pen: high", ": 0.5", "pen: 1.5"):
        with pytest.raises(ValueError, match="tag: threshold"):
            parse(bad)


def test_exclude_text(ram_nodes):
    from realign_pack.realign_diff.dense_captioner.scoring import split_tag_list

    assert split_tag_list(" pen, desk\nbanana,, ") == ["pen", "desk", "banana"]
    assert split_tag_list("") == []


def test_every_input_has_a_tooltip(ram_nodes):
    spec = ram_nodes.RamTag.INPUT_TYPES()
    for group in spec.values():
        for name, (_, options) in group.items():
            assert options.get("tooltip"), name
    assert len(ram_nodes.RamTag.OUTPUT_TOOLTIPS) == len(ram_nodes.RamTag.RETURN_TYPES)
