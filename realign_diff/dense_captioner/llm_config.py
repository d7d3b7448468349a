"""Where the LLM scorer's endpoint, model and key come from (see ``llm`` and the README)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

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
RESPONSE_FORMATS = ("auto", "json_schema", "json_object", "none")


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
    """A URL without any user:password part, query or fragment (where keys can hide), for messages."""
    parts = urlsplit(url)._replace(query="", fragment="")
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

    configured_url = (
        pick(environ.get(ENV_BASE_URL), environ.get(OPENAI_BASE_URL), data.get("base_url")) or DEFAULT_BASE_URL
    )
    # OPENAI_API_KEY belongs to OpenAI: it goes to api.openai.com, or to a URL paired with it in OPENAI_BASE_URL
    openai_key_allowed = _origin(configured_url)[1] == _origin(DEFAULT_BASE_URL)[1] or (
        not pick(environ.get(ENV_BASE_URL)) and configured_url == pick(environ.get(OPENAI_BASE_URL))
    )
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
        settings = replace(
            settings, timeout=LLMSettings.timeout, retries=LLMSettings.retries, backoff=LLMSettings.backoff
        )

    key, key_source = None, "none"
    candidates = [(ENV_API_KEY, environ.get(ENV_API_KEY)), ("config file", data.get("api_key"))]
    if openai_key_allowed:
        candidates.append((OPENAI_API_KEY, environ.get(OPENAI_API_KEY)))
    for source, value in candidates:
        if isinstance(value, str) and value.strip():
            key, key_source = ApiKey(value.strip()), source
            break
    if key is None and not openai_key_allowed and pick(environ.get(OPENAI_API_KEY)):
        notes.append(
            f"{OPENAI_API_KEY} is only sent to OpenAI (or to {OPENAI_BASE_URL}); "
            f"{display_url(configured_url)} was called without a key: set {ENV_API_KEY} or api_key in "
            f"{CONFIG_FILE_NAME} if it needs one"
        )
    if key is not None and _origin(settings.base_url) != _origin(configured_url):
        notes.append(
            f"the API key is only sent to the configured endpoint ({display_url(configured_url)}); "
            f"{display_url(settings.base_url)} comes from the node, so it was called without a key"
        )
        key, key_source = None, "withheld"
    return ResolvedLLM(settings=settings, api_key=key, key_source=key_source, config_path=path, notes=notes)
