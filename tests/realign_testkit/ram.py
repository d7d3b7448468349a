"""Write tiny RAM / RAM++ checkpoints in the official file format and key layout, with their tag files.

``write_tiny_ram(folder, variant="ram")`` writes into ``folder``:
- ``ram_tiny.pth`` (or ``ram_plus_tiny.pth``): ``{"model": state_dict, "optimizer": ..., "config": ..., "epoch": ...}``
  as the official training scripts save it. The state dict has every key the official model's state dict has
  for the tagging path (same names, same layout, a small architecture), plus what our loader must ignore:
  the Swin derived buffers (``relative_position_index``, ``attn_mask``), and, with ``training_keys=True``,
  representative keys of the training/captioning-only parts (RAM: ``tag_encoder.*`` with the tied copies of
  the tagging head, ``text_decoder.*``; both: ``tagging_head.embeddings.*`` and tagging-head self-attention).
- ``ram_tag_list.txt`` and ``ram_tag_list_threshold.txt`` beside it (one tag / one float per line).

Weights are a deterministic function of the key name (no RNG), so outputs are stable across torch versions;
the network is small: Swin 224 px, embed 16, depths (2, 2), window 7; tagging head hidden 32; 512-wide label
and image embeddings as in the official model.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch

from realign_diff.dense_captioner.ram import TAG_LIST_FILE, THRESHOLDS_FILE, RamConfig, RamTagger
from realign_diff.dense_captioner.ram_head import TaggingHeadConfig
from realign_diff.dense_captioner.swin import SwinConfig, _relative_position_index, _shift_mask

TINY_TAGS = (
    "book",
    "pen",
    "desk",
    "banana",
    "cat",
    "dog",
    "tree",
    "sky",
    "car",
    "person",
    "table",
    "3D CG rendering",
)
TINY_SWIN = SwinConfig(
    image_size=224, patch_size=4, in_chans=3, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=7
)
TINY_HEAD = TaggingHeadConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, encoder_width=512)
TINY_DESCRIPTIONS = 3  # RAM++ descriptions per class (51 in the real checkpoint)
TINY_THRESHOLD = 0.65  # the value most classes have in the official thresholds file


def tiny_config(variant: str = "ram", num_tags: int = len(TINY_TAGS)) -> RamConfig:
    return RamConfig(variant, num_tags, TINY_DESCRIPTIONS if variant == "ram_plus" else 1, TINY_SWIN, TINY_HEAD)


def _pattern(key: str, shape: torch.Size) -> torch.Tensor:
    """Deterministic values in [-1, 1) from the key name and the element index (a sine hash, no RNG)."""
    n = math.prod(shape) if len(shape) else 1
    offset = zlib.crc32(key.encode()) % 9973
    v = torch.sin(torch.arange(n, dtype=torch.float64) * 0.7548776662 + offset * 1.3247179572) * 43758.5453
    return (2 * (v - torch.floor(v)) - 1).float().reshape(shape)


def _value(key: str, shape: torch.Size) -> torch.Tensor:
    u = _pattern(key, shape)
    name = key.rsplit(".", 1)[-1]
    if "norm" in key.lower() and name == "weight":
        return 1 + 0.1 * u
    if key == "fc.bias":
        return torch.full(shape, 1.5)  # centres the scores so a few tags pass 0.65
    if name == "bias":
        return 0.05 * u
    if key == "reweight_scale":
        return torch.tensor(math.log(1 / 0.07) - 0.5)
    if key == "label_embed" or name == "relative_position_bias_table":
        return 0.5 * u
    if key == "fc.weight":
        return 0.8 * u
    fan_in = shape[1] if len(shape) >= 2 else shape[0]
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
    return u * math.sqrt(3.0 / fan_in)  # unit-variance activations


def tiny_state_dict(variant: str = "ram", num_tags: int = len(TINY_TAGS)) -> dict[str, torch.Tensor]:
    """The tagging-path state dict (official names) of the tiny architecture, deterministic values."""
    with torch.device("meta"):
        model = RamTagger(tiny_config(variant, num_tags), [f"t{i}" for i in range(num_tags)])
    return {key: _value(key, tensor.shape) for key, tensor in model.state_dict().items()}


def derived_buffers(swin: SwinConfig = TINY_SWIN) -> dict[str, torch.Tensor]:
    """The Swin buffers the official module registers (persistent, so they are in official state dicts)."""
    out = {}
    for stage, depth in enumerate(swin.depths):
        window = swin.stage_window(stage)
        for block in range(depth):
            prefix = f"visual_encoder.layers.{stage}.blocks.{block}."
            out[prefix + "attn.relative_position_index"] = _relative_position_index(window).clone()
            shift = swin.block_shift(stage, block)
            if shift:
                out[prefix + "attn_mask"] = _shift_mask(swin.stage_resolution(stage), window, shift).clone()
    return out


def training_only_keys(
    variant: str, state: dict[str, torch.Tensor], head: TaggingHeadConfig = TINY_HEAD
) -> dict[str, torch.Tensor]:
    """Representative keys of the parts the tagging path does not use, laid out as the official model names them."""
    h, vocab = head.hidden_size, 30
    out: dict[str, torch.Tensor] = {}

    def add(key, *shape):
        out[key] = _value(key, torch.Size(shape))

    # tagging head parts the official model deletes (present in checkpoints saved before the deletion)
    add("tagging_head.embeddings.word_embeddings.weight", vocab, h)
    add("tagging_head.embeddings.LayerNorm.weight", h)
    add("tagging_head.embeddings.LayerNorm.bias", h)
    for layer in range(head.num_layers):
        for part in ("query", "key", "value"):
            add(f"tagging_head.encoder.layer.{layer}.attention.self.{part}.weight", h, h)
            add(f"tagging_head.encoder.layer.{layer}.attention.self.{part}.bias", h)
        add(f"tagging_head.encoder.layer.{layer}.attention.output.dense.weight", h, h)
        add(f"tagging_head.encoder.layer.{layer}.attention.output.LayerNorm.weight", h)
    if variant == "ram":
        # Tag2Text parts: the interaction encoder (its lowest 2 layers are tied to the tagging head, so a state
        # dict holds copies of those weights under both names) and the caption decoder
        add("tag_encoder.embeddings.word_embeddings.weight", vocab, h)
        add("tag_encoder.embeddings.position_embeddings.weight", 40, h)
        out["tag_encoder.embeddings.position_ids"] = torch.arange(40).unsqueeze(0)
        for layer in range(head.num_layers + 1):
            add(f"tag_encoder.encoder.layer.{layer}.attention.self.query.weight", h, h)
        for key, value in state.items():
            if key.startswith("tagging_head.encoder.layer."):
                out["tag_encoder." + key[len("tagging_head.") :]] = value.clone()
        add("text_decoder.bert.embeddings.word_embeddings.weight", vocab, h)
        add("text_decoder.bert.encoder.layer.0.attention.self.query.weight", h, h)
        add("text_decoder.bert.encoder.layer.0.crossattention.self.key.weight", h, h)
        add("text_decoder.cls.predictions.bias", vocab)
        add("text_decoder.cls.predictions.transform.dense.weight", h, h)
        add("text_decoder.cls.predictions.decoder.weight", vocab, h)
    return out


def write_tiny_ram(
    folder: str | Path,
    variant: str = "ram",
    *,
    tags: Sequence[str] = TINY_TAGS,
    thresholds: Sequence[float] | None = None,
    present: Sequence[str] | None = None,
    training_keys: bool = True,
    legacy_names: bool = False,
    reweight_scale: bool = True,
    file_name: str | None = None,
    fmt: str = "pth",
    tag_files: bool = True,
    extra_keys: dict[str, torch.Tensor] | None = None,
    drop_keys: Sequence[str] = (),
) -> Path:
    """Write a tiny RAM ("ram") or RAM++ ("ram_plus") checkpoint and its tag files into ``folder``; returns the
    checkpoint path.

    thresholds: one per tag (default 0.65 each). present: tags that must always be returned (threshold 0.0)
    while every other tag gets 1.0 (never returned): a checkpoint whose tags are known in advance.
    training_keys: also write the training-only keys the loader must ignore. legacy_names: name the tagging
    head ``vision_multi`` (older checkpoints; the official loader renames it). reweight_scale=False leaves
    RAM++'s ``reweight_scale`` out (the loader then uses the official initial value). fmt: "pth" (official
    container) or "safetensors" (the bare state dict). tag_files=False writes the checkpoint only.
    extra_keys / drop_keys: corrupt the state dict on purpose (tests of the loader's checks).
    """
    if variant not in ("ram", "ram_plus"):
        raise ValueError(f"variant must be 'ram' or 'ram_plus', got {variant!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tags = list(tags)
    state = tiny_state_dict(variant, len(tags))
    if not reweight_scale:
        state.pop("reweight_scale", None)
    state.update(derived_buffers())
    if training_keys:
        state.update(training_only_keys(variant, state))
    if legacy_names:
        state = {k.replace("tagging_head", "vision_multi"): v for k, v in state.items()}
    state.update(extra_keys or {})
    for key in drop_keys:
        del state[key]

    stem = file_name or ("ram_plus_tiny" if variant == "ram_plus" else "ram_tiny")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = folder / (stem if stem.endswith(".safetensors") else stem + ".safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "pth":
        path = folder / (stem if stem.endswith(".pth") else stem + ".pth")
        config = {"vit": "swin_tiny", "image_size": TINY_SWIN.image_size, "class_num": len(tags)}
        torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "config": config, "epoch": 4}, path)
    else:
        raise ValueError(f"fmt must be 'pth' or 'safetensors', got {fmt!r}")

    if tag_files:
        if thresholds is None:
            if present is not None:
                wanted = {t.lower() for t in present}
                thresholds = [0.0 if t.lower() in wanted else 1.0 for t in tags]
            else:
                thresholds = [TINY_THRESHOLD] * len(tags)
        if len(thresholds) != len(tags):
            raise ValueError("one threshold per tag")
        (folder / TAG_LIST_FILE).write_text("\n".join(tags), encoding="utf-8")  # no final newline, as the official file
        (folder / THRESHOLDS_FILE).write_text("\n".join(f"{t:g}" for t in thresholds) + "\n", encoding="utf-8")
    return path


def synthetic_image(height: int = 240, width: int = 320, batch: int = 1) -> torch.Tensor:
    """A deterministic ComfyUI IMAGE [B, H, W, 3] in [0, 1]: colour gradients and a bright disc per image."""
    y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    images = []
    for b in range(batch):
        disc = (((x - 0.3 - 0.2 * b) ** 2 + (y - 0.5) ** 2) < 0.04).float()
        r = (0.5 + 0.5 * torch.sin(6 * x + b)).clamp(0, 1)
        g = y
        blue = (0.6 * disc + 0.4 * (1 - x * y)).clamp(0, 1)
        images.append(torch.stack([r, g, blue], dim=-1))
    return torch.stack(images)
