"""groundingdino-py 0.4.0 made to run here, without touching its installed files.

Three problems, three fixes, all local to building the model:

- ``groundingdino.models`` imports its COCO visualizer (cv2, matplotlib, pycocotools) at import
  time although inference never uses it: :func:`import_groundingdino` imports the model code with
  a placeholder for that one module, then removes the placeholder again.
- Its ``BertModelWarper`` reads ``get_head_mask`` / ``get_extended_attention_mask`` from the BERT
  model; transformers 5 removed both, and changed the encoder's signature. :class:`BertTextEncoder`
  replaces it: same sub-modules (so the checkpoint's ``bert.*`` keys load unchanged), a forward
  that turns GroundingDINO's per-phrase ``[B, L, L]`` attention mask into the additive mask every
  transformers version (4.x and 5.x) accepts.
- ``GroundingDINO.__init__`` loads its tokenizer and BERT by name (from the hub unless given a
  folder). :func:`constructing_with` hands it the tokenizer and BERT we built from the local
  ``bert-base-uncased`` folder instead, for the duration of the constructor only.
"""

from __future__ import annotations

import sys
import threading
import types
import warnings
from contextlib import contextmanager

import torch
from torch import nn

from ..compat.torchvision_ops import ensure_torchvision_importable

_VISUALIZER = "groundingdino.util.visualizer"
_LOCK = threading.RLock()


class _NoVisualizer:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("GroundingDINO's COCO visualizer is not available in RealignDiff")


def import_groundingdino() -> types.SimpleNamespace:
    """The groundingdino-py pieces we build the model from, imported without its visualizer."""
    ensure_torchvision_importable()
    with _LOCK:
        placeholder = None
        if _VISUALIZER not in sys.modules:
            placeholder = types.ModuleType(_VISUALIZER)
            placeholder.COCOVisualizer = _NoVisualizer
            sys.modules[_VISUALIZER] = placeholder
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # timm.models.layers deprecation
                from groundingdino.models.GroundingDINO import groundingdino as model_module
                from groundingdino.models.GroundingDINO.backbone.backbone import Joiner
                from groundingdino.models.GroundingDINO.backbone.position_encoding import build_position_encoding
                from groundingdino.models.GroundingDINO.backbone.swin_transformer import SwinTransformer
                from groundingdino.models.GroundingDINO.transformer import build_transformer
        except ImportError as error:
            raise ImportError(
                f"GroundingDINO needs the groundingdino-py package and its dependencies ({error}). Install the "
                "pack's requirements into ComfyUI's Python: python -m pip install -r requirements.txt"
            ) from error
        finally:
            if placeholder is not None and sys.modules.get(_VISUALIZER) is placeholder:
                del sys.modules[_VISUALIZER]
    return types.SimpleNamespace(
        module=model_module,
        GroundingDINO=model_module.GroundingDINO,
        build_groundingdino=model_module.build_groundingdino,
        Joiner=Joiner,
        build_position_encoding=build_position_encoding,
        SwinTransformer=SwinTransformer,
        build_transformer=build_transformer,
    )


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, L]`` or ``[B, L, L]`` keep-masks (1/True = attend) -> additive ``[B, 1, 1|L, L]`` mask.

    What transformers 4's ``get_extended_attention_mask`` returned for an encoder.
    """
    if attention_mask.dim() == 3:
        mask = attention_mask[:, None, :, :]
    elif attention_mask.dim() == 2:
        mask = attention_mask[:, None, None, :]
    else:
        raise ValueError(f"attention mask must be [B, L] or [B, L, L], got {tuple(attention_mask.shape)}")
    return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min


class BertTextEncoder(nn.Module):
    """Drop-in for groundingdino's ``BertModelWarper`` that runs on transformers 4.x and 5.x.

    Keeps ``embeddings`` / ``encoder`` / ``pooler`` as sub-modules, so the state-dict keys are the
    original ``bert.embeddings.*``, ``bert.encoder.*``, ``bert.pooler.*``.
    """

    def __init__(self, bert_model: nn.Module):
        super().__init__()
        self.config = bert_model.config
        self.embeddings = bert_model.embeddings
        self.encoder = bert_model.encoder
        self.pooler = bert_model.pooler

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, **unused):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        mask = extended_attention_mask(attention_mask, hidden.dtype)
        hidden = self.encoder(hidden, attention_mask=mask)[0]
        return {"last_hidden_state": hidden}


@contextmanager
def constructing_with(gd: types.SimpleNamespace, tokenizer, bert_model: nn.Module):
    """While active, ``GroundingDINO(...)`` takes ``tokenizer`` and ``bert_model`` and wraps it in
    :class:`BertTextEncoder`, instead of loading ``bert-base-uncased`` by name and wrapping it in
    the transformers-4-only ``BertModelWarper``."""
    module = gd.module
    with _LOCK:
        saved = module.get_tokenlizer, module.BertModelWarper
        module.get_tokenlizer = types.SimpleNamespace(
            get_tokenlizer=lambda _name: tokenizer,
            get_pretrained_language_model=lambda _name: bert_model,
        )
        module.BertModelWarper = BertTextEncoder
        try:
            yield
        finally:
            module.get_tokenlizer, module.BertModelWarper = saved
