"""SAM (segment-anything): one mask per box, the image embedding computed once per image.

Checkpoints: the original ``sam_vit_b_01ec64.pth`` / ``sam_vit_l_0b3195.pth`` /
``sam_vit_h_4b8939.pth`` (a plain state dict). The architecture is read from the tensor shapes
(ViT width, depth, which blocks attend globally, image size, decoder sizes), so ``model_type="auto"``
needs no file-name convention and any variant of the same layout loads. The network is
segment-anything's own ``Sam``; preprocessing and box prompting follow its ``SamPredictor``
(longest side resized to the encoder's input size, ImageNet normalization, zero padding), with
all boxes of an image decoded in batches against one image embedding, ``multimask_output=False``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_file import read_state_dict
from ..compat.torchvision_ops import ensure_torchvision_importable
from .grounded_sam_io import SAM_FILES, SAM_SOURCE, missing_file_message, wrong_checkpoint_message


@dataclass(frozen=True)
class SamConfig:
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    encoder_mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256


# segment_anything.build_sam's three models
SAM_CONFIGS = {
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
}


def model_type_of(config: SamConfig) -> str:
    """``vit_b`` / ``vit_l`` / ``vit_h``, or ``custom`` for any other shape."""
    for name, known in SAM_CONFIGS.items():
        if known == config:
            return name
    return "custom"


PIXEL_MEAN = [123.675, 116.28, 103.53]  # segment-anything's, on 0-255 pixels
PIXEL_STD = [58.395, 57.12, 57.375]


def build_sam(config: SamConfig) -> nn.Module:
    """segment-anything's ``Sam`` for ``config`` (what ``build_sam_vit_*`` builds for the three originals)."""
    ensure_torchvision_importable()  # segment_anything imports torchvision
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = config.image_size // config.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.encoder_mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(config.encoder_global_attn_indexes),
            window_size=config.window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )
    return sam.eval()


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.match(k))})


