"""The offline scorer: per-tag scores and local captions from the prompt itself, with no LLM.

Deterministic rules (the tables are in ``lexicon.py``):

- **2** (certain): the tag names an object of the prompt: the same word, its plural or singular
  ("pens" / "pen"), a synonym ("couch" / "sofa"), or its kind or category ("puppy" / "dog",
  "person" / "girl"). The local caption is the prompt's own noun phrase for that object, with the
  determiner and the modifiers bound to it: "a red book and a yellow pen" gives "a red book" and
  "a yellow pen". Coordinated mentions give the whole stretch ("a man and a woman" for the tag
  "person"); other repeated mentions, the first one. A caption is always a phrase of the prompt, so the
  attention patch finds its tokens there.
- **0.5** (possible): the tag is related to the scene the prompt describes (it is in the ``related`` list
  of a context one of the prompt's words evokes: a desk or a lamp for books and pens), or the prompt
  uses it only as a modifier of another noun ("coffee" in "a coffee table").
- **0** (unlikely): anything else, and colour words (an attribute, not an object).

Captions of tags the prompt does not name are the tag with an article ("a desk").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import lexicon
from .scoring import CERTAIN, POSSIBLE, UNLIKELY, ScoringResult, TagScore, normalize_tag, unique_tags

OFFLINE_STATUS = "offline scorer: scores and local captions from the prompt's own words (no LLM)"

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")
_WEIGHT = re.compile(r":\s*-?\d+(?:\.\d+)?\s*(?=[)\]])")  # "(red book:1.2)" -> "(red book)"
_EMBEDDING = re.compile(r"embedding:\S+", re.IGNORECASE)
MAX_NGRAM = 3
MAX_PHRASE_WORDS = 7


# ---------------------------------------------------------------- concepts
def _canon_index() -> dict[str, str]:
    index = {}
    for group in lexicon.SYNONYMS:
        canonical = "=" + sorted(group)[0]
        for member in group:
            index[member] = canonical
    return index


_CANON = _canon_index()


def _canon(word: str) -> str:
    return _CANON.get(word, word)


def concept_keys(phrase: str) -> frozenset[str]:
    """Keys two names share when they name the same thing: word forms and synonym groups."""
    candidates = lexicon.lemma_candidates(normalize_tag(phrase))
    return frozenset(candidates | {_canon(c) for c in candidates})


def _parents_index() -> dict[str, set[str]]:
    parents: dict[str, set[str]] = {}
    for category, kinds in lexicon.IS_A.items():
        for kind in kinds:
            parents.setdefault(_canon(kind), set()).add(_canon(category))
    return parents


_PARENTS = _parents_index()


def ancestors(keys: frozenset[str]) -> frozenset[str]:
    """Every category above these concepts (transitively): puppy -> dog -> animal."""
    out: set[str] = set()
    todo = [k for k in keys if k in _PARENTS]
    while todo:
        for parent in _PARENTS.get(todo.pop(), ()):
            if parent not in out:
                out.add(parent)
                todo.append(parent)
    return frozenset(out)


def same_name(a: str, b: str) -> bool:
    """Whether two names are the same word (singular/plural) or synonyms: "couch" / "sofas"."""
    return bool(concept_keys(a) & concept_keys(b))


def same_object(a: str, b: str) -> bool:
    """Whether two names denote the same object: same word/synonym, or one is a kind of the other."""
    ka, kb = concept_keys(a), concept_keys(b)
    return bool(ka & kb) or bool(ancestors(ka) & kb) or bool(ancestors(kb) & ka)


def _keyset(words) -> frozenset[str]:
    out: set[str] = set()
    for word in words:
        out |= concept_keys(word)
    return frozenset(out)


_CONTEXT_KEYS = {name: (_keyset(cues), _keyset(related)) for name, (cues, related) in lexicon.CONTEXTS.items()}
_NOUN_KEYS = _keyset(lexicon.all_nouns())
_COLOR_KEYS = _keyset(lexicon.COLORS)


# ---------------------------------------------------------------- prompt analysis
@dataclass(frozen=True)
class Token:
    text: str
    low: str
    start: int
    end: int
    word: bool


@dataclass(frozen=True)
class Mention:
    """An n-gram of the prompt: tokens [first, last], its text, and whether it heads a noun phrase."""

    first: int
    last: int
    text: str
    head: bool
    phrase: str  # the noun phrase it ends: "a red book"
    start: int = 0  # the phrase's first token


def clean_prompt(prompt: str) -> str:
    """The prompt without ComfyUI's emphasis syntax: "(red book:1.2)" reads "red book"."""
    text = _EMBEDDING.sub(" ", prompt.replace("\\(", "(").replace("\\)", ")"))
    text = _WEIGHT.sub("", text)
    return re.sub(r"[()\[\]{}]", " ", text)


