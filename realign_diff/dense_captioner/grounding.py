"""GroundingDINO: boxes for a list of phrases (tags), from the original checkpoints.

The model is groundingdino-py 0.4.0's own code, built from the two original configurations kept
here (``GroundingDINO_SwinT_OGC.py`` and ``GroundingDINO_SwinB_cfg.py``), with BERT
(``bert-base-uncased``) from a local folder and the transformers-5 compatibility of
:mod:`.grounding_compat`. Checkpoints: ``groundingdino_swint_ogc.pth`` / ``groundingdino_swinb_cogcoor.pth``
(``{"model": state_dict}``), which carry the fine-tuned BERT weights too: the folder only needs
``config.json`` and ``vocab.txt``.

Detection (:meth:`GroundingDinoDetector.detect`): the phrases become the caption
``"tag1 . tag2 . tag3 ."`` (split over several captions when they exceed the 256 text tokens the
model reads), each query box is given to the phrase whose tokens it scores highest, kept when that
score passes both thresholds, then non-maximum suppression runs per phrase.
"""

from __future__ import annotations

import logging
import os
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_file import read_state_dict
from ..compat.torchvision_ops import nms
from .grounded_sam_io import (
    BERT_SOURCE,
    GROUNDING_DINO_FILES,
    GROUNDING_DINO_SOURCE,
    missing_file_message,
    wrong_checkpoint_message,
)
from .grounding_compat import constructing_with, import_groundingdino
from .imagenet import imagenet_normalize

log = logging.getLogger(__name__)

MAX_TEXT_TOKENS = 256  # GroundingDINO's max_text_len, special tokens included
BOX_THRESHOLD = 0.3  # a box is kept when its best text-token score passes this (Grounded-SAM demo default)
TEXT_THRESHOLD = 0.25  # and given to a phrase only when that phrase's score passes this

# groundingdino/config/GroundingDINO_SwinT_OGC.py, as released with groundingdino_swint_ogc.pth
_ORIGINAL_ARGS = {
    "batch_size": 1,
    "modelname": "groundingdino",
    "backbone": "swin_T_224_1k",
    "position_embedding": "sine",
    "pe_temperatureH": 20,
    "pe_temperatureW": 20,
    "return_interm_indices": (1, 2, 3),
    "backbone_freeze_keywords": None,
    "enc_layers": 6,
    "dec_layers": 6,
    "pre_norm": False,
    "dim_feedforward": 2048,
    "hidden_dim": 256,
    "dropout": 0.0,
    "nheads": 8,
    "num_queries": 900,
    "query_dim": 4,
    "num_patterns": 0,
    "num_feature_levels": 4,
    "enc_n_points": 4,
    "dec_n_points": 4,
    "two_stage_type": "standard",
    "two_stage_bbox_embed_share": False,
    "two_stage_class_embed_share": False,
    "transformer_activation": "relu",
    "dec_pred_bbox_embed_share": True,
    "dn_box_noise_scale": 1.0,
    "dn_label_noise_ratio": 0.5,
    "dn_label_coef": 1.0,
    "dn_bbox_coef": 1.0,
    "embed_init_tgt": True,
    "dn_labelbook_size": 2000,
    "max_text_len": 256,
    "text_encoder_type": "bert-base-uncased",
    "use_text_enhancer": True,
    "use_fusion_layer": True,
    "use_checkpoint": True,
    "use_transformer_ckpt": True,
    "use_text_cross_attention": True,
    "text_dropout": 0.0,
    "fusion_dropout": 0.0,
    "fusion_droppath": 0.1,
    "sub_sentence_present": True,
}

# groundingdino's Swin table (backbone/swin_transformer.py), for the two released backbones
_SWIN = {
    "swin_T_224_1k": {
        "embed_dim": 96,
        "depths": (2, 2, 6, 2),
        "num_heads": (3, 6, 12, 24),
        "window_size": 7,
        "pretrain_img_size": 224,
    },
    "swin_B_384_22k": {
        "embed_dim": 128,
        "depths": (2, 2, 18, 2),
        "num_heads": (4, 8, 16, 32),
        "window_size": 12,
        "pretrain_img_size": 384,
    },
}


