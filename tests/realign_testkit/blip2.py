"""Write random-weight BLIP-2 folders in the Hugging Face layout, offline.

``write_tiny_blip2(root)`` writes two folders, shaped like the real ones our loader takes:

- a captioner (``Blip2ForConditionalGeneration`` + ``Blip2Processor``), like ``Salesforce/blip2-opt-2.7b``
  (``language_model="opt"``) or ``Salesforce/blip2-flan-t5-xl`` (``language_model="t5"``);
- an image-text retrieval model (``Blip2ForImageTextRetrieval`` + ``Blip2Processor`` with a BERT tokenizer),
  like ``Salesforce/blip2-itm-vit-g``, from which the loader takes the text tower
  (``Blip2TextModelWithProjection``).

Tokenizers are built here, with no hub and no extra package (only the ``tokenizers`` library transformers
already needs): the captioner gets a word-level vocabulary of the words in ``CORPUS`` (so random captions read
as words; unknown words become ``<unk>``), framed like OPT's (``</s>`` BOS) or T5's (``</s>`` EOS); the retrieval
model gets a small lowercase WordPiece vocabulary (BERT style, every ASCII letter and digit alone and as a ``##``
continuation, so any English word tokenizes). Weights are random, drawn by ``spread_init`` so outputs depend on
the input (the library's std-0.02 init makes tiny models nearly constant).

Presets: ``"tiny"`` (hidden 32, 2 layers, 64 px images: tests) and ``"small"`` (hidden 256, 4 layers,
224 px images, 32 query tokens: benchmarks on CPU; ~13 M parameters loaded). Same seed, same files.
"""

from __future__ import annotations

import inspect
import string
import tempfile
from pathlib import Path

import torch

from realign_diff.compat.torchvision_ops import ensure_torchvision_importable

CORPUS = [
    "a red book and a yellow pen on a wooden desk",
    "a photo of a cat sitting on a sofa",
    "two dogs playing with a ball in the park",
    "a man riding a bicycle down a city street",
    "a bowl of fruit with bananas and apples",
    "an astronaut riding a horse on the moon",
    "a blue car parked next to a green tree",
    "a plate of food on a table in a restaurant",
]

WORDS = [
    "a",
    "an",
    "the",
    "and",
    "of",
    "on",
    "in",
    "with",
    "red",
    "blue",
    "green",
    "yellow",
    "book",
    "pen",
    "cat",
    "dog",
    "dogs",
    "photo",
    "desk",
    "table",
    "car",
    "tree",
    "horse",
    "moon",
    "man",
    "street",
]

PRESETS = {
    "tiny": dict(hidden=32, layers=2, heads=2, ffn=64, image_size=64, patch=16, queries=4, proj=16, text_len=64),
    "small": dict(
        hidden=256, layers=4, heads=4, ffn=1024, image_size=224, patch=16, queries=32, proj=128, text_len=128
    ),
    # the shapes of Salesforce/blip2-opt-2.7b and blip2-itm-vit-g (ViT-g, 12-layer Q-Former, OPT-2.7b), except
    # the vocabularies (the test tokenizers'): 3.7 B parameters instead of 3.9 B; for benchmarks, not tests
    "opt-2.7b": dict(
        hidden=768,
        layers=12,
        heads=12,
        ffn=3072,
        image_size=224,
        patch=14,
        queries=32,
        proj=256,
        text_len=512,
        vision=dict(hidden_size=1408, num_hidden_layers=39, num_attention_heads=16, intermediate_size=6144),
        qformer=dict(encoder_hidden_size=1408, num_hidden_layers=12),
        text=dict(
            hidden_size=2560,
            word_embed_proj_dim=2560,
            num_hidden_layers=32,
            num_attention_heads=32,
            ffn_dim=10240,
            max_position_embeddings=2048,
        ),
    ),
}


