"""The Grounded-SAM node module without ComfyUI: registration, declarations, tag parsing, outputs."""

from __future__ import annotations

import torch


def test_nodes_are_registered_with_stable_ids_and_display_names(pack):
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["RealignDiffGroundingDinoLoader"] == "GroundingDINO Loader"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["RealignDiffSamLoader"] == "SAM Loader"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["RealignDiffGroundedSamMasks"] == "Grounded-SAM Masks"
    from realign_pack.nodes import grounded_sam

    assert pack.NODE_CLASS_MAPPINGS["RealignDiffGroundingDinoLoader"] is grounded_sam.GroundingDinoLoader
    assert grounded_sam.GroundingDinoLoader.RETURN_TYPES == ("REALIGN_GROUNDING_DINO",)
    assert grounded_sam.SamLoader.RETURN_TYPES == ("REALIGN_SAM",)
    for cls in (grounded_sam.GroundingDinoLoader, grounded_sam.SamLoader, grounded_sam.GroundedSamMasks):
        assert cls.CATEGORY == "RealignDiff" and cls.DESCRIPTION
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)


def test_masks_node_inputs_all_have_tooltips(pack):
    from realign_pack.nodes.grounded_sam import GroundedSamMasks

    for name, (_, options) in GroundedSamMasks.INPUT_TYPES()["required"].items():
        assert options.get("tooltip"), name


def test_tags_are_split_on_commas_periods_and_lines(pack):
    from realign_pack.realign_diff.dense_captioner.scoring import split_tag_list

    assert split_tag_list("book, pen\nyellow pen. book ;; ") == ["book", "pen", "yellow pen"]
    assert split_tag_list("  ") == []
    assert split_tag_list("Pen; pen\nPEN. cat . dog") == ["Pen", "cat", "dog"]  # one parser for every tag widget
    assert split_tag_list("St. Bernard. mt. fuji, dog. dr. pepper.") == ["St. Bernard", "mt. fuji", "dog", "dr. pepper"]


def test_masks_and_labels_batch_every_object_and_never_return_nothing(pack):
    from realign_pack.nodes.grounded_sam import masks_and_labels
    from realign_pack.realign_diff.dense_captioner.grounded_sam import GroundedObject

    book = GroundedObject("book", torch.ones(4, 6), (0.0, 0.0, 6.0, 4.0), 0.91234)
    pen = GroundedObject("pen", torch.zeros(4, 6), (1.0, 1.0, 2.0, 2.0), 0.5)
    masks, labels = masks_and_labels([[book], [], [pen]], 4, 6)
    assert masks.shape == (2, 4, 6)
    assert [(entry["image"], entry["mask"], entry["tag"]) for entry in labels] == [(0, 0, "book"), (2, 1, "pen")]
    assert labels[0]["confidence"] == 0.9123
    empty, none = masks_and_labels([[], []], 4, 6)
    assert empty.shape == (1, 4, 6) and empty.sum() == 0 and none == []