@dataclass(frozen=True)
class GroundingDinoConfig:
    """A GroundingDINO architecture: the original config file's variables plus its Swin backbone.

    Users get one of :data:`CONFIGS`; tests build smaller variants with :meth:`replace`.
    """

    name: str
    args: Mapping[str, Any]
    swin: Mapping[str, Any]

    def replace(self, name: str, swin: Mapping[str, Any] | None = None, **args) -> GroundingDinoConfig:
        unknown = set(args) - set(self.args)
        if unknown:
            raise ValueError(f"unknown GroundingDINO config keys: {sorted(unknown)}")
        return GroundingDinoConfig(name, {**self.args, **args}, dict(swin or self.swin))

    def namespace(self, inference: bool = True) -> types.SimpleNamespace:
        """The config as the ``args`` object groundingdino's builders read (lists, not tuples).

        ``inference`` turns off gradient checkpointing (a training-only memory saver).
        """
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in self.args.items()}
        if inference:
            values.update(use_checkpoint=False, use_transformer_ckpt=False)
        return types.SimpleNamespace(**values)

    @property
    def backbone_embed_dim(self) -> int:
        return int(self.swin["embed_dim"])


SWINT_OGC = GroundingDinoConfig("swint_ogc", dict(_ORIGINAL_ARGS), dict(_SWIN["swin_T_224_1k"]))
# groundingdino/config/GroundingDINO_SwinB_cfg.py: identical but for the backbone
SWINB = GroundingDinoConfig("swinb", {**_ORIGINAL_ARGS, "backbone": "swin_B_384_22k"}, dict(_SWIN["swin_B_384_22k"]))
CONFIGS = {"swint_ogc": SWINT_OGC, "swinb": SWINB}  # what "auto" and the loader node choose from


def register_config(config: GroundingDinoConfig) -> None:
    """Make another architecture known to ``config="auto"`` and the loader node (tests use a tiny one).

    The two released configs cannot be replaced; "auto" tells configs apart by Swin width.
    """
    if config.name in ("auto", "swint_ogc", "swinb"):
        raise ValueError(f"the config name {config.name!r} is reserved")
    clash = [
        c.name for c in CONFIGS.values() if c.backbone_embed_dim == config.backbone_embed_dim and c.name != config.name
    ]
    if clash:
        raise ValueError(f"config {config.name!r} has the Swin width of {clash[0]!r}: 'auto' could not tell them apart")
    CONFIGS[config.name] = config


@dataclass(frozen=True)
class Detection:
    phrase: str  # the phrase (tag) as given
    box: tuple[float, float, float, float]  # xyxy in pixels of the input image
    confidence: float  # the box's highest token probability within its phrase


