"""GroundingDINO / SAM loaders and Grounded-SAM Masks inside a real ComfyUI, on tiny random-weight files."""

import json

import pytest

from realign_testkit.grounding import install_in_comfyui, write_bert_folder

pytestmark = pytest.mark.comfyui

LOADER, SAM_LOADER, MASKS = "RealignDiffGroundingDinoLoader", "RealignDiffSamLoader", "RealignDiffGroundedSamMasks"


@pytest.fixture(scope="module")
def tiny_models(comfyui):
    return install_in_comfyui(comfyui)


def _outputs(comfyui, prompt, *node_ids):
    """Run the prompt once; the cached Python outputs of several nodes."""
    comfyui.run(prompt)
    entries = [comfyui.executor.caches.outputs.get(node_id) for node_id in node_ids]
    return [entry.outputs if hasattr(entry, "outputs") else entry for entry in entries]


@pytest.fixture(scope="module")
def found(comfyui, tiny_models):
    """Loader outputs and Grounded-SAM Masks outputs for a batch of two images, thresholds at zero."""
    return _outputs(comfyui, _prompt(tiny_models, 0.0, batch_size=2), "1", "2", "4")


def _prompt(models, box_threshold, batch_size=1):
    return {
        "1": {
            "class_type": LOADER,
            "inputs": {"model_name": models["grounding_dino"], "bert": models["bert"], "config": "auto"},
        },
        "2": {"class_type": SAM_LOADER, "inputs": {"model_name": models["sam"], "model_type": "auto"}},
        "3": {
            "class_type": "EmptyImage",
            "inputs": {"width": 80, "height": 56, "batch_size": batch_size, "color": 0xCC2020},
        },
        "4": {
            "class_type": MASKS,
            "inputs": {
                "grounding_dino": ["1", 0],
                "sam": ["2", 0],
                "image": ["3", 0],
                "tags": "red book, yellow pen\nbanana",
                "box_threshold": box_threshold,
                "text_threshold": 0.0,
                "nms_threshold": 0.5,
            },
        },
        "5": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},  # an output, so the prompt runs
    }


def test_every_input_has_a_tooltip(comfyui, tiny_models):
    for node in (LOADER, SAM_LOADER, MASKS):
        for name, spec in comfyui.nodes.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()["required"].items():
            assert spec[1].get("tooltip"), f"{node}.{name}"


def test_loaders_list_the_model_folders(comfyui, tiny_models):
    inputs = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER].INPUT_TYPES()["required"]
    assert tiny_models["grounding_dino"] in inputs["model_name"][0]
    assert tiny_models["bert"] in inputs["bert"][0]
    assert inputs["config"][0][:3] == ["auto", "swint_ogc", "swinb"]
    assert (
        tiny_models["sam"] in comfyui.nodes.NODE_CLASS_MAPPINGS[SAM_LOADER].INPUT_TYPES()["required"]["model_name"][0]
    )


def test_loaders_give_offloadable_models(found):
    import comfy.model_patcher

    detector, segmenter = found[0][0][0], found[1][0][0]
    assert isinstance(detector, comfy.model_patcher.ModelPatcher)
    assert type(detector.model).__name__ == "GroundingDinoDetector"
    assert detector.model.config.name == "tiny"
    assert type(segmenter.model).__name__ == "SamSegmenter"


def test_grounded_sam_masks_one_mask_per_tag_found(found):
    masks, labels = found[2]
    masks, labels = masks[0], json.loads(labels[0])
    assert masks.shape[1:] == (56, 80)
    assert masks.shape[0] == len(labels) >= 2
    for entry in labels:
        assert entry["tag"] in ("red book", "yellow pen", "banana")
    for image in (0, 1):
        tags = [entry["tag"] for entry in labels if entry["image"] == image]
        assert len(tags) == len(set(tags))


def test_nothing_found_gives_one_empty_mask(comfyui, tiny_models):
    masks, labels = comfyui.output_of(_prompt(tiny_models, 1.0), "4")
    assert masks[0].shape == (1, 56, 80) and masks[0].sum() == 0
    assert json.loads(labels[0]) == []


def test_bert_folder_itself_is_offered_when_it_holds_config_json(comfyui, tiny_models):
    root = comfyui.models_dir / "bert-base-uncased"
    write_bert_folder(root, weights=False)
    try:
        choices = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER].INPUT_TYPES()["required"]["bert"][0]
        assert choices[0] == "bert-base-uncased" and tiny_models["bert"] in choices
        module = __import__(comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER].__module__, fromlist=["resolve_bert_dir"])
        assert module.resolve_bert_dir("bert-base-uncased") == str(root)
    finally:
        for name in ("config.json", "vocab.txt"):
            (root / name).unlink()


def test_missing_files_name_the_folder_to_fill(comfyui, tiny_models):
    loader = comfyui.nodes.NODE_CLASS_MAPPINGS[LOADER]()
    with pytest.raises(FileNotFoundError, match="models/grounding-dino.*groundingdino_swint_ogc.pth"):
        loader.load("groundingdino_swint_ogc.pth", tiny_models["bert"], "auto")
    with pytest.raises(FileNotFoundError, match="models/bert-base-uncased"):
        loader.load(tiny_models["grounding_dino"], "no-such-bert", "auto")
    with pytest.raises(FileNotFoundError, match="models/sams"):
        comfyui.nodes.NODE_CLASS_MAPPINGS[SAM_LOADER]().load("sam_vit_b_01ec64.pth", "auto")


def test_a_broken_checkpoint_fails_the_prompt_with_the_file_and_the_fix(comfyui, tiny_models):
    from realign_testkit.comfyui import ExecutionFailed

    broken = comfyui.models_dir / "sams" / "sam_vit_b_01ec64.pth"
    broken.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ec2df62732614e57\nsize 375042383\n")
    try:
        with pytest.raises(ExecutionFailed) as caught:
            comfyui.run(_prompt({**tiny_models, "sam": broken.name}, 0.0))
    finally:
        broken.unlink()
    message = str(caught.value)
    assert "ModelFileError: sam_vit_b_01ec64.pth is not a readable model file: it is a git-lfs pointer file" in message
    assert "models/sams" in message and "dl.fbaipublicfiles.com/segment_anything" in message
