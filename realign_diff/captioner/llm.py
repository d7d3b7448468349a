"""The LLM scorer: per-tag scores and local captions from any OpenAI-compatible chat endpoint.

Works with OpenAI and with local servers that speak the same API (Ollama, llama.cpp's ``llama-server``,
vLLM, LM Studio...): only ``base_url`` and ``model`` change.

Configuration (first found wins, per setting; see the README, "LLM configuration"):

- base URL and model: the node's widgets when not empty, else ``REALIGN_DIFF_LLM_BASE_URL`` /
  ``REALIGN_DIFF_LLM_MODEL`` (``OPENAI_BASE_URL`` for the URL), else the config file, else
  OpenAI's ``https://api.openai.com/v1`` and ``gpt-4o-mini``.
- API key: ``REALIGN_DIFF_LLM_API_KEY``, else ``api_key`` in the config file, else ``OPENAI_API_KEY``.
  Never a widget (widgets are saved in workflows and in every image's metadata). The key is only sent
  to the *configured* endpoint (environment or config file): a base URL typed into a widget that points
  at another host gets no key, so a shared workflow cannot send your key elsewhere.
- config file ``realign_diff_llm.json``: the path in ``REALIGN_DIFF_LLM_CONFIG``, else the pack's own
  folder. Not ComfyUI's user folder: ComfyUI serves that folder over HTTP (``/userdata``).

Robustness: the answer is asked for as strict JSON (``response_format`` json_schema, then json_object,
then none, stepping down when a server rejects one), parsed tolerantly (code fences, ``<think>`` blocks,
text around the JSON), every field validated, invalid answers re-asked with the error, transient errors
retried with exponential backoff, each request bounded by a timeout. Good answers are cached by
(prompt, tags, model, base URL). When everything fails the offline scorer answers, and the status
says why: ``score`` never raises.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from .offline_scorer import OfflineScorer
from .scoring import ScoringResult, TagScore, TagScorer, normalize_tag, snap_score, unique_tags

log = logging.getLogger("RealignDiff")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
CONFIG_FILE_NAME = "realign_diff_llm.json"
ENV_CONFIG = "REALIGN_DIFF_LLM_CONFIG"
ENV_BASE_URL = "REALIGN_DIFF_LLM_BASE_URL"
ENV_MODEL = "REALIGN_DIFF_LLM_MODEL"
ENV_API_KEY = "REALIGN_DIFF_LLM_API_KEY"
OPENAI_API_KEY = "OPENAI_API_KEY"
OPENAI_BASE_URL = "OPENAI_BASE_URL"
PACK_ROOT = Path(__file__).resolve().parents[2]

SCORER_MODES = ("offline", "openai-compatible")
RESPONSE_FORMATS = ("auto", "json_schema", "json_object", "none")
MAX_CAPTION_CHARS = 200
NO_KEY = "no-key"  # sent to servers that need none (the openai client insists on some key)

# ---------------------------------------------------------------- the one prompt
SYSTEM_PROMPT = """\
You help an image generator follow its prompt. You get the text prompt of a generated image and the \
tags an image tagger found in that image. For EVERY tag give:
- "score": how likely that object belongs in the scene the prompt describes. 2 = certainly (the prompt \
names it, a synonym of it, or a kind of it); 0.5 = possibly (it fits the scene, but the prompt does not \
name it); 0 = unlikely (it does not belong in this scene).
- "caption": a short local caption of that object as the prompt wants it, using the prompt's own words \
for its attributes (colour, material, number, state). For an object the prompt does not describe, \
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
        return {"type": "json_schema", "json_schema": {"name": "tag_scores", "strict": True, "schema": response_schema(tags)}}
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


