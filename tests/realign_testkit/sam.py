"""Random-weight SAM checkpoints in segment-anything's format (a plain state dict in a ``.pth``).

:data:`TINY_SAM` is the ViT-B layout shrunk (width 32, two blocks of which the second attends
globally, 128 px input, 32-wide prompt/decoder): segment-anything's ``_build_sam`` fixes the input
size and prompt width, so the pack builds ``Sam`` from its modules with the config read back from
the tensor shapes, and ``load_sam(path)`` (``model_type="auto"``) loads this file as it loads the
originals.
"""

from __future__ import annotations

from pathlib import Path

import torch

from realign_diff.dense_captioner.sam import SamConfig, build_sam

TINY_SAM = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=128,
    patch_size=16,
    window_size=4,
    prompt_embed_dim=32,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
)


def tiny_sam_state_dict(seed: int = 0, config: SamConfig = TINY_SAM) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    sam = build_sam(config)
    with torch.no_grad():  # the relative position tables start at zero: give them values too
        for name, param in sam.named_parameters():
            if "rel_pos" in name:
                param.normal_(0, 0.02)
    return {k: v.detach().clone() for k, v in sam.state_dict().items()}


def write_tiny_sam(folder: str | Path, seed: int = 0, name: str = "sam_tiny.pth", config: SamConfig = TINY_SAM) -> Path:
    """A random SAM checkpoint, saved as segment-anything's ``sam_vit_*.pth`` files are."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_sam_state_dict(seed, config), path)
    return path


class ForwardCounter:
    """Counts forward calls of a module through a forward hook (the module runs unchanged).

    ``with ForwardCounter(segmenter.sam.image_encoder) as encoder: ...; assert encoder.calls == 1``
    """

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> ForwardCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
