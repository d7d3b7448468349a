"""Token streams as ComfyUI's SD-1 tokenizer lays out plain text, from a Hugging Face CLIP tokenizer."""

from __future__ import annotations

START, END = 49406, 49407


def clip_stream(tokenizer, text: str) -> list[int]:
    """75 tokens + start/end per chunk, padded to 77 with the end token, chunk after chunk."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    stream = []
    for i in range(0, max(len(ids), 1), 75):
        chunk = [START] + ids[i : i + 75] + [END]
        stream += chunk + [END] * (77 - len(chunk))
    return stream


def word_tokenizer(tokenizer):
    """One word -> its token ids, without start/end tokens."""
    return lambda word: tokenizer(word, add_special_tokens=False).input_ids
