"""RAM Tagger Loader and RAM Tagger inside a real ComfyUI, on a tiny RAM++ checkpoint in models/ram."""

import json

import pytest

from realign_testkit.comfyui import ExecutionFailed
from realign_testkit.ram import write_tiny_ram

pytestmark = pytest.mark.comfyui

LOADER, TAGGER = "RealignDiffRamLoader", "RealignDiffRamTagger"


@pytest.fixture(scope="module")
def ram_checkpoint(comfyui):
    """A tiny RAM++ in models/ram whose thresholds make it return exactly 'book' and 'pen' for any image."""
    path = write_tiny_ram(
        comfyui.models_dir / "ram", "ram_plus", present=("book", "pen"), file_name="realign_ram_plus_tiny"
    )
    return path.name


def graph(ckpt_name, **tagger_inputs):
    inputs = {"ram": ["1", 0], "image": ["2", 0], "threshold": 0.0, "top_k": 0, **tagger_inputs}
    return {
        "1": {"class_type": LOADER, "inputs": {"ckpt_name": ckpt_name, "precision": "auto"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 2, "color": 0x336699}},
        "3": {"class_type": TAGGER, "inputs": inputs},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},
    }


def test_nodes_are_registered_with_their_display_names(comfyui):
    assert comfyui.nodes.NODE_DISPLAY_NAME_MAPPINGS[LOADER] == "RAM Tagger Loader"
    assert comfyui.nodes.NODE_DISPLAY_NAME_MAPPINGS[TAGGER] == "RAM Tagger"
    loader = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER]
    assert loader.RETURN_TYPES == ("REALIGN_RAM",)
    inputs = loader.INPUT_TYPES()["required"]
    assert all(options.get("tooltip") for _, options in inputs.values())


def test_checkpoint_in_models_ram_is_listed(comfyui, ram_checkpoint):
    loader = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER]
    assert ram_checkpoint in loader.INPUT_TYPES()["required"]["ckpt_name"][0]


def test_checkpoint_in_models_rams_is_listed_and_loads(comfyui):
    """models/rams, the folder of the other RAM pack, is searched too."""
    path = write_tiny_ram(comfyui.models_dir / "rams", "ram_plus", present=("book",), file_name="realign_ram_in_rams")
    loader = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER]
    assert path.name in loader.INPUT_TYPES()["required"]["ckpt_name"][0]
    (patcher,) = [value[0] for value in comfyui.output_of(graph(path.name), "1")]
    assert patcher.model.tag_names[:1] == ["book"]


def test_loader_output_is_a_managed_ram_tagger(comfyui, ram_checkpoint):
    (patcher,) = [value[0] for value in comfyui.output_of(graph(ram_checkpoint), "1")]
    assert type(patcher).__name__ == "ModelPatcher"
    tagger = patcher.model
    assert type(tagger).__name__ == "RamTagger" and tagger.variant == "ram_plus"
    assert tagger.load_report.unexpected == []
    assert tagger.tag_names[:2] == ["book", "pen"]


def test_tagger_node_tags_a_batch(comfyui, ram_checkpoint):
    outputs = comfyui.run(graph(ram_checkpoint))
    assert outputs["4"]["text"][0] == "book, pen\nbook, pen" or outputs["4"]["text"][0] == "pen, book\npen, book"
    scores = json.loads(outputs["5"]["text"][0])
    assert len(scores) == 2 and all(sorted(s["tag"] for s in row) == ["book", "pen"] for row in scores)
    assert all(0 <= s["score"] <= 1 for row in scores for s in row)

    capped = comfyui.run(graph(ram_checkpoint, top_k=1, exclude="book", threshold_overrides="desk: 0.0"))
    lines = capped["4"]["text"][0].split("\n")
    assert len(lines) == 2 and all(len(line.split(", ")) == 1 and line in {"pen", "desk"} for line in lines)


def test_tagger_node_reports_an_unknown_tag(comfyui, ram_checkpoint):
    with pytest.raises(ExecutionFailed, match="'unicorn' not in the RAM tag list"):
        comfyui.run(graph(ram_checkpoint, threshold_overrides="unicorn: 0.5"))
