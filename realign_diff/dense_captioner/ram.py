"""Recognize Anything (RAM and RAM++) image tagging, inference only, on the official checkpoints.

Our own implementation of the tagging path of https://github.com/xinyu1205/recognize-anything
(``ram/models/ram.py``, ``ram_plus.py``), which pins timm 0.4.12 and breaks on transformers 5:

    image [B,3,S,S] -> visual_encoder (Swin) -> image_proj -> image tokens [B, 1+L, 512]
    RAM:   label queries = relu(wordvec_proj(label_embed))                           label_embed [K, 512]
    RAM++: label_embed holds D=51 LLM tag-description embeddings per class [K·D, 512]; per image they are
           averaged with softmax(exp(reweight_scale) · cos(image token 0, description)) weights -> [B, K, 512],
           then relu(wordvec_proj(.))
    tagging_head (2 cross-attention-only BERT layers) -> fc -> logits [B, K] -> sigmoid > per-class threshold

Module names equal the official ones, so the checkpoint's state dict (under ``"model"``) loads as it is.
Keys of parts the official tagging path does not use are ignored, each for a stated reason
(``IGNORED_KEYS``); anything else unexpected is listed (a warning, or an error with ``strict=True``).
Tag names and per-class thresholds come from the official text files placed beside the checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoint_file
from .grounded_sam_io import missing_file_message, wrong_checkpoint_message
from .imagenet import imagenet_normalize
from .ram_head import TaggingHead, TaggingHeadConfig, reweight_label_embeddings
from .scoring import normalize_tag
from .swin import SWIN_B_224, SWIN_B_384, SWIN_L_224, SWIN_L_384, SwinConfig, SwinTransformer

log = logging.getLogger("RealignDiff")

TAG_LIST_FILE = "ram_tag_list.txt"
THRESHOLDS_FILE = "ram_tag_list_threshold.txt"
MODEL_FOLDER = "ram"  # ComfyUI's models/ram
TAG_LIST_URL = "https://github.com/xinyu1205/recognize-anything/raw/main/ram/data/ram_tag_list.txt"
THRESHOLDS_URL = "https://github.com/xinyu1205/recognize-anything/raw/main/ram/data/ram_tag_list_threshold.txt"
RAM_URL = "https://huggingface.co/xinyu1205/recognize_anything_model/blob/main/ram_swin_large_14m.pth"
RAM_PLUS_URL = "https://huggingface.co/xinyu1205/recognize-anything-plus-model/blob/main/ram_plus_swin_large_14m.pth"
RAM_FILES = "ram_plus_swin_large_14m.pth (RAM++) or ram_swin_large_14m.pth (RAM)"
RAM_SOURCE = checkpoint_file.ModelSource(
    "RAM / RAM++ checkpoint", MODEL_FOLDER, f"{RAM_PLUS_URL} (RAM++) or {RAM_URL} (RAM)"
)

DEFAULT_THRESHOLD = 0.68  # the official RAM / RAM++ default class threshold (before the per-class file)
REWEIGHT_SCALE_INIT = math.log(1 / 0.07)  # RAM++ reweight_scale as the official model initializes it
NUM_CLASSES = 4585  # the official tag list
DESCRIPTIONS_PER_CLASS = 51  # RAM++ tag descriptions per class in the official checkpoint
HEAD_NUM_HEADS = 4  # q2l_config.json; not recoverable from weights

VARIANTS = ("ram", "ram_plus")
_VARIANT_ALIASES = {
    "ram": "ram",
    "ram_plus": "ram_plus",
    "ram++": "ram_plus",
    "ramplus": "ram_plus",
    "ram-plus": "ram_plus",
}

# Keys of the official checkpoints that the tagging path does not use, and why.
IGNORED_KEYS: tuple[tuple[str, str], ...] = (
    (r"^tag_encoder\.", "RAM: Tag2Text image-tag interaction encoder (captioning only)"),
    (r"^text_decoder\.", "RAM: image-tag-text caption decoder (captioning only)"),
    (r"^tagging_head\.embeddings\.", "tagging head word embeddings, deleted by the official model"),
    (r"^tagging_head\.encoder\.layer\.\d+\.attention\.", "tagging head self-attention, deleted by the official model"),
    (r"^visual_encoder\..*\.relative_position_index$", "Swin derived buffer, recomputed"),
    (r"^visual_encoder\..*\.attn_mask$", "Swin derived buffer (shifted-window mask), recomputed"),
)
_IGNORED = tuple((re.compile(pattern), reason) for pattern, reason in IGNORED_KEYS)
OPTIONAL_KEYS = {"reweight_scale": REWEIGHT_SCALE_INIT}  # RAM++: kept at the official init when absent


class Tag(NamedTuple):
    name: str
    score: float


@dataclass(frozen=True)
class RamConfig:
    variant: str = "ram"  # "ram" or "ram_plus"
    num_classes: int = NUM_CLASSES
    descriptions_per_class: int = 1  # RAM++: 51
    swin: SwinConfig = SWIN_L_384
    head: TaggingHeadConfig = field(default_factory=TaggingHeadConfig)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown RAM variant {self.variant!r}: expected one of {VARIANTS}")
        if self.variant == "ram" and self.descriptions_per_class != 1:
            raise ValueError("RAM has one label embedding per class")

    @property
    def image_size(self) -> int:
        return self.swin.image_size

    @classmethod
    def official(cls, variant: str = "ram", backbone: str = "swin_l", image_size: int = 384) -> RamConfig:
        """The released architecture (Swin-L at 384 for both checkpoints; Swin-B and 224 as in the official configs)."""
        variant = normalize_variant(variant)
        swin = {
            ("swin_l", 384): SWIN_L_384,
            ("swin_l", 224): SWIN_L_224,
            ("swin_b", 384): SWIN_B_384,
            ("swin_b", 224): SWIN_B_224,
        }[(backbone, image_size)]
        per_class = DESCRIPTIONS_PER_CLASS if variant == "ram_plus" else 1
        return cls(variant, NUM_CLASSES, per_class, swin, TaggingHeadConfig())


def normalize_variant(variant: str) -> str:
    key = str(variant).strip().lower()
    if key not in _VARIANT_ALIASES:
        raise ValueError(f"unknown RAM variant {variant!r}: expected 'ram', 'ram_plus' or 'auto'")
    return _VARIANT_ALIASES[key]


class RamTagger(nn.Module):
    """RAM / RAM++ tagging network plus its tag names and per-class thresholds.

    ``tag(images)`` takes ComfyUI IMAGE tensors ([B, H, W, 3] floats in [0, 1]) and returns, per image, the
    tags whose probability exceeds their threshold, best first.
    """

    def __init__(self, config: RamConfig, tag_names: list[str], class_thresholds: torch.Tensor | None = None):
        super().__init__()
        if len(tag_names) != config.num_classes:
            raise ValueError(f"{len(tag_names)} tag names for a model with {config.num_classes} classes")
        self.config = config
        head = config.head
        self.visual_encoder = SwinTransformer(config.swin)
        self.image_proj = nn.Linear(config.swin.num_features, head.encoder_width)
        self.label_embed = nn.Parameter(
            torch.zeros(config.num_classes * config.descriptions_per_class, head.encoder_width)
        )
        if head.hidden_size != head.encoder_width:
            self.wordvec_proj = nn.Linear(head.encoder_width, head.hidden_size)
        else:
            self.wordvec_proj = nn.Identity()  # as official: no weights when widths agree
        self.tagging_head = TaggingHead(head)
        self.fc = nn.Linear(head.hidden_size, 1)
        if config.variant == "ram_plus":
            self.reweight_scale = nn.Parameter(torch.full((), REWEIGHT_SCALE_INIT))
        self.tag_names = list(tag_names)
        self._index = {normalize_tag(name): i for i, name in enumerate(self.tag_names)}
        if class_thresholds is None:
            class_thresholds = torch.full((config.num_classes,), DEFAULT_THRESHOLD, device="cpu")
        class_thresholds = torch.as_tensor(class_thresholds, dtype=torch.float32, device="cpu").flatten()
        if class_thresholds.numel() != config.num_classes:
            raise ValueError(f"{class_thresholds.numel()} thresholds for {config.num_classes} classes")
        self.class_threshold = class_thresholds  # plain tensor: not model state, never moved
        self.load_report: LoadReport | None = None

    @property
    def variant(self) -> str:
        return self.config.variant

    @property
    def image_size(self) -> int:
        return self.config.image_size

    # ---- network ------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """ComfyUI IMAGE [B, H, W, C] in [0, 1] -> normalized [B, 3, S, S] on the model's device and dtype.

        The official transform is PIL ``Resize((S, S))`` (bilinear, antialiased when shrinking, aspect ratio not
        kept), ``ToTensor`` and ImageNet normalization; this is the same in torch.
        """
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[-1] < 3:
            raise ValueError(f"expected images [B, H, W, 3], got shape {tuple(images.shape)}")
        weight = self.image_proj.weight
        x = images[..., :3].to(device=weight.device, dtype=torch.float32).permute(0, 3, 1, 2)
        size = self.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return imagenet_normalize(x.clamp(0, 1)).to(weight.dtype)

    def label_queries(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """[B, K, hidden] label queries for the tagging head."""
        batch = image_tokens.shape[0]
        if self.config.variant == "ram_plus":
            labels = reweight_label_embeddings(
                self.label_embed, image_tokens[:, 0], self.reweight_scale, self.config.num_classes
            )
            return F.relu(self.wordvec_proj(labels))
        return (
            F.relu(self.wordvec_proj(self.label_embed)).unsqueeze(0).expand(batch, -1, -1)
        )  # the same for every image

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalized pixels [B, 3, S, S] -> tag logits [B, K]."""
        image_tokens = self.image_proj(self.visual_encoder(pixels))
        hidden = self.tagging_head(self.label_queries(image_tokens), image_tokens)
        return self.fc(hidden).squeeze(-1)

    @torch.inference_mode()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities [B, K] (float32, CPU) for ComfyUI IMAGE tensors."""
        return torch.sigmoid(self(self.preprocess(images)).float()).cpu()

    # ---- thresholds and tags ------------------------------------------------------------------------
    def tag_index(self, name: str) -> int:
        index = self._index.get(normalize_tag(name))
        if index is None:
            raise KeyError(name)
        return index

    def _indices(self, names: Iterable[str], what: str) -> list[int]:
        indices, unknown = [], []
        for name in names:
            try:
                indices.append(self.tag_index(name))
            except KeyError:
                unknown.append(name)
        if unknown:
            raise ValueError(
                f"{what}: {', '.join(map(repr, unknown))} not in the RAM tag list ({len(self.tag_names)} tags)"
            )
        return indices

    def thresholds(
        self,
        threshold: float | None = None,
        threshold_overrides: Mapping[str, float] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> torch.Tensor:
        """Effective per-class thresholds [K]: the class thresholds, or one ``threshold`` for all classes, then
        ``threshold_overrides`` per tag; excluded tags get +inf (never returned)."""
        if threshold is None:
            result = self.class_threshold.clone()
        else:
            result = torch.full_like(self.class_threshold, float(threshold))
        if threshold_overrides:
            names = list(threshold_overrides)
            for name, index in zip(names, self._indices(names, "threshold_overrides")):
                result[index] = float(threshold_overrides[name])
        if exclude is not None:
            if isinstance(exclude, str):
                exclude = [exclude]
            result[self._indices(list(exclude), "exclude")] = math.inf
        return result

    def select(self, scores: torch.Tensor, limits: torch.Tensor, top_k: int | None = None) -> list[list[Tag]]:
        """Tags of per-class probabilities [B, K] against thresholds [K] (``thresholds()``): score > threshold
        (strict, as official), highest score first, at most top_k (None or 0: no cap)."""
        results = []
        for row in scores.float().cpu():
            keep = torch.nonzero(row > limits).flatten()
            order = keep[torch.argsort(row[keep], descending=True, stable=True)]
            if top_k is not None and top_k > 0:
                order = order[:top_k]
            results.append([Tag(self.tag_names[i], float(row[i])) for i in order.tolist()])
        return results

    def tag(
        self,
        images: torch.Tensor,
        threshold: float | None = None,
        threshold_overrides: Mapping[str, float] | None = None,
        top_k: int | None = None,
        exclude: Iterable[str] | None = None,
    ) -> list[list[Tag]]:
        """Tags per image ([B, H, W, 3] in [0, 1]): a list of ``Tag(name, score)`` per image, highest score first.

        threshold: one threshold for every class instead of the per-class ones; threshold_overrides: {tag: t};
        top_k: at most this many tags per image (None or 0: no cap); exclude: tags never returned. Unknown tag
        names in threshold_overrides / exclude raise ValueError (before the network runs).
        """
        limits = self.thresholds(threshold, threshold_overrides, exclude)
        return self.select(self.scores(images), limits, top_k)


# ---- files ------------------------------------------------------------------------------------------
def _missing_file(what: str, path: str, source: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"RAM {what} not found: {path}. Put {os.path.basename(path)} in ComfyUI's models/{MODEL_FOLDER} folder, "
        f"beside the RAM checkpoint. Get it from: {source}"
    )


def read_tag_list(path: str) -> list[str]:
    """One tag per line (the official ``ram_tag_list.txt``)."""
    if not os.path.isfile(path):
        raise _missing_file("tag list", path, TAG_LIST_URL)
    with open(path, encoding="utf-8") as handle:
        names = handle.read().splitlines()
    while names and not names[-1].strip():
        names.pop()
    if not names:
        raise ValueError(f"RAM tag list {path} is empty")
    return names


def read_thresholds(path: str, count: int | None = None) -> torch.Tensor:
    """One float per line (the official ``ram_tag_list_threshold.txt``), one per tag, in tag-list order."""
    if not os.path.isfile(path):
        raise _missing_file("thresholds file", path, THRESHOLDS_URL)
    values = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                values.append(float(line))
            except ValueError:
                raise ValueError(
                    f"RAM thresholds file {path}, line {number}: {line.strip()!r} is not a number"
                ) from None
    if count is not None and len(values) != count:
        raise ValueError(f"RAM thresholds file {path} has {len(values)} values for {count} tags (one per tag expected)")
    return torch.tensor(values, dtype=torch.float32)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict of a RAM checkpoint: ``.pth`` (under ``"model"``) or ``.safetensors``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(missing_file_message(RAM_SOURCE.what, path, MODEL_FOLDER, RAM_FILES, RAM_SOURCE.source))
    state = checkpoint_file.read_state_dict(path, RAM_SOURCE)
    if not any(key.startswith("label_embed") for key in state):
        raise ValueError(wrong_checkpoint_message(path, state, RAM_SOURCE, RAM_FILES))
    return state


# ---- state dict -> config ---------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What loading did with each key of the checkpoint."""

    variant: str
    config: RamConfig
    loaded: int = 0
    ignored: dict[str, int] = field(default_factory=dict)  # reason -> number of keys
    defaulted: list[str] = field(default_factory=list)  # optional keys absent, kept at the official init
    unexpected: list[str] = field(default_factory=list)


