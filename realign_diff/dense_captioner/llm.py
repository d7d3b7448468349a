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
retried with exponential backoff, each request bounded by a timeout. A caption goes into the second
pass's prompt, so one that is not a short phrase naming its tag is replaced by the offline scorer's
(``caption_problem``). Good answers are cached by (prompt, tags, model, base URL). When everything
fails the offline scorer answers, and the status and warnings say why: ``score`` never raises, except
Cancel: the ``check_cancel`` it is given is called while a request is in flight and during backoff, and
what it raises goes through (no fallback).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import replace

from .llm_answer import (
    SYSTEM_PROMPT,
    AnswerError,
    _response_format,
    build_messages,
    caption_problem,
    extract_json,
    validate_answer,
)
from .llm_config import (
    CONFIG_FILE_NAME,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_CONFIG,
    ENV_MODEL,
    OPENAI_API_KEY,
    OPENAI_BASE_URL,
    RESPONSE_FORMATS,
    LLMSettings,
    ResolvedLLM,
    _origin,
    config_search_paths,
    display_url,
    resolve_llm,
)
from .offline_scorer import OfflineScorer
from .scoring import ScoringResult, TagScore, TagScorer, normalize_tag, unique_tags

__all__ = [
    "SYSTEM_PROMPT",
    "AnswerError",
    "extract_json",
    "validate_answer",
    "resolve_llm",
    "LLMScorer",
    "ScoreCache",
    "build_scorer",
    "configuration_token",
    "SCORER_MODES",
]  # this module's face, parts included

log = logging.getLogger("RealignDiff")

SCORER_MODES = ("offline", "openai-compatible")
POLL_SECONDS = 0.1  # how often a request in flight or a backoff pause looks at Cancel
NO_KEY = "no-key"  # sent to servers that need none (the openai client insists on some key)


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
    return hashlib.sha256("|".join(parts).encode()).hexdigest()  # URLs may carry credentials: never show them


# ---------------------------------------------------------------- the scorer
_SECRET_PATTERNS = (re.compile(r"\bsk-[A-Za-z0-9_\-*.]{6,}"), re.compile(r"(?i)bearer\s+\S+"))  # OpenAI-style keys


class _Fatal(Exception):
    """An error no retry fixes (authentication, unknown model)."""


class _Rejected(Exception):
    """HTTP 400/422: the server refused a request parameter."""


class _Retryable(Exception):
    """Timeouts, connection errors, HTTP 429 and 5xx."""


