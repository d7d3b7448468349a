"""Fixtures of the trainer tests: one tiny SD-1-layout checkpoint per session and a prompts file."""

from __future__ import annotations

import pytest

from realign_testkit.blip2 import write_tiny_blip2
from realign_testkit.refl import write_prompts, write_tiny_sd1_checkpoint


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A random SD-1-layout checkpoint with tiny UNet / CLIP / VAE (read-only: copy it to modify it)."""
    return write_tiny_sd1_checkpoint(tmp_path_factory.mktemp("base") / "tiny_sd1.safetensors")


@pytest.fixture
def prompts_file(tmp_path):
    return write_prompts(tmp_path / "prompts.txt")


@pytest.fixture(scope="session")
def blip2_dirs(tmp_path_factory):
    """(captioner folder, text-encoder folder): tiny random BLIP-2 models in Hugging Face format."""
    return write_tiny_blip2(tmp_path_factory.mktemp("blip2"))
