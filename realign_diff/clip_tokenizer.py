"""The SD-1.x CLIP tokenizer, offline.

Sources, in order: a folder the user names (``vocab.json`` + ``merges.txt``), a ComfyUI install
(``comfy/sd1_tokenizer``, found through ``COMFYUI_PATH`` or this pack's place in
``ComfyUI/custom_nodes/``), or the BPE file shipped inside the ``open-clip-torch`` wheel, from which the
Hugging Face vocabulary is rebuilt exactly (the same 49,408 entries as ``openai/clip-vit-large-patch14``).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 77
_MERGES_END = 49152 - 256 - 2 + 1  # as open_clip slices its file: 48,894 merges, 49,408 tokens


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (a BPE vocabulary works on these characters)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def build_from_open_clip_bpe(bpe_gz: Path, out_dir: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (Hugging Face format) from open_clip's BPE merges file."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:_MERGES_END]]
    base = list(_bytes_to_unicode().values())
    vocab = (
        base + [token + "</w>" for token in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_vocab, tmp_merges = out_dir / "vocab.json.tmp", out_dir / "merges.txt.tmp"
    tmp_vocab.write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    tmp_merges.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    os.replace(tmp_vocab, out_dir / "vocab.json")
    os.replace(tmp_merges, out_dir / "merges.txt")
    return out_dir


def _comfyui_tokenizer_dirs() -> list[Path]:
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]) / "comfy" / "sd1_tokenizer")
    if PACK_ROOT.parent.name == "custom_nodes":
        candidates.append(PACK_ROOT.parent.parent / "comfy" / "sd1_tokenizer")
    return candidates


def _open_clip_bpe() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


def _is_tokenizer_dir(path: Path) -> bool:
    return (path / "vocab.json").is_file() and (path / "merges.txt").is_file()


def find_tokenizer_dir(explicit: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A folder holding ``vocab.json`` and ``merges.txt`` for the SD-1.x CLIP tokenizer."""
    if explicit is not None:
        path = Path(explicit)
        if not _is_tokenizer_dir(path):
            raise FileNotFoundError(f"{path} is not a CLIP tokenizer folder: it needs vocab.json and merges.txt")
        return path
    for path in _comfyui_tokenizer_dirs():
        if _is_tokenizer_dir(path):
            return path
    bpe = _open_clip_bpe()
    if bpe is None:
        raise FileNotFoundError(
            "No CLIP tokenizer found. Pass a folder with vocab.json and merges.txt (e.g. ComfyUI's "
            "comfy/sd1_tokenizer), set COMFYUI_PATH to a ComfyUI install, or `pip install open-clip-torch`, "
            "whose wheel ships the CLIP vocabulary."
        )
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "realign_diff_clip_tokenizer"
    if not _is_tokenizer_dir(cache):
        build_from_open_clip_bpe(bpe, cache)
    return cache


def load_clip_tokenizer(explicit: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None):
    """A ``transformers.CLIPTokenizer`` for SD-1.x (77 tokens, pad = end-of-text), built offline."""
    from transformers import CLIPTokenizer

    folder = find_tokenizer_dir(explicit, cache_dir)
    return CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        model_max_length=MAX_LENGTH,
        pad_token="<|endoftext|>",
    )
