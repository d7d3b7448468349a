"""SAM through segment-anything: shape-based model type detection, box prompts against one image
embedding, agreement with segment-anything's own SamPredictor, and the error messages."""

from __future__ import annotations

import pytest
import torch

from realign_diff.dense_captioner.sam import SAM_CONFIGS, infer_sam_config, load_sam, model_type_of
from realign_testkit.sam import TINY_SAM, ForwardCounter, tiny_sam_state_dict


def test_loader_reads_the_architecture_from_the_file_and_loads_every_tensor(tiny_sam_file, tiny_segmenter):
    saved = torch.load(tiny_sam_file, weights_only=True)
    assert tiny_segmenter.config == TINY_SAM
    assert tiny_segmenter.model_type == "custom"
    loaded = tiny_segmenter.sam.state_dict()
    assert set(saved) == set(loaded)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    assert not tiny_segmenter.sam.training
    assert torch.equal(tiny_segmenter.sam.pixel_std.flatten(), torch.tensor([58.395, 57.12, 57.375]))


def test_a_half_precision_safetensors_file_loads_to_float32_and_segments_like_the_pth(
    tmp_path, tiny_segmenter, synthetic_image
):
    from safetensors.torch import save_file

    path = tmp_path / "sam_tiny_fp16.safetensors"
    save_file({k: v.half() for k, v in tiny_sam_state_dict().items()}, str(path))
    half = load_sam(path)
    assert all(p.dtype == torch.float32 for p in half.sam.parameters())
    boxes = torch.tensor([[4.0, 4.0, 40.0, 30.0]])
    agree = (half.segment(synthetic_image, boxes) == tiny_segmenter.segment(synthetic_image, boxes)).float().mean()
    assert agree > 0.95  # fp16-rounded weights: the same masks up to edge pixels


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_the_original_models_are_recognized_from_their_shapes(model_type):
    """segment-anything's own builders (on the meta device: shapes only) -> our config and type name."""
    from segment_anything import sam_model_registry

    from realign_diff.dense_captioner.sam import build_sam

    with torch.device("meta"):
        original = sam_model_registry[model_type]().state_dict()
        ours = build_sam(SAM_CONFIGS[model_type]).state_dict()
    config = infer_sam_config(original)
    assert config == SAM_CONFIGS[model_type]
    assert model_type_of(config) == model_type
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in original.items()}


def test_segment_gives_one_binary_mask_per_box_at_the_image_size(tiny_segmenter, synthetic_image):
    height, width = synthetic_image.shape[:2]
    boxes = torch.tensor([[12.0, 10.0, 42.0, 40.0], [60.0, 50.0, 105.0, 60.0], [0.0, 0.0, 112.0, 72.0]])
    masks = tiny_segmenter.segment(synthetic_image, boxes)
    assert masks.shape == (3, height, width)
    assert masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_the_image_is_encoded_once_whatever_the_number_of_boxes(tiny_segmenter, synthetic_image):
    boxes = torch.tensor([[5.0 * i, 4.0 * i, 5.0 * i + 30, 4.0 * i + 25] for i in range(7)])
    tiny_segmenter.box_batch = 3  # three decoder batches
    try:
        with (
            ForwardCounter(tiny_segmenter.sam.image_encoder) as encoder,
            ForwardCounter(tiny_segmenter.sam.mask_decoder) as decoder,
        ):
            masks = tiny_segmenter.segment(synthetic_image, boxes)
    finally:
        tiny_segmenter.box_batch = 16
    assert masks.shape[0] == 7
    assert encoder.calls == 1
    assert decoder.calls == 3


def test_batched_boxes_give_the_masks_of_single_boxes(tiny_segmenter, synthetic_image):
    boxes = torch.tensor([[12.0, 10.0, 42.0, 40.0], [60.0, 50.0, 105.0, 60.0], [30.0, 5.0, 90.0, 70.0]])
    together = tiny_segmenter.segment(synthetic_image, boxes)
    for i in range(3):
        alone = tiny_segmenter.segment(synthetic_image, boxes[i : i + 1])
        assert torch.equal(together[i], alone[0])


def test_masks_match_segment_anythings_predictor(tiny_segmenter, synthetic_image):
    """Same resized input into SamPredictor: its box masks equal ours (box scaling, decoding, upsampling)."""
    from segment_anything import SamPredictor

    height, width = synthetic_image.shape[:2]
    boxes = torch.tensor([[12.0, 10.0, 42.0, 40.0], [60.0, 50.0, 105.0, 60.0]])
    ours = tiny_segmenter.segment(synthetic_image, boxes)

    predictor = SamPredictor(tiny_segmenter.sam)
    pixels = synthetic_image.permute(2, 0, 1)[None] * 255.0
    size = tiny_segmenter.input_size(height, width)
    pixels = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
    predictor.set_torch_image(pixels, (height, width))
    theirs, _, _ = predictor.predict_torch(
        point_coords=None,
        point_labels=None,
        boxes=predictor.transform.apply_boxes_torch(boxes, (height, width)),
        multimask_output=False,
    )
    assert torch.equal(ours, theirs[:, 0].float())


def test_no_boxes_gives_no_masks_and_no_encoder_run(tiny_segmenter, synthetic_image):
    with ForwardCounter(tiny_segmenter.sam.image_encoder) as encoder:
        masks = tiny_segmenter.segment(synthetic_image, torch.zeros(0, 4))
    assert masks.shape == (0, 72, 112)
    assert encoder.calls == 0


def test_sam_hq_extra_tensors_are_ignored(tmp_path):
    state = tiny_sam_state_dict()
    state["mask_decoder.hf_token.weight"] = torch.zeros(1, 32)
    path = tmp_path / "sam_hq_tiny.pth"
    torch.save(state, path)
    assert load_sam(path).config == TINY_SAM


def test_missing_checkpoint_names_folder_files_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_sam(tmp_path / "sam_vit_b_01ec64.pth")
    message = str(error.value)
    assert "models/sams" in message
    assert "sam_vit_b_01ec64.pth" in message and "sam_vit_h_4b8939.pth" in message
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in message


def test_a_grounding_dino_file_is_not_taken_for_sam(tiny_grounding_dino_files):
    checkpoint, _ = tiny_grounding_dino_files
    with pytest.raises(ValueError) as error:
        load_sam(checkpoint)
    message = str(error.value)
    assert "is not a SAM checkpoint" in message
    assert "GroundingDINO checkpoint (it belongs in models/grounding-dino)" in message
    assert "sam_vit_b_01ec64.pth" in message


def test_a_fixed_model_type_must_match_the_file(tiny_sam_file):
    with pytest.raises(ValueError, match="is a SAM custom checkpoint .*not vit_b: choose model type 'auto'"):
        load_sam(tiny_sam_file, model_type="vit_b")
    with pytest.raises(ValueError, match="unknown SAM model type 'vit_x'"):
        load_sam(tiny_sam_file, model_type="vit_x")


def test_an_incomplete_checkpoint_is_refused(tmp_path):
    state = tiny_sam_state_dict()
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="incomplete SAM checkpoint.*iou_token"):
        load_sam(path)
