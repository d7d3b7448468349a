"""The LLM scorer's one prompt, and the parsing and validation of its answers."""

from __future__ import annotations

import json
import re

from .offline_scorer import names_object
from .scoring import TagScore, normalize_tag, snap_score

MAX_CAPTION_CHARS = 200
# A caption goes into the second pass's prompt: only a short phrase naming its object may (a shared workflow can
# point at any endpoint, and its answers must not write the prompt)
MAX_CAPTION_WORDS = 12
_PHRASE_PUNCTUATION = frozenset(" ,'’&-")
_INSTRUCTION_WORDS = frozenset(
    {
        "ignore",
        "disregard",
        "forget",
        "instruction",
        "instructions",
        "prompt",
        "system",
        "assistant",
        "override",
        "jailbreak",
        "you",
        "please",
        "must",
        "reply",
        "respond",
    }
)

# ---------------------------------------------------------------- the one prompt
SYSTEM_PROMPT = """\
You help an image generator follow its prompt. You get the text prompt of a generated image and the \
tags an image tagger found in that image. For EVERY tag give:
- "score": how likely that object belongs in the scene the prompt describes. 2 = certainly (the prompt \
names it, a synonym of it, or a kind of it); 0.5 = possibly (it fits the scene, but the prompt does not \
name it); 0 = unlikely (it does not belong in this scene).
- "caption": a short local caption of that object as the prompt wants it (at most 12 words, naming the \
object), using the prompt's own words for its attributes (colour, material, number, state). \
For an object the prompt does not describe, \
the object's name with an article.
Reply with only a JSON object, no other text:
{"objects": [{"tag": "<the tag exactly as given>", "score": <2, 0.5 or 0>, "caption": "<local caption>"}]}
One entry per tag, in the order given, each tag spelled exactly as given. The only allowed scores are \
2, 0.5 and 0.

Example. Input: {"prompt": "a red book and a yellow pen", "tags": ["book", "pen", "desk", "banana"]}
Reply: {"objects": [{"tag": "book", "score": 2, "caption": "a red book"}, {"tag": "pen", "score": 2, \
"caption": "a yellow pen"}, {"tag": "desk", "score": 0.5, "caption": "a desk"}, {"tag": "banana", \
"score": 0, "caption": "a banana"}]}"""


def build_messages(prompt: str, tags: list[str]) -> list[dict]:
    """The chat messages for one request: the instructions above and the prompt + tags as JSON."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": json.dumps({"prompt": prompt, "tags": list(tags)}, ensure_ascii=False)},
    ]


def response_schema(tags: list[str]) -> dict:
    """JSON schema of the answer (for servers with structured outputs)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["objects"],
        "properties": {
            "objects": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["tag", "score", "caption"],
                    "properties": {
                        "tag": {"type": "string", "enum": list(tags)},
                        "score": {"type": "number", "enum": [2, 0.5, 0]},
                        "caption": {"type": "string"},
                    },
                },
            }
        },
    }


def _response_format(mode: str, tags: list[str]) -> dict | None:
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "tag_scores", "strict": True, "schema": response_schema(tags)},
        }
    if mode == "json_object":
        return {"type": "json_object"}
    return None


# ---------------------------------------------------------------- parsing and validation
class AnswerError(ValueError):
    """The model's answer is not usable; the message is fed back to it on the next attempt."""


_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)```", re.DOTALL)


def extract_json(text: str | None):
    """The first JSON value in a model's reply: bare, inside a code fence, or with text around it."""
    if text is None or not str(text).strip():
        raise AnswerError("the answer was empty")
    text = _THINK.sub("", str(text))
    decoder = json.JSONDecoder()
    for candidate in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        candidate = candidate.strip()
        tries = 0
        for i, ch in enumerate(candidate):
            if ch not in "{[":
                continue
            try:
                return decoder.raw_decode(candidate, i)[0]
            except json.JSONDecodeError:
                tries += 1
                if tries >= 20:
                    break
    preview = " ".join(text.split())[:80]
    raise AnswerError(f"the answer held no JSON object (it began: {preview!r})")


def validate_answer(answer, tags: list[str]) -> list[TagScore]:
    """Entries for exactly the requested tags, in their order; raises AnswerError on any bad field.

    Accepted shapes: {"objects": [{"tag", "score", "caption"}, ...]}, the bare list, or
    {"<tag>": {"score", "caption"}, ...}. Tags match case- and whitespace-insensitively; tags that
    were not asked for are ignored; a tag answered twice keeps its first answer. Scores must be 2, 0.5
    or 0 (numbers or numeric strings; see ``snap_score``), captions non-empty strings of at most
    200 characters.
    """
    wanted = {normalize_tag(t): t for t in tags}
    if isinstance(answer, dict) and isinstance(answer.get("objects"), list):
        items = answer["objects"]
    elif isinstance(answer, list):
        items = answer
    elif isinstance(answer, dict) and answer and all(isinstance(v, dict) for v in answer.values()):
        items = [{"tag": k, **v} for k, v in answer.items()]
    else:
        raise AnswerError('the answer must be a JSON object {"objects": [...]}')
    found: dict[str, TagScore] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise AnswerError(f"objects[{i}] is not an object")
        raw_tag = item.get("tag")
        if not isinstance(raw_tag, str):
            raise AnswerError(f'objects[{i}] has no "tag" string')
        key = normalize_tag(raw_tag)
        if key not in wanted or key in found:
            continue
        try:
            score = snap_score(item.get("score"))
        except ValueError as error:
            raise AnswerError(f"tag {raw_tag!r}: {error}") from None
        caption = item.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise AnswerError(f'tag {raw_tag!r}: "caption" must be a non-empty string')
        caption = " ".join(caption.split())
        if len(caption) > MAX_CAPTION_CHARS:
            raise AnswerError(f"tag {raw_tag!r}: the caption is longer than {MAX_CAPTION_CHARS} characters")
        found[key] = TagScore(tag=wanted[key], score=score, caption=caption)
    missing = [wanted[k] for k in wanted if k not in found]
    if missing:
        raise AnswerError(f"no answer for the tag(s) {missing}")
    return [found[normalize_tag(t)] for t in tags]


def caption_problem(tag: str, caption: str) -> str | None:
    """Why an answer's caption may not go into the prompt (too long, prompt syntax or markup, an instruction, or
    not naming its tag); None when it is a short phrase that names the tag (any word form or synonym)."""
    caption = caption.strip().removesuffix(".")  # "a yellow pen." is still a phrase
    words = caption.split()
    if len(words) > MAX_CAPTION_WORDS:
        return f"{len(words)} words, more than the {MAX_CAPTION_WORDS} of a short phrase"
    odd = "".join(sorted({ch for ch in caption if not (ch.isalnum() or ch in _PHRASE_PUNCTUATION)}))
    if odd:
        return f"it holds {odd!r}: a short phrase has only words, commas and hyphens (no prompt syntax or markup)"
    instructions = sorted({w.strip(",'’&-").lower() for w in words} & _INSTRUCTION_WORDS)
    if instructions:
        return f"it reads like an instruction ({', '.join(instructions)})"
    if not names_object(caption, tag):
        return f"it does not name {tag!r}"
    return None
