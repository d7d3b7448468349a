"""Tiny random-weight GroundingDINO and SAM files, written once per session and loaded by the real loaders."""

from __future__ import annotations

import pytest
import torch

from realign_testkit.grounding import TINY_GROUNDING_DINO, write_tiny_grounding_dino
from realign_testkit.sam import write_tiny_sam


@pytest.fixture(scope="session")
def tiny_grounding_dino_files(tmp_path_factory):
    """(checkpoint path, bert folder) of a random tiny GroundingDINO in the original format."""
    return write_tiny_grounding_dino(tmp_path_factory.mktemp("grounding-dino"))


@pytest.fixture(scope="session")
def tiny_detector(tiny_grounding_dino_files):
    from realign_diff.dense_captioner.grounding import load_grounding_dino

    checkpoint, bert_dir = tiny_grounding_dino_files
    return load_grounding_dino(checkpoint, bert_dir, config=TINY_GROUNDING_DINO, image_size=96)


@pytest.fixture(scope="session")
def tiny_sam_file(tmp_path_factory):
    return write_tiny_sam(tmp_path_factory.mktemp("sams"))


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_sam_file):
    from realign_diff.dense_captioner.sam import load_sam

    return load_sam(tiny_sam_file)


@pytest.fixture
def synthetic_image():
    """A non-square [H, W, 3] image in [0, 1]: a red square and a yellow bar on grey."""
    image = torch.full((72, 112, 3), 0.5)
    image[10:40, 12:42] = torch.tensor([0.9, 0.1, 0.1])
    image[50:60, 60:105] = torch.tensor([0.95, 0.9, 0.1])
    return image