# ---------------------------------------------------------------- configuration
class ApiKey:
    """A secret that never prints: repr/str show ``***``; ``reveal()`` is called once, for the client."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey(***)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("an API key is not serialisable")


@dataclass(frozen=True)
class LLMSettings:
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    timeout: float = 30.0  # seconds per request
    retries: int = 2  # further attempts after the first
    backoff: float = 1.0  # seconds before the first retry, doubled after each
    response_format: str = "auto"  # auto | json_schema | json_object | none
    temperature: float | None = 0.0  # None: not sent


@dataclass
class ResolvedLLM:
    """Settings plus the key and where they came from. The key is not in ``settings``."""

    settings: LLMSettings
    api_key: ApiKey | None = field(default=None, repr=False)
    key_source: str = "none"
    config_path: str | None = None
    notes: list[str] = field(default_factory=list)  # config problems, a withheld key...


def config_search_paths(environ=None) -> list[Path]:
    environ = os.environ if environ is None else environ
    paths = []
    if environ.get(ENV_CONFIG):
        paths.append(Path(environ[ENV_CONFIG]).expanduser())
    paths.append(PACK_ROOT / CONFIG_FILE_NAME)
    return paths


def read_config(paths: list[Path]) -> tuple[dict, str | None, str | None]:
    """(settings, path, problem) from the first existing config file; a broken file gives ({}, path, why)."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return {}, str(path), f"{path} was ignored: {error}"
        if not isinstance(data, dict):
            return {}, str(path), f"{path} was ignored: it must hold a JSON object"
        return data, str(path), None
    return {}, None, None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url.strip())
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def display_url(url: str) -> str:
    """A URL without any user:password part, for messages."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return parts.geturl()


def resolve_llm(model: str = "", base_url: str = "", *, environ=None, config_paths=None, **overrides) -> ResolvedLLM:
    """Settings from widgets (``model``, ``base_url``; empty = not set), environment, config file, defaults.

    ``overrides`` (timeout, retries, backoff, response_format, temperature) win over the config file.
    """
    environ = os.environ if environ is None else environ
    data, path, problem = read_config(config_search_paths(environ) if config_paths is None else config_paths)
    notes = [problem] if problem else []

    def pick(*values):
        for value in values:
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    configured_url = pick(environ.get(ENV_BASE_URL), environ.get(OPENAI_BASE_URL), data.get("base_url")) or DEFAULT_BASE_URL
    url = pick(base_url) or configured_url
    values = {
        "base_url": url.rstrip("/"),
        "model": pick(model, environ.get(ENV_MODEL), data.get("model")) or DEFAULT_MODEL,
    }
    for name, kind in (("timeout", float), ("retries", int), ("backoff", float), ("temperature", float)):
        if name in data:
            try:
                values[name] = None if data[name] is None and name == "temperature" else kind(data[name])
            except (TypeError, ValueError):
                notes.append(f"{name}={data[name]!r} in {path} is not a number; the default was used")
    if "response_format" in data:
        if data["response_format"] in RESPONSE_FORMATS:
            values["response_format"] = data["response_format"]
        else:
            notes.append(f"response_format in {path} must be one of {RESPONSE_FORMATS}; 'auto' was used")
    values.update({k: v for k, v in overrides.items() if v is not None or k == "temperature"})
    settings = LLMSettings(**values)
    if settings.timeout <= 0 or settings.retries < 0 or settings.backoff < 0:
        notes.append("timeout must be > 0, retries and backoff >= 0; the defaults were used")
        settings = replace(settings, timeout=LLMSettings.timeout, retries=LLMSettings.retries, backoff=LLMSettings.backoff)

    key, key_source = None, "none"
    for source, value in ((ENV_API_KEY, environ.get(ENV_API_KEY)), ("config file", data.get("api_key")), (OPENAI_API_KEY, environ.get(OPENAI_API_KEY))):
        if isinstance(value, str) and value.strip():
            key, key_source = ApiKey(value.strip()), source
            break
    if key is not None and _origin(settings.base_url) != _origin(configured_url):
        notes.append(
            f"the API key is only sent to the configured endpoint ({display_url(configured_url)}); "
            f"{display_url(settings.base_url)} comes from the node, so it was called without a key"
        )
        key, key_source = None, "withheld"
    return ResolvedLLM(settings=settings, api_key=key, key_source=key_source, config_path=path, notes=notes)


# ---------------------------------------------------------------- cache
class ScoreCache:
    """Validated LLM answers by (prompt, tag set, model, base URL); least recently used dropped first."""

    def __init__(self, maxsize: int = 256):
        self.maxsize = maxsize
        self._data: OrderedDict[tuple, dict[str, TagScore]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(prompt: str, tags: list[str], model: str, base_url: str) -> tuple:
        return (" ".join(prompt.split()), tuple(sorted(normalize_tag(t) for t in tags)), model, base_url.rstrip("/"))

    def get(self, key: tuple) -> dict[str, TagScore] | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return None

    def put(self, key: tuple, entries: list[TagScore]) -> None:
        with self._lock:
            self._data[key] = {normalize_tag(e.tag): e for e in entries}
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


DEFAULT_CACHE = ScoreCache()
_FORMAT_MEMORY: dict[tuple[str, str], str] = {}  # (base_url, model) -> the response_format that server accepted
_FALLBACKS = [0]  # how many times an LLM answer was replaced by the fallback (see ``configuration_token``)


def configuration_token(environ=None) -> str:
    """Changes whenever a re-run could give another answer: after an LLM failure, or when the config
    file or the LLM environment variables change. Nodes return it from ``IS_CHANGED`` so ComfyUI does
    not keep serving a fallback result from its cache. Holds no secret (only whether a key is set)."""
    environ = os.environ if environ is None else environ
    parts = [str(_FALLBACKS[0])]
    for name in (ENV_BASE_URL, OPENAI_BASE_URL, ENV_MODEL, ENV_CONFIG):
        parts.append(environ.get(name, ""))
    parts.append("key" if environ.get(ENV_API_KEY) or environ.get(OPENAI_API_KEY) else "nokey")
    for path in config_search_paths(environ):
        try:
            stat = path.stat()
            parts.append(f"{path}:{stat.st_mtime_ns}:{stat.st_size}")
        except OSError:
            parts.append(f"{path}:-")
    return "|".join(parts)


# ---------------------------------------------------------------- the scorer
_SECRET_PATTERNS = (re.compile(r"\bsk-[A-Za-z0-9_\-*.]{6,}"), re.compile(r"(?i)bearer\s+\S+"))  # OpenAI-style keys


class _Fatal(Exception):
    """An error no retry fixes (authentication, unknown model)."""


class _Rejected(Exception):
    """HTTP 400/422: the server refused a request parameter."""


class _Retryable(Exception):
    """Timeouts, connection errors, HTTP 429 and 5xx."""


class LLMScorer:
    """Scores tags with an OpenAI-compatible chat model; falls back to ``fallback`` (the offline scorer)
    when no valid answer comes. ``score`` never raises."""

    def __init__(self, llm: ResolvedLLM, fallback: TagScorer | None = None, cache: ScoreCache | None = DEFAULT_CACHE, sleep=time.sleep):
        self.llm = llm
        self.fallback = fallback or OfflineScorer()
        self.cache = cache
        self._sleep = sleep
        self._client = None

    @property
    def settings(self) -> LLMSettings:
        return self.llm.settings

    @property
    def source(self) -> str:
        return f"llm:{self.settings.model}"

    def __repr__(self) -> str:
        return f"LLMScorer(model={self.settings.model!r}, base_url={display_url(self.settings.base_url)!r}, key={self.llm.key_source})"

    # -- public
    def score(self, prompt: str, tags: list[str]) -> ScoringResult:
        tags = unique_tags(tags)
        try:
            return self._score(prompt, tags)
        except ImportError as error:
            return self._fall_back(prompt, tags, f"the openai package is missing ({error}): python -m pip install openai", 0, 0)
        except Exception as error:  # never reaches the user as an exception
            log.exception("[RealignDiff] LLM scorer failed unexpectedly")
            return self._fall_back(prompt, tags, f"unexpected error: {type(error).__name__}: {error}", 0, 0)

    # -- steps
    def _score(self, prompt: str, tags: list[str]) -> ScoringResult:
        s = self.settings
        notes = self._notes()
        if not tags:
            return ScoringResult([], self.source, self._redact(f"{self.source}: no tags to score{notes}"))
        key = ScoreCache.key(prompt, tags, s.model, s.base_url)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            entries = [replace(hit[normalize_tag(t)], tag=t) for t in tags]
            status = f"{self.source} at {display_url(s.base_url)}: cached answer (no request made){notes}"
            return ScoringResult(entries, self.source, self._redact(status), cached=True)
        if self.llm.api_key is None and _origin(s.base_url)[1] == "api.openai.com":
            reason = (f"no API key for {display_url(s.base_url)}: set {OPENAI_API_KEY} or {ENV_API_KEY}, or api_key "
                      f"in {CONFIG_FILE_NAME}")
            return self._fall_back(prompt, tags, reason, 0, 0)

        messages = build_messages(prompt, tags)
        mode = self._first_format()
        temperature = s.temperature
        total = 1 + max(0, s.retries)
        failures, requests, refusals, last_error = 0, 0, 0, "no attempt made"
        while failures < total:
            requests += 1
            try:
                text = self._request(messages, mode, tags, temperature)
                entries = validate_answer(extract_json(text), tags)
            except _Rejected as error:
                # a refused parameter is not a failed attempt: drop it and ask again at once
                refusals += 1
                if refusals > 4:
                    return self._fall_back(prompt, tags, f"the server refused the request: {error}", requests, failures)
                if temperature is not None and "temperature" in str(error).lower():
                    temperature = None
                elif mode != "none":
                    mode = RESPONSE_FORMATS[RESPONSE_FORMATS.index(mode) + 1]
                    _FORMAT_MEMORY[(s.base_url, s.model)] = mode
                elif temperature is not None:
                    temperature = None
                else:
                    return self._fall_back(prompt, tags, f"the server refused the request: {error}", requests, failures)
                continue
            except _Fatal as error:
                return self._fall_back(prompt, tags, str(error), requests, failures + 1)
            except AnswerError as error:
                last_error = f"invalid answer: {error}"
                messages = build_messages(prompt, tags) + [
                    {"role": "assistant", "content": str(text)[:2000]},
                    {"role": "user", "content": f"That answer was invalid: {error}. Reply again with only the JSON "
                     f"object, one entry for each of these tags: {json.dumps(tags, ensure_ascii=False)}."},
                ]
            except _Retryable as error:
                last_error = str(error)
            else:
                if self.cache is not None:
                    self.cache.put(key, entries)
                n = failures + 1
                status = f"{self.source} at {display_url(s.base_url)}: answered in {n} attempt{'s' if n > 1 else ''}{notes}"
                return ScoringResult(entries, self.source, self._redact(status), attempts=requests)
            failures += 1
            if failures < total:
                self._sleep(min(s.backoff * 2 ** (failures - 1), 30.0))
        return self._fall_back(prompt, tags, f"last error: {last_error}", requests, failures)

    def _fall_back(self, prompt, tags, reason: str, requests: int, failures: int) -> ScoringResult:
        """The fallback scorer's answer, with a status saying why the LLM's was not used."""
        _FALLBACKS[0] += 1
        result = self.fallback.score(prompt, tags)
        tried = f" failed after {failures} attempt{'s' if failures != 1 else ''}" if failures else " was not used"
        status = (f"{self.source} at {display_url(self.settings.base_url)}{tried} ({reason}); scores and "
                  f"captions come from the {result.source} scorer{self._notes()}")
        result.status = self._redact(status)
        result.attempts = requests
        result.details = {**result.details, "llm_error": self._redact(reason)}
        log.warning("[RealignDiff] %s", result.status)
        return result

    def _notes(self) -> str:
        return "".join(f"; note: {n}" for n in self.llm.notes)

    def _first_format(self) -> str:
        s = self.settings
        if s.response_format != "auto":
            return s.response_format
        return _FORMAT_MEMORY.get((s.base_url, s.model), "json_schema")

    def _redact(self, text: str) -> str:
        if self.llm.api_key is not None and self.llm.api_key.reveal():
            text = text.replace(self.llm.api_key.reveal(), "***")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub("***", text)
        return text

    # -- HTTP
    def _get_client(self):
        if self._client is None:
            import openai

            key = self.llm.api_key.reveal() if self.llm.api_key is not None else NO_KEY
            self._client = openai.OpenAI(api_key=key, base_url=self.settings.base_url, timeout=self.settings.timeout, max_retries=0)
        return self._client

    def _request(self, messages, mode: str, tags: list[str], temperature) -> str | None:
        import openai

        s = self.settings
        kwargs = {"model": s.model, "messages": messages}
        if (response_format := _response_format(mode, tags)) is not None:
            kwargs["response_format"] = response_format
        if temperature is not None:
            kwargs["temperature"] = temperature
        try:
            completion = self._get_client().chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            raise _Retryable(f"the request timed out after {s.timeout:g} s") from None
        except openai.APIConnectionError as error:
            raise _Retryable(f"could not connect to {display_url(s.base_url)} ({_cause(error)})") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            raise _Fatal(f"authentication failed (HTTP {error.status_code}): {_api_message(error)}") from None
        except openai.NotFoundError as error:
            raise _Fatal(f"model {s.model!r} or its endpoint was not found (HTTP 404): {_api_message(error)}") from None
        except (openai.BadRequestError, openai.UnprocessableEntityError) as error:
            raise _Rejected(f"HTTP {error.status_code}: {_api_message(error)}") from None
        except openai.APIStatusError as error:
            if error.status_code == 429 or error.status_code >= 500:
                raise _Retryable(f"HTTP {error.status_code}: {_api_message(error)}") from None
            raise _Fatal(f"HTTP {error.status_code}: {_api_message(error)}") from None
        except openai.APIError as error:  # e.g. a 200 whose body is not a chat completion
            raise _Retryable(f"{type(error).__name__}: {error}") from None
        choices = getattr(completion, "choices", None)
        if not choices:
            raise AnswerError("the response had no choices")
        return choices[0].message.content


def _api_message(error) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:300]
    return str(getattr(error, "message", error))[:300]


def _cause(error) -> str:
    cause = error.__cause__ or error.__context__
    return f"{type(cause).__name__}: {cause}"[:200] if cause else "connection error"


def build_scorer(mode: str = "offline", model: str = "", base_url: str = "", cache: ScoreCache | None = DEFAULT_CACHE, **overrides) -> TagScorer:
    """The scorer a node asks for: ``"offline"`` or ``"openai-compatible"`` (configured as above)."""
    if mode == "offline":
        return OfflineScorer()
    if mode != "openai-compatible":
        raise ValueError(f"unknown scorer {mode!r}; expected one of {SCORER_MODES}")
    return LLMScorer(resolve_llm(model, base_url, **overrides), cache=cache)