def infer_sam_config(state: Mapping[str, torch.Tensor]) -> SamConfig:
    """The SAM architecture of a state dict, from its tensor shapes."""
    try:
        patch = state["image_encoder.patch_embed.proj.weight"]  # [width, 3, p, p]
        width, patch_size = patch.shape[0], patch.shape[-1]
        grid = state["image_encoder.pos_embed"].shape[1]
        blocks = _indices(state, r"image_encoder\.blocks\.(\d+)\.")
        global_blocks, window = [], 14
        for i in blocks:
            rel = state[f"image_encoder.blocks.{i}.attn.rel_pos_h"]  # [2 * size - 1, head_dim]
            if rel.shape[0] == 2 * grid - 1:
                global_blocks.append(i)
            else:
                window = (rel.shape[0] + 1) // 2
            head_dim = rel.shape[1]
        prompt_dim = state["prompt_encoder.no_mask_embed.weight"].shape[1]
        return SamConfig(
            encoder_embed_dim=width,
            encoder_depth=len(blocks),
            encoder_num_heads=width // head_dim,
            encoder_global_attn_indexes=tuple(global_blocks),
            image_size=grid * patch_size,
            patch_size=patch_size,
            window_size=window,
            encoder_mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / width,
            prompt_embed_dim=prompt_dim,
            mask_in_chans=state["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            decoder_depth=len(_indices(state, r"mask_decoder\.transformer\.layers\.(\d+)\.")),
            decoder_mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            num_multimask_outputs=state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            iou_head_depth=len(_indices(state, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.")),
            iou_head_hidden_dim=state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        )
    except (KeyError, IndexError, UnboundLocalError) as error:
        raise ValueError(f"not a SAM (ViT) checkpoint: missing or odd tensor {error}") from error


def load_sam(
    checkpoint_path: str | os.PathLike,
    model_type: str = "auto",
    device: torch.device | str | None = None,
) -> SamSegmenter:
    """Load an original SAM checkpoint. ``model_type``: ``auto``, ``vit_b``, ``vit_l`` or ``vit_h``."""
    checkpoint_path = os.fspath(checkpoint_path)
    if not os.path.isfile(checkpoint_path):
        files = ", ".join(f for f, _, _ in SAM_FILES.values())
        raise FileNotFoundError(
            missing_file_message(
                SAM_SOURCE.what, checkpoint_path, SAM_SOURCE.folder, f"one of {files}", SAM_SOURCE.source
            )
        )
    if model_type not in ("auto", *SAM_CONFIGS):
        raise ValueError(f"unknown SAM model type {model_type!r}: use 'auto', 'vit_b', 'vit_l' or 'vit_h'")
    state = read_state_dict(checkpoint_path, SAM_SOURCE)
    if not all(any(k.startswith(p) for k in state) for p in ("image_encoder.", "prompt_encoder.", "mask_decoder.")):
        files = f"{SAM_FILES['vit_b'][0]}, {SAM_FILES['vit_l'][0]} or {SAM_FILES['vit_h'][0]}"
        raise ValueError(wrong_checkpoint_message(checkpoint_path, state, SAM_SOURCE, files))
    config = infer_sam_config(state)
    detected = model_type_of(config)
    if model_type != "auto" and detected != model_type:
        choice = f"'{detected}' or 'auto'" if detected != "custom" else "'auto'"
        raise ValueError(
            f"{os.path.basename(checkpoint_path)} is a SAM {detected} checkpoint "
            f"(ViT width {config.encoder_embed_dim}, {config.encoder_depth} blocks), not {model_type}: "
            f"choose model type {choice}"
        )
    with torch.device("meta"):  # no random init to overwrite (seconds and a second copy of vit_h's 2.4 GB)
        sam = build_sam(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = sam.load_state_dict(state, strict=False, assign=True)
    if missing:
        raise ValueError(f"incomplete SAM checkpoint: {len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
    # the only tensors checkpoints do not hold (non-persistent buffers): set as Sam's constructor does
    sam.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
    sam.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)
    unset = [name for name, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if unset:
        raise ValueError(f"SAM tensors not set by the checkpoint: {', '.join(unset[:3])} (a bug, please report)")
    # unexpected keys (e.g. SAM-HQ's extra decoder) are ignored: SAM-HQ keeps SAM's own weights intact
    del state
    sam.requires_grad_(False)
    return SamSegmenter(sam, config).to(device or "cpu")


class SamSegmenter(nn.Module):
    """A loaded SAM; an ``nn.Module`` so ComfyUI can offload it."""

    def __init__(self, sam: nn.Module, config: SamConfig, box_batch: int = 16):
        super().__init__()
        self.sam = sam
        self.config = config
        self.model_type = model_type_of(config)
        self.box_batch = box_batch  # boxes decoded together (memory: ~4 MB each at 1024 px)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """SAM's ``ResizeLongestSide``: the longest side becomes the encoder's input size."""
        scale = self.sam.image_encoder.img_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def preprocess(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``[H, W, 3]`` in [0, 1] -> (normalized, padded ``[1, 3, S, S]``, resized (h, w))."""
        if image.dim() == 4 and image.shape[0] == 1:
            image = image[0]
        if image.dim() != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(f"expected an image [H, W, 3] with values in [0, 1], got shape {tuple(image.shape)}")
        device = self.sam.pixel_mean.device
        pixels = image[..., :3].permute(2, 0, 1)[None].float().to(device) * 255.0
        size = self.input_size(*pixels.shape[-2:])
        if size != tuple(pixels.shape[-2:]):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.sam.preprocess(pixels.clamp(0, 255)), size

    @torch.no_grad()
    def embed(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The image embedding ``[1, C, g, g]`` (the expensive part) and the resized input size."""
        pixels, size = self.preprocess(image)
        return self.sam.image_encoder(pixels), size

    @torch.no_grad()
    def masks_from_embedding(
        self, embedding: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int], boxes: torch.Tensor
    ) -> torch.Tensor:
        """Boxes ``[N, 4]`` xyxy in original pixels -> masks ``[N, H, W]`` float32 in {0, 1}."""
        height, width = original_size
        out = torch.zeros((boxes.shape[0], height, width), dtype=torch.float32)
        if boxes.shape[0] == 0:
            return out
        device = embedding.device
        scale = torch.tensor(
            [input_size[1] / width, input_size[0] / height, input_size[1] / width, input_size[0] / height],
            device=device,
        )
        prompts = boxes.to(device=device, dtype=torch.float32) * scale
        dense_pe = self.sam.prompt_encoder.get_dense_pe()
        for start in range(0, prompts.shape[0], self.box_batch):
            chunk = prompts[start : start + self.box_batch]
            sparse, dense = self.sam.prompt_encoder(points=None, boxes=chunk, masks=None)
            low_res, _ = self.sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            masks = self.sam.postprocess_masks(low_res, input_size, original_size)
            out[start : start + chunk.shape[0]] = (masks[:, 0] > self.sam.mask_threshold).float().cpu()
        return out

    def segment(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Masks ``[N, H, W]`` (float32 in {0, 1}) for ``boxes`` ``[N, 4]`` xyxy pixels of ``image`` ``[H, W, 3]``.

        The image is encoded once, whatever the number of boxes.
        """
        height, width = (image[0] if image.dim() == 4 else image).shape[:2]
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if boxes.shape[0] == 0:
            return torch.zeros((0, height, width), dtype=torch.float32)
        embedding, size = self.embed(image)
        return self.masks_from_embedding(embedding, size, (height, width), boxes)

    def describe(self) -> dict:
        return {"model_type": self.model_type, **asdict(self.config)}
