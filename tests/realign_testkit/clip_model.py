"""A random-weight CLIP in the Hugging Face folder layout of ``openai/clip-vit-large-patch14`` (config.json,
model.safetensors, preprocessor_config.json, the CLIP BPE tokenizer files), tiny, offline.

Same structure as ViT-L/14 (patch 14, CLIP's image statistics, the real 49,408-token vocabulary rebuilt by
``realign_diff.clip_tokenizer``, 77 text positions) at hidden size 32, two layers, 56 px images. Weights drawn
by ``spread_init`` so scores depend on the image and the text.
"""

from __future__ import annotations

from pathlib import Path

import torch

from realign_diff.compat.torchvision_ops import ensure_torchvision_importable

IMAGE_SIZE = 56  # 4 x 4 patches of 14 px


def write_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    ensure_torchvision_importable()
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from realign_diff.clip_tokenizer import load_clip_tokenizer

    from .blip2 import spread_init

    torch.manual_seed(seed)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(tower, max_position_embeddings=77),
        vision_config=dict(tower, image_size=IMAGE_SIZE, patch_size=14),
        projection_dim=16,
    )
    model = spread_init(CLIPModel(config), seed)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=load_clip_tokenizer())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