def build_caption_tokenizer(language_model: str = "opt"):
    """A word-level tokenizer over the words of ``CORPUS`` (so random captions read as words), framed like OPT's
    (``</s>`` prepended as BOS) or T5's (``</s>`` appended as EOS). Unknown words become ``<unk>``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for line in CORPUS for word in line.split()} | set(WORDS))
    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>"] + words + list(".,!?"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    if language_model == "opt":  # OPT: "</s>" is BOS and EOS, prepended
        tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 1)])
    else:  # T5: "</s>" appended
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def spread_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw every weight so activations keep unit scale (fan-in scaled matrices, unit-variance embeddings and
    query tokens, LayerNorms at identity). The library's init (std 0.02, zero query tokens) makes tiny models
    nearly constant: every text embedding the same, every image the same caption. This keeps them random but
    input-dependent."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.is_floating_point():
                continue
            if "layernorm" in name.lower() or "layer_norm" in name.lower() or name.endswith("ln.weight"):
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif param.dim() >= 2 and "embed" not in name and "query_tokens" not in name:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
            elif param.dim() >= 2 or "query_tokens" in name or "embedding" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def build_bert_tokenizer(max_length: int = 64):
    """A lowercase WordPiece (BERT) tokenizer over a small vocabulary that still covers any ASCII text."""
    from transformers import BertTokenizer

    chars = list(string.ascii_lowercase + string.digits)
    tokens = (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + chars
        + list(string.punctuation)
        + [f"##{c}" for c in chars]
        + WORDS
    )
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    if "vocab" in inspect.signature(BertTokenizer.__init__).parameters:  # transformers 5: the vocabulary itself
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=max_length)
    else:  # transformers 4: a vocab.txt path
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "vocab.txt"
            path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
            tokenizer = BertTokenizer(str(path), do_lower_case=True, model_max_length=max_length)
    return tokenizer


def _configs(
    preset: dict,
    language_model: str,
    text_vocab: int,
    qformer_vocab: int,
    image_token_index: int,
    tie_word_embeddings: bool = True,
):
    from transformers import Blip2Config

    h, layers, heads, ffn = preset["hidden"], preset["layers"], preset["heads"], preset["ffn"]
    vision = dict(
        hidden_size=h,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        image_size=preset["image_size"],
        patch_size=preset["patch"],
    )
    qformer = dict(
        hidden_size=h,
        num_hidden_layers=2,
        num_attention_heads=heads,
        intermediate_size=ffn,
        encoder_hidden_size=h,
        max_position_embeddings=preset["text_len"],
        vocab_size=qformer_vocab,
        use_qformer_text_input=True,
        pad_token_id=0,
    )
    if language_model == "opt":
        text = dict(
            model_type="opt",
            hidden_size=h,
            word_embed_proj_dim=h,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            ffn_dim=ffn,
            vocab_size=text_vocab,
            max_position_embeddings=128,
            bos_token_id=1,
            eos_token_id=1,
            pad_token_id=0,
            tie_word_embeddings=tie_word_embeddings,
        )
    elif language_model == "t5":
        text = dict(
            model_type="t5",
            d_model=h,
            d_kv=h // heads,
            d_ff=ffn,
            num_layers=layers,
            num_decoder_layers=layers,
            num_heads=heads,
            vocab_size=text_vocab,
            feed_forward_proj="gated-gelu",
            eos_token_id=1,
            pad_token_id=0,
            decoder_start_token_id=0,
            tie_word_embeddings=False,
        )
    else:
        raise ValueError(f"language_model must be 'opt' or 't5', got {language_model!r}")
    vision.update(preset.get("vision", {}))
    qformer.update(preset.get("qformer", {}))
    if language_model == "opt":
        text.update(preset.get("text", {}))
    return Blip2Config(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=preset["queries"],
        image_text_hidden_size=preset["proj"],
        image_token_index=image_token_index,
    )


def write_tiny_blip2(
    root: str | Path,
    *,
    language_model: str = "opt",
    preset: str = "tiny",
    seed: int = 0,
    captioner_name: str | None = None,
    text_encoder_name: str | None = None,
    tie_word_embeddings: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[Path, Path]:
    """Write a random BLIP-2 captioner folder and a random BLIP-2 retrieval folder under ``root``.

    Returns ``(captioner_dir, text_encoder_dir)``; default names ``blip2-{preset}-{language_model}`` and
    ``blip2-{preset}-itm``. Existing folders are overwritten. ``tie_word_embeddings=False`` gives the OPT
    captioner its own output head: tied (as in the real OPT) to the unit-scale random embeddings, its next-token
    distribution is nearly one-hot (each token predicts itself), so sampled captions hardly vary; untied, its
    logits are unit scale and samples differ from seed to seed. (The T5 captioner is always untied, like Flan-T5.)
    ``dtype``: the weights' dtype in the files (float32 unless told; float16 halves a large preset's files).
    """
    ensure_torchvision_importable()
    from transformers import (
        Blip2ForConditionalGeneration,
        Blip2ForImageTextRetrieval,
        Blip2Processor,
        BlipImageProcessor,
    )

    shape = PRESETS[preset]
    root = Path(root)
    captioner_dir = root / (captioner_name or f"blip2-{preset}-{language_model}")
    text_encoder_dir = root / (text_encoder_name or f"blip2-{preset}-itm")
    size = {"height": shape["image_size"], "width": shape["image_size"]}

    cap_processor = Blip2Processor(
        BlipImageProcessor(size=size), build_caption_tokenizer(language_model), num_query_tokens=shape["queries"]
    )
    cap_tokenizer = cap_processor.tokenizer
    image_token = cap_tokenizer.convert_tokens_to_ids("<image>")
    itm_processor = Blip2Processor(
        BlipImageProcessor(size=size), build_bert_tokenizer(shape["text_len"]), num_query_tokens=shape["queries"]
    )
    qformer_vocab = len(itm_processor.tokenizer)

    torch.manual_seed(seed)
    captioner = Blip2ForConditionalGeneration(
        _configs(shape, language_model, len(cap_tokenizer), qformer_vocab, image_token, tie_word_embeddings)
    )
    retrieval = Blip2ForImageTextRetrieval(
        _configs(
            shape, "opt", len(cap_tokenizer), qformer_vocab, itm_processor.tokenizer.convert_tokens_to_ids("<image>")
        )
    )
    spread_init(captioner, seed)
    spread_init(retrieval, seed + 1)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        for folder, model, processor in (
            (captioner_dir, captioner, cap_processor),
            (text_encoder_dir, retrieval, itm_processor),
        ):
            folder.mkdir(parents=True, exist_ok=True)
            model.to(dtype or torch.float32).save_pretrained(folder)
            processor.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return captioner_dir, text_encoder_dir
