"""Random-weight GroundingDINO in the original file formats, and a tiny local bert-base-uncased folder.

``write_tiny_grounding_dino(folder)`` writes ``groundingdino_tiny.pth`` (``{"model": state_dict}``
with the original key layout, built by groundingdino-py's own modules) and a ``bert-base-uncased``
folder (``config.json``, ``model.safetensors``, ``vocab.txt``). Its architecture,
:data:`TINY_GROUNDING_DINO`, is the SwinT OGC config shrunk (Swin width 32 with one block per
stage, one encoder / two decoder layers, 30 queries); GroundingDINO hard-codes a 256-wide text
position embedding, so ``hidden_dim`` stays 256. Load it with
``load_grounding_dino(ckpt, bert_dir, config=TINY_GROUNDING_DINO)``: ``config="auto"`` only knows
the two released backbones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from realign_diff.dense_captioner.grounding import SWINT_OGC, build_model

# a small BERT vocabulary (lower case): special tokens, the phrase separators, everyday objects
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ",", "-", "'"]
WORDS = """
a an the and of on in with at near red yellow green blue white black brown pink orange purple gray small large big
old young wooden metal glass book pen pencil desk table chair lamp cup mug bottle plate bowl banana apple orange
cat dog bird horse cow sheep person man woman child boy girl people car bus truck bicycle motorcycle train boat
airplane tree grass flower sky cloud sun mountain river sea beach road street building house window door wall
floor room kitchen bed sofa couch pillow clock phone laptop computer keyboard mouse screen television shirt hat
shoe bag umbrella ball kite surfboard skateboard pizza cake sandwich bread cheese food water snow rock sand
field fence sign light traffic stop bench hand face hair eye head leg tie glasses paper box toy teddy bear
""".split()
WORDPIECES = ["##s", "##es", "##ed", "##ing", "##er", "##ly"]
VOCAB = SPECIAL_TOKENS + list(dict.fromkeys(WORDS)) + WORDPIECES

TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 256,
}

TINY_GROUNDING_DINO = SWINT_OGC.replace(
    "tiny",
    swin={
        "embed_dim": 32,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 2, 4, 8),
        "window_size": 7,
        "pretrain_img_size": 224,
    },
    dim_feedforward=256,
    enc_layers=1,
    dec_layers=2,
    num_queries=30,
)


def write_bert_folder(
    folder: str | Path, bert_config_overrides: dict | None = None, seed: int = 0, weights: bool = True
) -> Path:
    """A local ``bert-base-uncased``-style folder: config.json, vocab.txt (and model.safetensors)."""
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(VOCAB), pad_token_id=0, **(bert_config_overrides or TINY_BERT))
    if weights:
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    return folder


def read_bert_folder(bert_dir: str | Path):
    from transformers import BertConfig, BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(bert_dir), local_files_only=True), BertConfig.from_pretrained(
        str(bert_dir), local_files_only=True
    )


def tiny_grounding_dino_state_dict(
    bert_dir: str | Path, seed: int = 0, config=TINY_GROUNDING_DINO
) -> dict[str, torch.Tensor]:
    tokenizer, bert_config = read_bert_folder(bert_dir)
    torch.manual_seed(seed)
    model = build_model(config, tokenizer, bert_config)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_tiny_grounding_dino(
    folder: str | Path, seed: int = 0, name: str = "groundingdino_tiny.pth"
) -> tuple[Path, Path]:
    """(checkpoint path, bert folder): a random :data:`TINY_GROUNDING_DINO` saved as the originals are."""
    folder = Path(folder)
    bert_dir = write_bert_folder(folder / "bert-base-uncased", seed=seed)
    path = folder / name
    torch.save({"model": tiny_grounding_dino_state_dict(bert_dir, seed)}, path)
    return path, bert_dir


def install_in_comfyui(comfyui, seed: int = 0) -> dict[str, str]:
    """Tiny GroundingDINO + BERT + SAM files in a test ComfyUI's models folders, ready for the loader nodes.

    Writes ``models/grounding-dino/groundingdino_tiny.pth``, ``models/bert-base-uncased/tiny-bert/`` and
    ``models/sams/sam_tiny.pth``, and registers :data:`TINY_GROUNDING_DINO` (as ``"tiny"``) in the copy
    of the pack ComfyUI loaded, so the loader's ``config="auto"`` recognizes it. Returns the names the
    loader nodes take: ``{"grounding_dino": ..., "bert": ..., "sam": ..., "config": "tiny"}``.
    """
    import sys

    from .sam import write_tiny_sam

    models = Path(comfyui.models_dir)
    checkpoint = models / "grounding-dino" / "groundingdino_tiny.pth"
    bert_dir = models / "bert-base-uncased" / "tiny-bert"
    if not checkpoint.exists():
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        write_bert_folder(bert_dir, seed=seed)
        torch.save({"model": tiny_grounding_dino_state_dict(bert_dir, seed)}, checkpoint)
    sam_path = models / "sams" / "sam_tiny.pth"
    if not sam_path.exists():
        write_tiny_sam(sam_path.parent, seed=seed, name=sam_path.name)
    for name, module in list(sys.modules.items()):
        if name.endswith("realign_diff.dense_captioner.grounding") and hasattr(module, "register_config"):
            tiny = module.GroundingDinoConfig("tiny", TINY_GROUNDING_DINO.args, TINY_GROUNDING_DINO.swin)
            if module.CONFIGS.get("tiny") != tiny:
                module.register_config(tiny)
    return {"grounding_dino": checkpoint.name, "bert": bert_dir.name, "sam": sam_path.name, "config": "tiny"}