class PromptAnalysis:
    """Tokens, noun phrases and evoked scenes of one prompt."""

    def __init__(self, prompt: str, extra_nouns=()):
        self.text = clean_prompt(prompt)
        self.tokens = [
            Token(m.group(), m.group().lower().replace("’", "'"), m.start(), m.end(), m.group()[0].isalnum())
            for m in _WORD.finditer(self.text)
        ]
        self.noun_keys = _NOUN_KEYS | _keyset(extra_nouns)
        self.mentions = self._mentions()
        evoking = set()
        for mention in self.mentions:
            keys = concept_keys(mention.text)
            evoking |= keys | ancestors(keys)
        self.contexts = [name for name, (cues, _) in _CONTEXT_KEYS.items() if cues & evoking]
        self.related_keys = frozenset().union(*(_CONTEXT_KEYS[name][1] for name in self.contexts))

    # -- token classes
    def _is_boundary(self, tok: Token) -> bool:
        if not tok.word:
            return tok.text not in "-'&"
        low = tok.low
        if low in lexicon.DETERMINERS:
            return False
        if low in lexicon.BOUNDARIES:
            return True
        if low.endswith("ing") and len(low) > 4 and low not in lexicon.ING_NOUNS:
            return not (concept_keys(low) & self.noun_keys)
        return False

    def _is_noun(self, tok: Token) -> bool:
        return tok.word and bool(concept_keys(tok.low) & self.noun_keys)

    # -- phrases
    def _phrase_start(self, first: int) -> int:
        start, j = first, first - 1
        while j >= 0 and first - j < MAX_PHRASE_WORDS:
            tok = self.tokens[j]
            if tok.word and tok.low in lexicon.DETERMINERS:
                start = j
                break
            if self._is_boundary(tok) or not tok.word:
                break
            start = j
            j -= 1
        return start

    def _is_head(self, last: int) -> bool:
        nxt = last + 1
        if nxt >= len(self.tokens):
            return True
        tok = self.tokens[nxt]
        if not tok.word or self._is_boundary(tok) or tok.low in lexicon.DETERMINERS:
            return True
        if concept_keys(f"{self.tokens[last].low} {tok.low}") & self.noun_keys:
            return False  # "traffic" in "traffic light"
        return not self._is_noun(tok)  # "coffee" before "table" modifies it

    def _mentions(self) -> list[Mention]:
        out = []
        words = self.tokens
        for last in range(len(words)):
            for n in range(1, MAX_NGRAM + 1):
                first = last - n + 1
                if first < 0 or not all(t.word for t in words[first : last + 1]):
                    continue
                if any(self._is_boundary(t) or t.low in lexicon.DETERMINERS for t in words[first : last + 1]):
                    continue
                start = self._phrase_start(first)
                out.append(
                    Mention(
                        first=first,
                        last=last,
                        text=" ".join(t.low for t in words[first : last + 1]),
                        head=self._is_head(last),
                        phrase=self.text[words[start].start : words[last].end],
                        start=start,
                    )
                )
        return out

    def find(self, tag: str) -> tuple[list[Mention], list[Mention]]:
        """(head mentions, modifier-only mentions) of a tag in the prompt, by word, synonym or kind."""
        heads, modifiers = [], []
        for mention in self.mentions:
            if same_object(tag, mention.text):
                (heads if mention.head else modifiers).append(mention)
        return _outermost(heads), modifiers

    def objects(self) -> list[tuple[str, str]]:
        """The prompt's own objects, (name, noun phrase), in order: heads of noun phrases that the tables
        know as nouns, or that follow a determiner ("a zebra"), minus places and picture words."""
        found: list[tuple[str, str, int, int]] = []
        for mention in self.mentions:
            if not mention.head or mention.text in lexicon.PLACES or mention.text in lexicon.META_WORDS:
                continue
            keys = concept_keys(mention.text)
            if keys & _COLOR_KEYS:
                continue
            known = bool(keys & self.noun_keys)
            if not known:
                if mention.first != mention.last:
                    continue
                before = self.tokens[mention.first - 1] if mention.first > 0 else None
                if before is None or before.low not in lexicon.DETERMINERS or mention.text.endswith("ly"):
                    continue
            name = _singular(mention.text, self.noun_keys)
            found.append((name, mention.phrase, mention.first, mention.last))
        # keep the longest n-gram ("teddy bear", not "bear" as well)
        kept = [f for f in found if not any(o is not f and o[2] <= f[2] and f[3] <= o[3] for o in found)]
        kept.sort(key=lambda f: f[2])
        return [(name, phrase) for name, phrase, _, _ in kept]

    def caption_of(self, mentions: list[Mention]) -> str:
        """The local caption of an object mentioned one or more times: the mention's noun phrase; for a
        coordination ("a red book and a blue book", "a man, a woman") the whole stretch of the prompt, so
        the caption is still a phrase of the prompt; otherwise the first mention's phrase."""
        mentions = sorted(mentions, key=lambda m: m.start)
        first = last = mentions[0]
        for m in mentions[1:]:
            between = self.tokens[last.last + 1 : m.start]
            if m.start > last.last and all(t.low in ("and", "or", ",", "&") for t in between):
                last = m
            else:
                break
        return self.text[self.tokens[first.start].start : self.tokens[last.last].end]