class _Cancelled(Exception):
    """Carries the cancel check's own exception past ``score``'s catch-all: a Cancel never falls back."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _cancel_checker(check_cancel):
    if check_cancel is None:
        return None

    def check() -> None:
        try:
            check_cancel()
        except BaseException as error:
            raise _Cancelled(error) from None

    return check


class LLMScorer:
    """Scores tags with an OpenAI-compatible chat model; falls back to ``fallback`` (the offline scorer)
    when no valid answer comes. ``score`` never raises, but for what ``check_cancel`` raises."""

    def __init__(
        self,
        llm: ResolvedLLM,
        fallback: TagScorer | None = None,
        cache: ScoreCache | None = DEFAULT_CACHE,
        sleep=time.sleep,
    ):
        self.llm = llm
        self.fallback = fallback or OfflineScorer()
        self.cache = cache
        self._sleep = sleep
        self._client = None
        self._check = None  # the current ``score`` call's cancel check

    @property
    def settings(self) -> LLMSettings:
        return self.llm.settings

    @property
    def source(self) -> str:
        return f"llm:{self.settings.model}"

    def __repr__(self) -> str:
        return (
            f"LLMScorer(model={self.settings.model!r}, base_url={display_url(self.settings.base_url)!r}, "
            f"key={self.llm.key_source})"
        )

    # -- public
    def score(self, prompt: str, tags: list[str], check_cancel=None) -> ScoringResult:
        tags = unique_tags(tags)
        self._check = _cancel_checker(check_cancel)
        try:
            return self._score(prompt, tags)
        except _Cancelled as cancel:
            raise cancel.error from None
        except ImportError as error:
            return self._fall_back(
                prompt, tags, f"the openai package is missing ({error}): python -m pip install openai", 0, 0
            )
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
            return self._answered(prompt, entries, status, cached=True)
        if self.llm.api_key is None and _origin(s.base_url)[1] == "api.openai.com":
            reason = (
                f"no API key for {display_url(s.base_url)}: set {OPENAI_API_KEY} or {ENV_API_KEY}, or api_key "
                f"in {CONFIG_FILE_NAME}"
            )
            return self._fall_back(prompt, tags, reason, 0, 0)

        messages = build_messages(prompt, tags)
        mode = self._first_format()
        temperature = s.temperature
        total = 1 + max(0, s.retries)
        failures, requests, refusals, last_error = 0, 0, 0, "no attempt made"
        while failures < total:
            requests += 1
            text = None  # a request that fails before any reply leaves nothing to quote back
            try:
                text = self._ask(messages, mode, tags, temperature)
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
                messages = build_messages(prompt, tags)
                if text is not None:
                    messages += [
                        {"role": "assistant", "content": str(text)[:2000]},
                        {
                            "role": "user",
                            "content": f"That answer was invalid: {error}. Reply again with only the JSON "
                            f"object, one entry for each of these tags: {json.dumps(tags, ensure_ascii=False)}.",
                        },
                    ]
            except _Retryable as error:
                last_error = str(error)
            else:
                if self.cache is not None:
                    self.cache.put(key, entries)
                n = failures + 1
                status = (
                    f"{self.source} at {display_url(s.base_url)}: answered in {n} attempt{'s' if n > 1 else ''}{notes}"
                )
                return self._answered(prompt, entries, status, attempts=requests)
            failures += 1
            if failures < total:
                self._pause(min(s.backoff * 2 ** (failures - 1), 30.0))
        return self._fall_back(prompt, tags, f"last error: {last_error}", requests, failures)

    def _answered(self, prompt, entries: list[TagScore], status: str, **result) -> ScoringResult:
        """The LLM's answer, each caption that fails ``caption_problem`` replaced by the fallback scorer's."""
        problems = {e.tag: why for e in entries if (why := caption_problem(e.tag, e.caption))}
        warnings = []
        if problems:
            fallback = self.fallback.score(prompt, list(problems))
            by_tag = fallback.by_tag()
            warnings = [
                self._redact(
                    f"the LLM's caption for {e.tag!r} ({e.caption[:60]!r}) was not used: {problems[e.tag]}; "
                    f"the {fallback.source} scorer's {by_tag[e.tag].caption!r} was used instead"
                )
                for e in entries
                if e.tag in problems
            ]
            entries = [replace(e, caption=by_tag[e.tag].caption) if e.tag in problems else e for e in entries]
            status += f"; {len(problems)} caption(s) replaced by the {fallback.source} scorer's (see warnings)"
        return ScoringResult(entries, self.source, self._redact(status), warnings=warnings, **result)

    def _fall_back(self, prompt, tags, reason: str, requests: int, failures: int) -> ScoringResult:
        """The fallback scorer's answer, with a status saying why the LLM's was not used."""
        _FALLBACKS[0] += 1
        result = self.fallback.score(prompt, tags)
        tried = f" failed after {failures} attempt{'s' if failures != 1 else ''}" if failures else " was not used"
        status = (
            f"{self.source} at {display_url(self.settings.base_url)}{tried} ({reason}); scores and "
            f"captions come from the {result.source} scorer{self._notes()}"
        )
        result.status = self._redact(status)
        result.attempts = requests
        result.details = {**result.details, "llm_error": self._redact(reason)}
        result.warnings = [result.status]
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

    # -- waiting, with Cancel checked
    def _pause(self, seconds: float) -> None:
        """The backoff before a retry, in slices that each check Cancel first."""
        slices = max(1, math.ceil(seconds / POLL_SECONDS))
        for _ in range(slices):
            if self._check is not None:
                self._check()
            self._sleep(seconds / slices)

    def _ask(self, messages, mode: str, tags: list[str], temperature) -> str | None:
        """``_request``, in a worker thread while this one checks Cancel every ``POLL_SECONDS``: a cancelled
        request is left to end on its own timeout (its answer is dropped)."""
        if self._check is None:
            return self._request(messages, mode, tags, temperature)
        self._check()
        outcome: dict = {}
        done = threading.Event()

        def work():
            try:
                outcome["text"] = self._request(messages, mode, tags, temperature)
            except BaseException as error:  # handed to the waiting thread as is
                outcome["error"] = error
            finally:
                done.set()

        threading.Thread(target=work, name="realign-llm-request", daemon=True).start()
        while not done.wait(POLL_SECONDS):
            self._check()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["text"]

    # -- HTTP
    def _get_client(self):
        if self._client is None:
            import openai

            key = self.llm.api_key.reveal() if self.llm.api_key is not None else NO_KEY
            self._client = openai.OpenAI(
                api_key=key, base_url=self.settings.base_url, timeout=self.settings.timeout, max_retries=0
            )
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


def build_scorer(
    mode: str = "offline", model: str = "", base_url: str = "", cache: ScoreCache | None = DEFAULT_CACHE, **overrides
) -> TagScorer:
    """The scorer a node asks for: ``"offline"`` or ``"openai-compatible"`` (configured as above)."""
    if mode == "offline":
        return OfflineScorer()
    if mode != "openai-compatible":
        raise ValueError(f"unknown scorer {mode!r}; expected one of {SCORER_MODES}")
    return LLMScorer(resolve_llm(model, base_url, **overrides), cache=cache)
