"""Grounded-SAM: one object per tag (union of masks and boxes, max confidence), end to end on tiny models."""

from __future__ import annotations

import torch

from realign_diff.dense_captioner.grounded_sam import GROUND_TAGS_STEPS, box_mask, ground_tags, merge_per_tag
from realign_diff.dense_captioner.grounding import Detection
from realign_testkit.sam import ForwardCounter


def _mask(height, width, y0, y1, x0, x1):
    mask = torch.zeros(height, width)
    mask[y0:y1, x0:x1] = 1
    return mask


def test_a_tag_found_twice_is_one_object_with_the_union():
    detections = [
        Detection("pen", (50.0, 5.0, 60.0, 15.0), 0.6),
        Detection("book", (0.0, 0.0, 10.0, 10.0), 0.5),
        Detection("book", (20.0, 30.0, 40.0, 45.0), 0.8),
    ]
    masks = torch.stack([_mask(50, 64, 5, 15, 50, 60), _mask(50, 64, 0, 10, 0, 10), _mask(50, 64, 30, 45, 20, 40)])
    objects = merge_per_tag(detections, masks, tags=["book", "pen", "banana"])
    assert [o.tag for o in objects] == ["book", "pen"]
    book, pen = objects
    assert torch.equal(book.mask, torch.maximum(masks[1], masks[2]))
    assert book.box == (0.0, 0.0, 40.0, 45.0)
    assert book.confidence == 0.8
    assert torch.equal(pen.mask, masks[0])
    assert pen.box == (50.0, 5.0, 60.0, 15.0) and pen.confidence == 0.6
    assert book.mask.dtype == torch.float32 and book.mask.shape == (50, 64)


def test_without_tags_objects_come_in_order_of_detection():
    detections = [Detection("pen", (0.0, 0.0, 5.0, 5.0), 0.9), Detection("book", (0.0, 0.0, 5.0, 5.0), 0.8)]
    objects = merge_per_tag(detections, torch.ones(2, 8, 8))
    assert [o.tag for o in objects] == ["pen", "book"]


def test_an_empty_sam_mask_falls_back_to_its_box():
    objects = merge_per_tag([Detection("cup", (2.0, 3.0, 6.0, 5.0), 0.7)], torch.zeros(1, 8, 10))
    assert torch.equal(objects[0].mask, box_mask((2.0, 3.0, 6.0, 5.0), 8, 10))
    assert objects[0].mask.sum() == 4 * 2


def test_ground_tags_end_to_end(tiny_detector, tiny_segmenter, synthetic_image):
    height, width = synthetic_image.shape[:2]
    tags = ["red book", "yellow pen", "banana", "desk"]
    steps = []
    with ForwardCounter(tiny_segmenter.sam.image_encoder) as encoder:
        objects = ground_tags(tiny_detector, tiny_segmenter, synthetic_image, tags, 0.0, 0.0, 0.5, on_step=steps.append)
    assert objects
    assert encoder.calls == 1
    assert sum(steps) == GROUND_TAGS_STEPS
    assert len({o.tag for o in objects}) == len(objects)
    assert [o.tag for o in objects] == [t for t in tags if t in {o.tag for o in objects}]
    detections = tiny_detector.detect(synthetic_image, tags, 0.0, 0.0, 0.5)
    for obj in objects:
        assert obj.mask.shape == (height, width) and obj.mask.dtype == torch.float32
        assert set(obj.mask.unique().tolist()) <= {0.0, 1.0} and obj.mask.sum() > 0
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        own = [d for d in detections if d.phrase == obj.tag]
        assert obj.confidence == max(d.confidence for d in own)
        assert obj.box == (
            min(d.box[0] for d in own),
            min(d.box[1] for d in own),
            max(d.box[2] for d in own),
            max(d.box[3] for d in own),
        )


def test_nothing_found_is_an_empty_list_without_running_sam(tiny_detector, tiny_segmenter, synthetic_image):
    steps = []
    with ForwardCounter(tiny_segmenter.sam.image_encoder) as encoder:
        objects = ground_tags(
            tiny_detector, tiny_segmenter, synthetic_image, ["red book"], box_threshold=1.0, on_step=steps.append
        )
    assert objects == []
    assert encoder.calls == 0
    assert sum(steps) == GROUND_TAGS_STEPS
    assert ground_tags(tiny_detector, tiny_segmenter, synthetic_image, []) == []