def _outermost(mentions: list[Mention]) -> list[Mention]:
    """Drop a mention contained in a longer one at the same end ("bear" inside "teddy bear")."""
    keep = []
    for m in mentions:
        if not any(o is not m and o.last == m.last and o.first < m.first for o in mentions):
            keep.append(m)
    return keep


def _singular(text: str, noun_keys: frozenset[str]) -> str:
    for candidate in sorted(lexicon.lemma_candidates(text), key=len):
        if candidate != text and candidate in noun_keys:
            return candidate
    return text


def default_caption(tag: str) -> str:
    """A caption for a tag the prompt does not describe: "a desk", "an apple", "grass"."""
    name = tag.strip()
    low = normalize_tag(name)
    if low in lexicon.MASS_NOUNS or low in lexicon.COLORS:
        return name
    article = "an" if low[:1] in "aeiou" and not low.startswith(("uni", "use", "eu", "one")) else "a"
    return f"{article} {name}"


# ---------------------------------------------------------------- scorer
class OfflineScorer:
    """Scores tags against a prompt with the rules above. Deterministic, instant, no network."""

    source = "offline"

    def score(self, prompt: str, tags: list[str], check_cancel=None) -> ScoringResult:
        tags = unique_tags(tags)  # instant: nothing to cancel
        analysis = PromptAnalysis(prompt, extra_nouns=tags)
        entries, reasons = [], {}
        for tag in tags:
            score, caption, reason = self._score_one(analysis, tag)
            entries.append(TagScore(tag=tag, score=score, caption=caption))
            reasons[tag] = reason
        return ScoringResult(
            entries=entries,
            source=self.source,
            status=OFFLINE_STATUS,
            details={"reasons": reasons, "scenes": analysis.contexts},
        )

    @staticmethod
    def _score_one(analysis: PromptAnalysis, tag: str) -> tuple[float, str, str]:
        keys = concept_keys(tag)
        if keys & _COLOR_KEYS:
            return UNLIKELY, default_caption(tag), "a colour: an attribute, not an object"
        heads, modifiers = analysis.find(tag)
        if heads:
            how = (
                "named in the prompt"
                if any(concept_keys(m.text) & keys for m in heads)
                else "a kind named in the prompt"
            )
            return CERTAIN, analysis.caption_of(heads), how
        if (keys | ancestors(keys)) & analysis.related_keys:
            scenes = [n for n in analysis.contexts if (keys | ancestors(keys)) & _CONTEXT_KEYS[n][1]]
            return POSSIBLE, default_caption(tag), f"may appear in the {' / '.join(scenes)} scene"
        if modifiers:
            return POSSIBLE, default_caption(tag), "the prompt uses it as a modifier"
        return UNLIKELY, default_caption(tag), "not named in the prompt nor related to its scene"


def names_object(text: str, tag: str) -> bool:
    """Whether a phrase names the tag's object: the word, its singular or plural, a synonym, a kind or its category."""
    heads, modifiers = PromptAnalysis(text, extra_nouns=[tag]).find(tag)
    return bool(heads or modifiers)


def prompt_objects(prompt: str) -> list[tuple[str, str]]:
    """The objects a prompt names, as (name, noun phrase): "a red book and a yellow pen" ->
    [("book", "a red book"), ("pen", "a yellow pen")]."""
    return PromptAnalysis(prompt).objects()