@dataclass(frozen=True)
class CaptionChunk:
    caption: str
    # (index into the phrase list, first token, end token): token positions in the tokenized caption
    spans: tuple[tuple[int, int, int], ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------- model


def build_model(config: GroundingDinoConfig, tokenizer, bert_config) -> nn.Module:
    """groundingdino-py's ``GroundingDINO`` for ``config``, with random weights.

    The same construction as groundingdino's ``build_groundingdino(args)``, except that the Swin
    backbone is built from ``config.swin`` (so tests can shrink it) and BERT from ``bert_config``.
    Works under ``torch.device("meta")`` for shape checks.
    """
    from transformers import BertModel

    gd = import_groundingdino()
    args = config.namespace()
    indices = tuple(args.return_interm_indices)
    target = torch.get_default_device()
    with warnings.catch_warnings(), torch.device("cpu"):
        # built on the CPU even under torch.device("meta"): its constructor calls .item()
        warnings.simplefilter("ignore", UserWarning)  # torch.meshgrid indexing
        swin = gd.SwinTransformer(
            pretrain_img_size=config.swin["pretrain_img_size"],
            embed_dim=config.swin["embed_dim"],
            depths=list(config.swin["depths"]),
            num_heads=list(config.swin["num_heads"]),
            window_size=config.swin["window_size"],
            out_indices=indices,
            dilation=False,
            use_checkpoint=False,
        )
    swin = swin.to(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        backbone = gd.Joiner(swin, gd.build_position_encoding(args))
        backbone.num_channels = swin.num_features[4 - len(indices) :]
        transformer = gd.build_transformer(args)
        bert = BertModel(bert_config, add_pooling_layer=True)
        with constructing_with(gd, tokenizer, bert):
            model = gd.GroundingDINO(
                backbone,
                transformer,
                num_queries=args.num_queries,
                aux_loss=True,
                iter_update=True,
                query_dim=4,
                num_feature_levels=args.num_feature_levels,
                nheads=args.nheads,
                dec_pred_bbox_embed_share=args.dec_pred_bbox_embed_share,
                two_stage_type=args.two_stage_type,
                two_stage_bbox_embed_share=args.two_stage_bbox_embed_share,
                two_stage_class_embed_share=args.two_stage_class_embed_share,
                num_patterns=args.num_patterns,
                dn_number=0,
                dn_box_noise_scale=args.dn_box_noise_scale,
                dn_label_noise_ratio=args.dn_label_noise_ratio,
                dn_labelbook_size=args.dn_labelbook_size,
                text_encoder_type=args.text_encoder_type,
                sub_sentence_present=args.sub_sentence_present,
                max_text_len=args.max_text_len,
            )
    return model.eval()


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> GroundingDinoConfig:
    """SwinT OGC or SwinB, from the backbone's patch-embedding width."""
    weight = state_dict.get("backbone.0.patch_embed.proj.weight")
    if weight is None:
        raise ValueError("not a GroundingDINO checkpoint: no backbone.0.patch_embed.proj.weight")
    width = weight.shape[0]
    for config in CONFIGS.values():
        if config.backbone_embed_dim == width:
            return config
    raise ValueError(
        f"this GroundingDINO checkpoint has a Swin backbone of width {width}; the supported ones are SwinT "
        f"(width 96, {GROUNDING_DINO_FILES['swint_ogc'][0]}) and SwinB (width 128, {GROUNDING_DINO_FILES['swinb'][0]})"
    )


def _buffer_key(key: str) -> bool:
    # position_ids / token_type_ids: persistent buffers in old transformers, recomputed since
    return key.endswith("embeddings.position_ids") or key.endswith("embeddings.token_type_ids")


def check_shapes(model: nn.Module, state_dict: Mapping[str, torch.Tensor], config: GroundingDinoConfig) -> None:
    """Raise if the checkpoint's tensors do not fit the model built for ``config``."""
    expected = model.state_dict()
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs {config.name} {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        try:
            detected = infer_config(state_dict).name
        except ValueError:
            detected = None
        hint = (
            f" It is a {detected} checkpoint: choose config '{detected}' (or 'auto')."
            if detected and detected != config.name
            else ""
        )
        raise ValueError(
            f"the GroundingDINO checkpoint does not match the '{config.name}' config: {len(wrong)} tensors differ "
            f"in shape (e.g. {'; '.join(wrong[:3])}).{hint} The bert-base-uncased folder must be the "
            "original bert-base-uncased too (hidden size 768)."
        )


def _read_bert_folder(bert_dir: str):
    from transformers import BertConfig, BertTokenizerFast

    if not os.path.isdir(bert_dir):
        raise FileNotFoundError(
            missing_file_message(
                "bert-base-uncased folder", bert_dir, "bert-base-uncased", "config.json and vocab.txt", BERT_SOURCE
            )
        )
    missing = [f for f in ("config.json", "vocab.txt") if not os.path.isfile(os.path.join(bert_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"the bert-base-uncased folder {bert_dir} lacks {' and '.join(missing)}. Put config.json and vocab.txt "
            f"of bert-base-uncased in ComfyUI's models/bert-base-uncased folder. Get them from: {BERT_SOURCE}"
        )
    bert_config = BertConfig.from_pretrained(bert_dir, local_files_only=True)
    if bert_config.model_type != "bert":
        raise ValueError(
            f"{bert_dir}/config.json is a '{bert_config.model_type}' config; GroundingDINO needs bert-base-uncased's"
        )
    tokenizer = BertTokenizerFast.from_pretrained(bert_dir, local_files_only=True)
    return tokenizer, bert_config


def _fill_bert_from_folder(model: nn.Module, bert_dir: str, missing: list[str]) -> None:
    """Older exports without the text encoder: take BERT's weights from the folder."""
    from transformers import BertModel

    if not any(os.path.isfile(os.path.join(bert_dir, f)) for f in ("model.safetensors", "pytorch_model.bin")):
        raise ValueError(
            f"the GroundingDINO checkpoint has no BERT weights ({len(missing)} bert.* tensors missing) and {bert_dir} "
            f"has no model.safetensors to take them from. Get it from: {BERT_SOURCE}"
        )
    bert = BertModel.from_pretrained(bert_dir, local_files_only=True, add_pooling_layer=True)
    model.bert.load_state_dict({k: v for k, v in bert.state_dict().items() if not _buffer_key(k)}, strict=False)


def load_grounding_dino(
    checkpoint_path: str | os.PathLike,
    bert_dir: str | os.PathLike,
    config: str | GroundingDinoConfig = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    image_size: int = 800,
) -> GroundingDinoDetector:
    """Load an original GroundingDINO checkpoint.

    ``config``: ``"auto"`` (from the checkpoint's Swin width), ``"swint_ogc"``, ``"swinb"`` (or the
    name of a :func:`register_config` one), or a :class:`GroundingDinoConfig`. ``image_size``: the shorter
    side the image is resized to (800 as in the original inference; at most 1333 on the longer side).
    """
    checkpoint_path, bert_dir = os.fspath(checkpoint_path), os.fspath(bert_dir)
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(
            missing_file_message(
                "GroundingDINO checkpoint",
                checkpoint_path,
                "grounding-dino",
                f"{GROUNDING_DINO_FILES['swint_ogc'][0]} (or {GROUNDING_DINO_FILES['swinb'][0]})",
                GROUNDING_DINO_SOURCE.source,
            )
        )
    tokenizer, bert_config = _read_bert_folder(bert_dir)
    state = read_state_dict(checkpoint_path, GROUNDING_DINO_SOURCE)
    if not all(any(k.startswith(p) for k in state) for p in ("backbone.0.", "transformer.", "feat_map.")):
        files = f"{GROUNDING_DINO_FILES['swint_ogc'][0]} (or {GROUNDING_DINO_FILES['swinb'][0]})"
        raise ValueError(wrong_checkpoint_message(checkpoint_path, state, GROUNDING_DINO_SOURCE, files))
    if isinstance(config, str):
        if config == "auto":
            config = infer_config(state)
        elif config in CONFIGS:
            config = CONFIGS[config]
        else:
            raise ValueError(
                f"unknown GroundingDINO config {config!r}: use 'auto', {', '.join(repr(c) for c in CONFIGS)}"
            )
    with torch.device("meta"):
        check_shapes(build_model(config, tokenizer, bert_config), state, config)

    model = build_model(config, tokenizer, bert_config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _buffer_key(k)]
    unexpected = [k for k in unexpected if not _buffer_key(k)]
    missing_bert = [k for k in missing if k.startswith("bert.")]
    others = [k for k in missing if not k.startswith("bert.")]
    if others:
        raise ValueError(
            f"incomplete GroundingDINO checkpoint {os.path.basename(checkpoint_path)}: {len(others)} tensors missing "
            f"(e.g. {', '.join(others[:3])}). Download it again."
        )
    if missing_bert:
        _fill_bert_from_folder(model, bert_dir, missing_bert)
    if unexpected:
        log.warning(
            "GroundingDINO: %d checkpoint tensors not used (e.g. %s)", len(unexpected), ", ".join(unexpected[:3])
        )
    del state
    model.requires_grad_(False)
    detector = GroundingDinoDetector(model, tokenizer, config, image_size=image_size)
    if dtype not in (None, torch.float32):
        log.info("GroundingDINO runs in float32 (its position embeddings are built in float32); %s ignored", dtype)
    return detector.to(device=device or "cpu")


# ---------------------------------------------------------------------------------- phrases


def normalize_phrase(phrase: str) -> str:
    """Lower case, single spaces, no '.'/'?' (they separate phrases in GroundingDINO's caption)."""
    return " ".join(phrase.lower().replace(".", " ").replace("?", " ").split())


def plan_captions(tokenizer, phrases: Sequence[str], max_tokens: int = MAX_TEXT_TOKENS) -> list[CaptionChunk]:
    """Captions ``"p1 . p2 . p3 ."`` holding every phrase, each within ``max_tokens`` tokens.

    Phrases that normalize to nothing, or to a phrase already placed, are skipped; one longer than a
    whole caption is cut to fit.
    Spans give each phrase's token positions in its caption (special tokens included).
    """
    chunks: list[CaptionChunk] = []
    current: list[tuple[int, str]] = []
    used = 2  # [CLS] ... [SEP]
    seen: set[str] = set()

    def flush():
        if current:
            chunks.append(_chunk(tokenizer, current))
            current.clear()

    for index, phrase in enumerate(phrases):
        text = normalize_phrase(phrase)
        if not text or text in seen:
            continue
        seen.add(text)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        if len(ids) + 3 > max_tokens:  # alone it cannot fit: keep its first words
            ids = ids[: max_tokens - 3]
            text = tokenizer.decode(ids)
        need = len(ids) + 1  # its tokens and the '.' after it
        if used + need > max_tokens:
            flush()
            used = 2
        current.append((index, text))
        used += need
    flush()
    return chunks


def _chunk(tokenizer, items: list[tuple[int, str]]) -> CaptionChunk:
    caption, char_spans = "", []
    for index, text in items:
        start = len(caption)
        caption += text
        char_spans.append((index, start, len(caption)))
        caption += " . "
    caption = caption.rstrip()
    offsets = tokenizer(caption, return_offsets_mapping=True)["offset_mapping"]
    spans = []
    for index, start, end in char_spans:
        tokens = [t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
        if tokens and tokens[-1] < MAX_TEXT_TOKENS - 1:  # the model reads the first 256 tokens only
            spans.append((index, tokens[0], tokens[-1] + 1))
    return CaptionChunk(caption, tuple(spans))


# ---------------------------------------------------------------------------------- boxes


def select_detections(
    probs: torch.Tensor,
    boxes_cxcywh: torch.Tensor,
    spans: Sequence[tuple[int, int, int]],
    phrases: Sequence[str],
    width: int,
    height: int,
    box_threshold: float,
    text_threshold: float,
) -> list[Detection]:
    """Query boxes -> detections of phrases (before NMS).

    ``probs``: ``[queries, tokens]`` sigmoid scores; ``boxes_cxcywh``: ``[queries, 4]`` normalized.
    As in GroundingDINO's own inference: a box is kept when its best score over every text token passes
    ``box_threshold``; it belongs to the phrase whose tokens it scores highest, if that phrase's score
    passes ``text_threshold``; its confidence is that phrase score.
    """
    if not spans or probs.numel() == 0:
        return []
    probs = probs.float()
    scores = torch.stack([probs[:, start:end].amax(dim=1) for _, start, end in spans], dim=1)  # [Q, P]
    best, which = scores.max(dim=1)
    keep = (probs.amax(dim=1) > box_threshold) & (best > text_threshold)
    if not keep.any():
        return []
    cx, cy, w, h = boxes_cxcywh[keep].float().unbind(-1)
    xyxy = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
    detections = []
    for box, score, span_index in zip(xyxy.tolist(), best[keep].tolist(), which[keep].tolist()):
        if box[2] - box[0] < 1e-3 or box[3] - box[1] < 1e-3:
            continue  # nothing left inside the image
        detections.append(Detection(phrases[spans[span_index][0]], tuple(box), float(score)))
    return detections


def nms_per_phrase(detections: Sequence[Detection], iou_threshold: float) -> list[Detection]:
    """Non-maximum suppression within each phrase; result sorted by confidence."""
    kept: list[Detection] = []
    for phrase in dict.fromkeys(d.phrase for d in detections):
        group = [d for d in detections if d.phrase == phrase]
        boxes = torch.tensor([d.box for d in group], dtype=torch.float32)
        scores = torch.tensor([d.confidence for d in group], dtype=torch.float32)
        kept.extend(group[i] for i in nms(boxes, scores, iou_threshold).tolist())
    return sorted(kept, key=lambda d: -d.confidence)


def image_to_tensor(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI-style ``[H, W, 3]`` (or ``[1, H, W, 3]``) in [0, 1] -> ``[3, H, W]`` float."""
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"expected an image [H, W, 3] with values in [0, 1], got shape {tuple(image.shape)}")
    return image[..., :3].permute(2, 0, 1).float()


def resized_size(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    """The original ``RandomResize([size], max_size)`` target (shorter side ``size``, longer <= ``max_size``)."""
    if max_size is not None:
        short, long = min(height, width), max(height, width)
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


class GroundingDinoDetector(nn.Module):
    """A loaded GroundingDINO with its tokenizer; an ``nn.Module`` so ComfyUI can offload it."""

    def __init__(
        self, model: nn.Module, tokenizer, config: GroundingDinoConfig, image_size: int = 800, max_size: int = 1333
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.image_size = image_size
        self.max_size = max_size

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """``[H, W, 3]`` in [0, 1] -> normalized ``[1, 3, h, w]`` at the model's input size."""
        pixels = image_to_tensor(image)
        height, width = pixels.shape[-2:]
        size = resized_size(height, width, self.image_size, self.max_size)
        param = next(self.model.parameters())
        pixels = pixels.to(param.device)[None]
        if size != (height, width):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        return imagenet_normalize(pixels).to(param.dtype)

    @torch.no_grad()
    def run(self, pixels: torch.Tensor, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass: (probabilities ``[queries, 256]``, boxes ``[queries, 4]`` cx cy w h in [0, 1])."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.cuda.amp.autocast inside groundingdino
            warnings.simplefilter("ignore", UserWarning)
            out = self.model(pixels, captions=[caption])
        return out["pred_logits"][0].float().sigmoid().cpu(), out["pred_boxes"][0].float().cpu()

    def detect(
        self,
        image: torch.Tensor,
        phrases: Sequence[str],
        box_threshold: float = BOX_THRESHOLD,
        text_threshold: float = TEXT_THRESHOLD,
        nms_threshold: float = 0.5,
    ) -> list[Detection]:
        """Boxes of ``phrases`` in ``image`` (``[H, W, 3]`` in [0, 1]); empty when nothing passes."""
        phrases = list(phrases)
        chunks = plan_captions(self.tokenizer, phrases)
        if not chunks:
            return []
        height, width = image_to_tensor(image).shape[-2:]
        pixels = self.preprocess(image)
        found: list[Detection] = []
        for chunk in chunks:
            probs, boxes = self.run(pixels, chunk.caption)
            found.extend(
                select_detections(probs, boxes, chunk.spans, phrases, width, height, box_threshold, text_threshold)
            )
        return nms_per_phrase(found, nms_threshold)