def normalize_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a DDP ``module.`` prefix; rename ``vision_multi`` -> ``tagging_head`` as the official loader does."""
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        out[key.replace("vision_multi", "tagging_head")] = value
    return out


def ignored_reason(key: str) -> str | None:
    for pattern, reason in _IGNORED:
        if pattern.search(key):
            return reason
    return None


def _count(keys: Iterable[str], pattern: str) -> int:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := regex.match(k))}
    return max(found) + 1 if found else 0


def config_from_state_dict(state: Mapping[str, torch.Tensor], num_classes: int, variant: str = "auto") -> RamConfig:
    """The architecture of a (normalized) RAM / RAM++ state dict: backbone widths, depths, heads, window and input
    size from the Swin weights; head widths from the tagging head. RAM vs RAM++: RAM checkpoints carry the Tag2Text
    captioning parts (``tag_encoder``, ``text_decoder``); RAM++ ones have ``reweight_scale`` and/or several label
    embeddings (tag descriptions) per class."""
    if "label_embed" not in state:
        if "label_embed.weight" in state:
            raise ValueError(
                "this is a Tag2Text checkpoint (label_embed.weight); a RAM or RAM++ checkpoint is expected"
            )
        raise ValueError("not a RAM / RAM++ checkpoint: no 'label_embed' in its state dict")
    try:
        patch = state["visual_encoder.patch_embed.proj.weight"]
        embed_dim, in_chans, patch_size = patch.shape[0], patch.shape[1], patch.shape[2]
        stages = _count(state, r"visual_encoder\.layers\.(\d+)\.")
        depths = tuple(_count(state, rf"visual_encoder\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages))
        tables = [state[f"visual_encoder.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(stages)]
        heads = tuple(t.shape[1] for t in tables)
        window = (math.isqrt(tables[0].shape[0]) + 1) // 2
        mlp_ratio = state["visual_encoder.layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
        encoder_width = state["image_proj.weight"].shape[0]
        head_layers = _count(state, r"tagging_head\.encoder\.layer\.(\d+)\.")
        hidden = state["tagging_head.encoder.layer.0.crossattention.self.query.weight"].shape[0]
        intermediate = state["tagging_head.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"not a RAM / RAM++ checkpoint: {error.args[0]} is missing") from None
    if not stages or (2 * window - 1) ** 2 != tables[0].shape[0]:
        raise ValueError("not a RAM / RAM++ checkpoint: unreadable Swin layout")
    image_size = _image_size(state, window, patch_size)

    rows = state["label_embed"].shape[0]
    names = {"ram": "RAM", "ram_plus": "RAM++"}
    if any(k.startswith(("tag_encoder.", "text_decoder.")) for k in state):
        detected = "ram"  # only RAM carries the Tag2Text captioning parts
    elif "reweight_scale" in state or rows != num_classes:
        detected = "ram_plus"
    else:
        detected = "ram"
    if variant != "auto":
        variant = normalize_variant(variant)
        if variant != detected:
            raise ValueError(f"expected a {names[variant]} checkpoint, but this one is {names[detected]}")
    per_class = rows // num_classes if detected == "ram_plus" else 1
    if rows != num_classes * per_class or per_class < 1:
        raise ValueError(
            f"the tag list has {num_classes} tags but this {names[detected]} checkpoint has {rows} label embeddings: "
            f"use the official {TAG_LIST_FILE} that belongs to it"
        )
    swin = SwinConfig(image_size, patch_size, in_chans, embed_dim, depths, heads, window, mlp_ratio)
    head = TaggingHeadConfig(hidden, head_layers, HEAD_NUM_HEADS, intermediate, encoder_width)
    return RamConfig(detected, num_classes, per_class, swin, head)


def _image_size(state: Mapping[str, torch.Tensor], window: int, patch_size: int) -> int:
    """Input size: from the first shifted-window mask (official state dicts keep it) when present, else the
    official pairing of window and size (7 -> 224, 12 -> 384)."""
    mask = state.get("visual_encoder.layers.0.blocks.1.attn_mask")
    if mask is not None and mask.dim() == 3:
        per_side = math.isqrt(mask.shape[0])
        if per_side * per_side == mask.shape[0]:
            return per_side * window * patch_size
    official = {7: 224, 12: 384}
    if window not in official:
        raise ValueError(f"cannot tell the input size of a Swin with window {window} (no attn_mask in the checkpoint)")
    return official[window]


# ---- loader -----------------------------------------------------------------------------------------
def load_ram(
    checkpoint_path: str,
    tag_list_path: str | None = None,
    thresholds_path: str | None = None,
    variant: str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    strict: bool = False,
) -> RamTagger:
    """Load an official RAM (``ram_swin_large_14m.pth``) or RAM++ (``ram_plus_swin_large_14m.pth``) checkpoint.

    tag_list_path / thresholds_path default to ``ram_tag_list.txt`` / ``ram_tag_list_threshold.txt`` beside
    the checkpoint. A missing tag list is an error; a thresholds file that was named but is missing is an
    error; with no thresholds file beside the checkpoint every class gets the official default 0.68.
    variant: "auto" (from the keys), "ram" or "ram_plus". Unexpected keys (beyond ``IGNORED_KEYS``) are logged,
    or raise with strict=True; missing keys always raise. The result is in eval mode; its ``load_report``
    says what was loaded, ignored and defaulted.
    """
    checkpoint_path = os.fspath(checkpoint_path)
    folder = os.path.dirname(os.path.abspath(checkpoint_path))
    state = normalize_keys(read_state_dict(checkpoint_path))  # first: a wrong file is told before its tag list
    tag_names = read_tag_list(os.fspath(tag_list_path) if tag_list_path else os.path.join(folder, TAG_LIST_FILE))
    if thresholds_path is not None:
        thresholds = read_thresholds(os.fspath(thresholds_path), len(tag_names))
    elif os.path.isfile(os.path.join(folder, THRESHOLDS_FILE)):
        thresholds = read_thresholds(os.path.join(folder, THRESHOLDS_FILE), len(tag_names))
    else:
        log.warning(
            "[RealignDiff] no %s beside %s: every RAM tag uses the official default threshold %.2f. Get the per-tag "
            "thresholds from %s",
            THRESHOLDS_FILE,
            checkpoint_path,
            DEFAULT_THRESHOLD,
            THRESHOLDS_URL,
        )
        thresholds = None

    config = config_from_state_dict(state, len(tag_names), variant)
    with torch.device("meta"):
        tagger = RamTagger(config, tag_names, thresholds)
    report = _match_keys(tagger, state, config)
    if report.unexpected:
        message = f"RAM checkpoint {os.path.basename(checkpoint_path)}: unexpected keys {report.unexpected[:20]}" + (
            f" and {len(report.unexpected) - 20} more" if len(report.unexpected) > 20 else ""
        )
        if strict:
            raise ValueError(message)
        log.warning("[RealignDiff] %s (ignored)", message)

    target = torch.device(device) if device is not None else torch.device("cpu")
    tagger = tagger.to(dtype=dtype or torch.float32).to_empty(device=target)
    used = {k: v for k, v in state.items() if k in _expected(tagger)}
    for key in report.defaulted:
        used[key] = torch.tensor(OPTIONAL_KEYS[key])
    try:
        tagger.load_state_dict(used, strict=True)
    except RuntimeError as error:
        raise ValueError(f"RAM checkpoint {checkpoint_path} does not match the RAM architecture: {error}") from None
    tagger.load_report = report
    return tagger.eval().requires_grad_(False)


def _expected(tagger: RamTagger) -> set[str]:
    return set(tagger.state_dict().keys())


def _match_keys(tagger: RamTagger, state: Mapping[str, torch.Tensor], config: RamConfig) -> LoadReport:
    expected = _expected(tagger)
    report = LoadReport(config.variant, config)
    for key in state:
        if key in expected:
            report.loaded += 1
            continue
        reason = ignored_reason(key)
        if reason is None:
            report.unexpected.append(key)
        else:
            report.ignored[reason] = report.ignored.get(reason, 0) + 1
    missing = sorted(expected - set(state))
    report.defaulted = [k for k in missing if k in OPTIONAL_KEYS]
    if report.defaulted:
        log.info("[RealignDiff] RAM checkpoint has no %s: using the official initial value", report.defaulted)
    missing = [k for k in missing if k not in OPTIONAL_KEYS]
    if missing:
        raise ValueError(
            f"the RAM checkpoint lacks {len(missing)} weights of the {config.variant} tagging network, "
            f"e.g. {missing[:8]}"
        )
    return report
