"""RAM's image-tag recognition decoder: a BERT encoder with its self-attention and embeddings removed.

The official model builds a 2-layer ``BertModel`` (``ram/configs/q2l_config.json``: hidden 768, 4 heads,
intermediate 3072, cross-attention to 512-wide image tokens), then deletes ``embeddings`` and every layer's
``attention`` ("follow Query2Label") and runs it in ``mode='tagging'``: per layer, the label queries
cross-attend to the image tokens (residual + LayerNorm), then the feed-forward (residual + LayerNorm).
Module names here follow the official ones (``encoder.layer.N.crossattention.self.query`` ...), so the
checkpoint's ``tagging_head.*`` weights load as they are. The image attention mask is all ones in the
official code, i.e. no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TaggingHeadConfig:
    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 3072
    encoder_width: int = 512  # width of the image tokens (after image_proj) and of the label embeddings
    layer_norm_eps: float = 1e-12


class CrossSelfAttention(nn.Module):
    """Named ``self`` in the official tree (``crossattention.self``): queries from labels, keys/values from image."""

    def __init__(self, config: TaggingHeadConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.encoder_width, config.hidden_size)
        self.value = nn.Linear(config.encoder_width, config.hidden_size)

    def forward(self, hidden: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        b, n, d = hidden.shape
        h = self.num_heads

        def heads(x):
            return x.view(b, -1, h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.query(hidden)), heads(self.key(image)), heads(self.value(image))
        )
        return out.transpose(1, 2).reshape(b, n, d)


class DenseLayerNorm(nn.Module):
    """BERT's ``*Output``: dense, then LayerNorm of (result + residual)."""

    def __init__(self, in_features: int, config: TaggingHeadConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class CrossAttention(nn.Module):
    def __init__(self, config: TaggingHeadConfig):
        super().__init__()
        self.self = CrossSelfAttention(config)
        self.output = DenseLayerNorm(config.hidden_size, config)

    def forward(self, hidden, image):
        return self.output(self.self(hidden, image), hidden)


class Intermediate(nn.Module):
    def __init__(self, config: TaggingHeadConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))


class TaggingLayer(nn.Module):
    def __init__(self, config: TaggingHeadConfig):
        super().__init__()
        self.crossattention = CrossAttention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseLayerNorm(config.intermediate_size, config)

    def forward(self, hidden, image):
        attended = self.crossattention(hidden, image)
        return self.output(self.intermediate(attended), attended)


class TaggingEncoder(nn.Module):
    def __init__(self, config: TaggingHeadConfig):
        super().__init__()
        self.layer = nn.ModuleList(TaggingLayer(config) for _ in range(config.num_layers))

    def forward(self, hidden, image):
        for layer in self.layer:
            hidden = layer(hidden, image)
        return hidden


class TaggingHead(nn.Module):
    """``tagging_head``: label queries [B, K, hidden] x image tokens [B, L, encoder_width] -> [B, K, hidden]."""

    def __init__(self, config: TaggingHeadConfig):
        super().__init__()
        self.config = config
        self.encoder = TaggingEncoder(config)

    def forward(self, label_queries: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(label_queries, image_tokens)


def reweight_label_embeddings(
    label_embed: torch.Tensor, image_cls: torch.Tensor, reweight_scale: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """RAM++: each class has D description embeddings; per image they are averaged with softmax weights from
    their similarity to the image's (normalized) global token, scaled by ``exp(reweight_scale)``.

    label_embed [K·D, W], image_cls [B, W] -> [B, K, W]. Same result as the official per-image loop, without
    materializing a [K, D, W] product per image.
    """
    per_class = label_embed.shape[0] // num_classes
    image_cls = image_cls / image_cls.norm(dim=-1, keepdim=True)
    logits = reweight_scale.exp() * image_cls @ label_embed.t()  # [B, K·D]
    weights = logits.view(image_cls.shape[0], num_classes, per_class).softmax(dim=-1)
    return torch.einsum("bkd,kdw->bkw", weights, label_embed.view(num_classes, per_class, -1))
