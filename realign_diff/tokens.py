"""Which key tokens belong to which object, in the encoded conditioning.

CLIP's BPE tokenizes each word independently of its neighbours, so a phrase's token ids appear
as a contiguous run in the token stream of any text that contains it (punctuation aside). An
object's token set (T_i in docs/method.md: its tag and local-caption tokens) is the content words of its
local caption wherever the caption occurs ("a yellow pen" -> yellow, pen), plus every occurrence of
its tag, plural or singular ("pen", "pens"). Articles, conjunctions, punctuation and words naming
other objects are left out. The stream is the tokenizer's output for the whole conditioning, chunks
included (start, end and padding tokens never match).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

STOP_WORDS = frozenset(
    "a an the and or of with in on at to for from by is are be it its this that these those some".split()
)
_PUNCTUATION = ".,;:!?\"'()[]{}"
PUNCTUATION_MARKS = (",", ".", ";", ":", "!", "?")  # tokens that may sit between a phrase's words

TokenizeWord = Callable[[str], list[int]]  # one word -> its token ids (no start/end tokens)


@dataclass
class ObjectTokens:
    tag: str
    caption: str
    positions: list[int] = field(default_factory=list)  # key indices in one prompt-length sequence
    matched: str = ""  # "caption", "tag", "caption+tag" (the tag occurs elsewhere too) or "" (not found)
    matched_words: list[str] = field(default_factory=list)


def split_words(phrase: str) -> list[str]:
    """Words of a phrase, lower-cased, with surrounding punctuation removed (weights syntax dropped)."""
    cleaned = re.sub(r"[()\[\]]|:\s*-?\d+(\.\d+)?", " ", phrase)
    words = [w.strip(_PUNCTUATION).lower() for w in cleaned.split()]
    return [w for w in words if w]


def tag_variants(tag: str) -> list[str]:
    """The tag in each singular and plural form (``lexicon.noun_forms``), longest first ("knife" -> "knives",
    "knife"); forms no prompt uses ("knive") match nothing."""
    from .dense_captioner.lexicon import noun_forms

    tag = " ".join(split_words(tag))
    return sorted(noun_forms(tag), key=lambda form: (-len(form), form)) if tag else []


def find_phrase(
    stream: Sequence[int | None], words: list[list[int]], skippable: frozenset[int] = frozenset()
) -> list[list[list[int]]]:
    """Every occurrence of a phrase (its words' token ids, in order) in the stream.

    Skippable tokens (punctuation) may sit between words. Returns, per occurrence, the stream
    positions of each word's tokens.
    """
    words = [w for w in words if w]
    if not words:
        return []
    occurrences = []
    first = words[0]
    for start in range(len(stream) - len(first) + 1):
        positions: list[list[int]] = []
        cursor = start
        for index, word in enumerate(words):
            if index > 0:
                while cursor < len(stream) and stream[cursor] in skippable:
                    cursor += 1
            if list(stream[cursor : cursor + len(word)]) != word:
                break
            positions.append(list(range(cursor, cursor + len(word))))
            cursor += len(word)
        else:
            occurrences.append(positions)
    return occurrences


def locate_object(
    stream: Sequence[int | None],
    tag: str,
    caption: str,
    tokenize_word: TokenizeWord,
    skippable: frozenset[int] = frozenset(),
    exclude_words: frozenset[str] = frozenset(),
) -> ObjectTokens:
    """The object's token positions: its caption's content words where the caption occurs, plus its tag.

    ``exclude_words``: words that name other objects, left out of the caption's contribution.
    """
    result = ObjectTokens(tag=tag, caption=caption)
    positions: set[int] = set()
    caption_words = split_words(caption)
    content = [w for w in caption_words if w not in STOP_WORDS and w not in exclude_words]
    if content:
        for occurrence in find_phrase(stream, [tokenize_word(w) for w in caption_words], skippable):
            positions.update(p for word, spots in zip(caption_words, occurrence) if word in content for p in spots)
    if positions:
        result.matched, result.matched_words = "caption", list(content)
    tag_positions: set[int] = set()
    for variant in tag_variants(tag):
        words = split_words(variant)
        for occurrence in find_phrase(stream, [tokenize_word(w) for w in words], skippable):
            tag_positions.update(p for word, spots in zip(words, occurrence) if word not in STOP_WORDS for p in spots)
    if tag_positions - positions:
        result.matched = "caption+tag" if positions else "tag"
        result.matched_words += [w for w in split_words(tag) if w not in result.matched_words and w not in STOP_WORDS]
    result.positions = sorted(positions | tag_positions)
    return result


def conditioning_text(prompt: str, captions_to_add: Sequence[str]) -> str:
    """The fine-stage text: the prompt, then each local caption it does not already contain."""
    text = prompt.strip()
    for caption in captions_to_add:
        caption = caption.strip()
        if caption:
            text = f"{text}, {caption}" if text else caption
    return text
