"""The LLM scorer against a real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions API."""

from __future__ import annotations

import json
import pickle

import pytest

from realign_diff.dense_captioner import llm as llm_module
from realign_diff.dense_captioner.llm import (
    SYSTEM_PROMPT,
    AnswerError,
    LLMScorer,
    ScoreCache,
    build_scorer,
    extract_json,
    resolve_llm,
    validate_answer,
)
from realign_diff.dense_captioner.offline_scorer import OfflineScorer
from realign_diff.dense_captioner.scoring import TagScore, snap_score
from realign_testkit.llm_stub import Reply, StubLLMServer, answer

SECRET = "sk-test-SECRETKEY0123456789"
PROMPT = "a red book and a yellow pen"
TAGS = ["book", "pen", "desk", "banana"]
GOOD = [
    ("book", 2, "a red book"),
    ("pen", 2, "a yellow pen"),
    ("desk", 0.5, "a wooden desk"),
    ("banana", 0, "a banana"),
]


@pytest.fixture
def server():
    with StubLLMServer() as stub:
        yield stub


@pytest.fixture(autouse=True)
def _fresh_format_memory():
    llm_module._FORMAT_MEMORY.clear()
    yield
    llm_module._FORMAT_MEMORY.clear()


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def make_scorer(server, *, retries=2, timeout=2.0, key=SECRET, widget_url="", cache=None, **overrides):
    environ = {"REALIGN_DIFF_LLM_BASE_URL": server.url}
    if key:
        environ["REALIGN_DIFF_LLM_API_KEY"] = key
    resolved = resolve_llm(
        "stub-model",
        widget_url,
        environ=environ,
        config_paths=[],
        timeout=timeout,
        retries=retries,
        backoff=0.01,
        **overrides,
    )
    sleeps = Sleeps()
    scorer = LLMScorer(resolved, cache=cache if cache is not None else ScoreCache(), sleep=sleeps)
    return scorer, sleeps


def entries_of(result):
    return [(e.tag, e.score, e.caption) for e in result.entries]


# ---------------------------------------------------------------- the HTTP paths
def test_good_json_answer_is_used_and_the_request_is_well_formed(server):
    server.queue(Reply(content=answer(GOOD)))
    scorer, sleeps = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    assert entries_of(result) == [(t, float(s), c) for t, s, c in GOOD]
    assert result.source == "llm:stub-model" and not result.cached
    assert result.attempts == 1 and sleeps == []
    assert result.status == f"llm:stub-model at {server.url}: answered in 1 attempt"
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    body = request.body
    assert body["model"] == "stub-model" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert json.loads(body["messages"][1]["content"]) == {"prompt": PROMPT, "tags": TAGS}
    schema = body["response_format"]["json_schema"]["schema"]
    assert body["response_format"]["type"] == "json_schema"
    assert schema["properties"]["objects"]["items"]["properties"]["tag"]["enum"] == TAGS


def test_fenced_json_with_prose_around_it_is_parsed(server):
    reply = "Sure! Here are the scores:\n```json\n" + answer(GOOD) + "\n```\nLet me know if you need more."
    server.queue(Reply(content=reply))
    scorer, _ = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    assert result.source == "llm:stub-model"
    assert entries_of(result)[1] == ("pen", 2.0, "a yellow pen")


def test_garbage_is_retried_with_the_error_then_falls_back_to_offline(server):
    server.default = Reply(content="I am sorry, I cannot help with scoring objects today.")
    scorer, sleeps = make_scorer(server, retries=2)
    result = scorer.score(PROMPT, TAGS)  # must not raise
    assert len(server.requests) == 3 and result.attempts == 3
    assert sleeps == pytest.approx([0.01, 0.02])  # exponential backoff
    assert result.source == "offline"
    assert result.status.startswith(
        f"llm:stub-model at {server.url} failed after 3 attempts (last error: invalid answer:"
    )
    assert "scores and captions come from the offline scorer" in result.status
    assert entries_of(result) == entries_of(OfflineScorer().score(PROMPT, TAGS))
    # the retry tells the model what was wrong
    retry_messages = server.requests[1].body["messages"]
    assert retry_messages[2]["role"] == "assistant" and "cannot help" in retry_messages[2]["content"]
    assert "That answer was invalid" in retry_messages[3]["content"] and '"banana"' in retry_messages[3]["content"]


def test_http_500_is_retried_and_a_later_good_answer_wins(server):
    server.queue(Reply(status=500, error="internal error"), Reply(content=answer(GOOD)))
    scorer, sleeps = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    assert result.source == "llm:stub-model"
    assert result.status.endswith("answered in 2 attempts")
    assert len(server.requests) == 2 and sleeps == pytest.approx([0.01])


def test_http_500_every_time_falls_back_with_the_status_code(server):
    server.default = Reply(status=500, error="internal error")
    scorer, _ = make_scorer(server, retries=1)
    result = scorer.score(PROMPT, TAGS)
    assert len(server.requests) == 2
    assert result.source == "offline"
    assert "failed after 2 attempts (last error: HTTP 500: internal error)" in result.status


def test_timeout_is_retried_then_falls_back(server):
    server.default = Reply(delay=1.5, content=answer(GOOD))
    scorer, sleeps = make_scorer(server, retries=1, timeout=0.3)
    result = scorer.score(PROMPT, TAGS)
    assert len(server.requests) == 2 and result.attempts == 2 and len(sleeps) == 1
    assert result.source == "offline"
    assert "failed after 2 attempts (last error: the request timed out after 0.3 s)" in result.status
    assert entries_of(result)[0] == ("book", 2.0, "a red book")


def test_a_wrong_score_is_rejected_and_asked_again(server):
    bad = [("book", 1, "a red book")] + GOOD[1:]
    server.queue(Reply(content=answer(bad)), Reply(content=answer(GOOD)))
    scorer, _ = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    assert result.source == "llm:stub-model" and result.status.endswith("answered in 2 attempts")
    assert "score 1 is not one of 2, 0.5, 0" in server.requests[1].body["messages"][3]["content"]


def test_a_missing_tag_is_rejected_and_asked_again(server):
    server.queue(Reply(content=answer(GOOD[:3])), Reply(content=answer(GOOD)))
    scorer, _ = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    assert result.source == "llm:stub-model" and len(server.requests) == 2
    assert "no answer for the tag(s) ['banana']" in server.requests[1].body["messages"][3]["content"]


def test_a_server_refusing_response_format_is_asked_without_it(server):
    def refuse_schemas(request):
        if request.body.get("response_format", {}).get("type") == "json_schema":
            return Reply(status=400, error="response_format json_schema is not supported")
        return Reply(content=answer(GOOD))

    server.default = refuse_schemas
    scorer, sleeps = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    assert result.source == "llm:stub-model" and result.status.endswith("answered in 1 attempt")
    assert [r.body.get("response_format", {}).get("type") for r in server.requests] == ["json_schema", "json_object"]
    assert sleeps == []  # a refused parameter is not a failure to back off from
    scorer.score("a blue book", TAGS)  # the same server is asked in the accepted format first
    assert server.requests[-1].body["response_format"] == {"type": "json_object"}


def test_a_server_refusing_temperature_is_asked_without_it(server):
    def refuse_temperature(request):
        if "temperature" in request.body:
            return Reply(status=400, error="Unsupported value: 'temperature' does not support 0")
        return Reply(content=answer(GOOD))

    server.default = refuse_temperature
    scorer, _ = make_scorer(server)
    assert scorer.score(PROMPT, TAGS).source == "llm:stub-model"
    assert "temperature" not in server.requests[-1].body


def test_authentication_failure_is_not_retried_and_the_key_is_not_echoed(server):
    server.default = Reply(status=401, error=f"Incorrect API key provided: {SECRET}.")
    scorer, sleeps = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    assert len(server.requests) == 1 and sleeps == []
    assert result.source == "offline"
    assert "failed after 1 attempt (authentication failed (HTTP 401)" in result.status
    assert SECRET not in result.status and SECRET not in json.dumps(result.to_dict())
    assert SECRET[:12] not in result.status


def test_unreachable_server_falls_back():
    with StubLLMServer() as stub:
        url = stub.url
    resolved = resolve_llm(
        "m", "", environ={"REALIGN_DIFF_LLM_BASE_URL": url}, config_paths=[], timeout=0.5, retries=1, backoff=0
    )
    result = LLMScorer(resolved, cache=ScoreCache(), sleep=lambda s: None).score(PROMPT, TAGS)
    assert result.source == "offline" and "could not connect" in result.status


# ---------------------------------------------------------------- cache
def test_cache_answers_the_same_question_without_a_request(server):
    server.queue(Reply(content=answer(GOOD)))
    cache = ScoreCache()
    scorer, _ = make_scorer(server, cache=cache)
    first = scorer.score(PROMPT, TAGS)
    second = scorer.score(PROMPT, list(reversed(TAGS)))  # same tag set, another order
    assert len(server.requests) == 1
    assert second.cached and second.attempts == 0 and "cached answer (no request made)" in second.status
    assert second.source == "llm:stub-model"
    assert entries_of(second) == list(reversed(entries_of(first)))
    other_model, _ = make_scorer(server, cache=cache)
    other_model.llm.settings = llm_module.replace(other_model.llm.settings, model="other-model")
    server.queue(Reply(content=answer(GOOD)))
    assert not other_model.score(PROMPT, TAGS).cached  # the model is part of the key
    assert len(server.requests) == 2


def test_failures_are_not_cached(server):
    server.queue(Reply(content="garbage"), Reply(content=answer(GOOD)))
    cache = ScoreCache()
    scorer, _ = make_scorer(server, retries=0, cache=cache)
    assert scorer.score(PROMPT, TAGS).source == "offline"
    assert scorer.score(PROMPT, TAGS).source == "llm:stub-model"
    assert len(server.requests) == 2


# ---------------------------------------------------------------- configuration and the key
def test_no_key_for_openai_skips_the_request_and_says_how_to_set_one():
    resolved = resolve_llm("", "", environ={}, config_paths=[])
    assert resolved.settings.base_url == "https://api.openai.com/v1" and resolved.settings.model == "gpt-4o-mini"
    result = LLMScorer(resolved, cache=ScoreCache()).score(PROMPT, TAGS)
    assert result.source == "offline" and result.attempts == 0
    assert "was not used (no API key for https://api.openai.com/v1: set OPENAI_API_KEY" in result.status


def test_key_is_withheld_from_a_base_url_typed_into_the_node(server):
    server.queue(Reply(content=answer(GOOD)))
    # the configured endpoint is OpenAI's; the node's widget points elsewhere
    resolved = resolve_llm("stub-model", server.url, environ={"OPENAI_API_KEY": SECRET}, config_paths=[], timeout=2)
    assert resolved.api_key is None and resolved.key_source == "withheld"
    result = LLMScorer(resolved, cache=ScoreCache()).score(PROMPT, TAGS)
    assert result.source == "llm:stub-model"
    assert server.requests[0].headers["authorization"] == "Bearer no-key"
    assert "the API key is only sent to the configured endpoint (https://api.openai.com/v1)" in result.status


def test_config_file_settings_and_key_precedence(tmp_path, server):
    config = tmp_path / "realign_diff_llm.json"
    config.write_text(
        json.dumps(
            {
                "base_url": server.url,
                "model": "cfg-model",
                "api_key": "sk-from-config-000000",
                "timeout": 7,
                "retries": 4,
                "response_format": "json_object",
                "temperature": None,
            }
        )
    )
    resolved = resolve_llm("", "", environ={"OPENAI_API_KEY": SECRET}, config_paths=[config])
    s = resolved.settings
    assert (s.base_url, s.model, s.timeout, s.retries, s.response_format, s.temperature) == (
        server.url,
        "cfg-model",
        7.0,
        4,
        "json_object",
        None,
    )
    assert resolved.key_source == "config file" and resolved.api_key.reveal() == "sk-from-config-000000"
    # the pack-specific variable beats the file, the file beats OPENAI_API_KEY; a widget beats both for the model
    env = {"REALIGN_DIFF_LLM_API_KEY": "sk-pack-var-111111", "OPENAI_API_KEY": SECRET}
    resolved = resolve_llm("widget-model", "", environ=env, config_paths=[config])
    assert resolved.key_source == "REALIGN_DIFF_LLM_API_KEY" and resolved.settings.model == "widget-model"
    # the config file is found through REALIGN_DIFF_LLM_CONFIG
    resolved = resolve_llm("", "", environ={"REALIGN_DIFF_LLM_CONFIG": str(config)})
    assert resolved.settings.model == "cfg-model" and resolved.config_path == str(config)
    server.queue(Reply(content=answer(GOOD)))
    LLMScorer(resolved, cache=ScoreCache()).score(PROMPT, TAGS)
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-config-000000"
    assert server.requests[0].body["response_format"] == {"type": "json_object"}
    assert "temperature" not in server.requests[0].body


def test_a_broken_config_file_is_reported_not_raised(tmp_path):
    config = tmp_path / "realign_diff_llm.json"
    config.write_text("{not json")
    resolved = resolve_llm("", "", environ={}, config_paths=[config])
    assert resolved.settings.base_url == "https://api.openai.com/v1"
    assert any("was ignored" in n for n in resolved.notes)
    result = LLMScorer(resolved, cache=ScoreCache()).score(PROMPT, TAGS)
    assert result.source == "offline" and "was ignored" in result.status


def test_the_key_never_shows_in_reprs_results_or_pickles(server):
    server.queue(Reply(content=answer(GOOD)))
    scorer, _ = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    for text in (repr(scorer), repr(scorer.llm), str(scorer.llm.api_key), result.status, json.dumps(result.to_dict())):
        assert SECRET not in text
    with pytest.raises(TypeError):
        pickle.dumps(scorer.llm.api_key)


def test_build_scorer_modes():
    assert isinstance(build_scorer("offline"), OfflineScorer)
    assert isinstance(build_scorer("openai-compatible", "m", "http://127.0.0.1:9/v1"), LLMScorer)
    with pytest.raises(ValueError):
        build_scorer("gpt")


# ---------------------------------------------------------------- parsing and validation (no server)
@pytest.mark.parametrize(
    "text",
    [
        answer(GOOD),
        "```json\n" + answer(GOOD) + "\n```",
        "```\n" + answer(GOOD) + "```",
        "<think>the user wants {scores}</think>\n" + answer(GOOD),
        "Here you go: " + answer(GOOD) + " Hope this helps {really}.",
        "```json\n" + answer(GOOD),  # unterminated fence
    ],
)
def test_extract_json_tolerates_fences_and_surrounding_text(text):
    assert validate_answer(extract_json(text), TAGS)[0] == TagScore("book", 2.0, "a red book")


@pytest.mark.parametrize("text", ["", "   ", None, "no json here", "{broken", "```json\n```"])
def test_extract_json_rejects_answers_without_json(text):
    with pytest.raises(AnswerError):
        extract_json(text)


def test_validate_accepts_the_other_shapes_and_ignores_extra_tags():
    as_list = [
        {"tag": "Book", "score": "2", "caption": " a red   book "},
        {"tag": "pen", "score": 0.5, "caption": "a pen"},
        {"tag": "lamp", "score": 2, "caption": "a lamp"},
    ]
    got = validate_answer(as_list, ["book", "pen"])
    assert got == [TagScore("book", 2.0, "a red book"), TagScore("pen", 0.5, "a pen")]
    as_map = {"book": {"score": 0, "caption": "a book"}, "pen": {"score": 2, "caption": "a pen"}}
    assert [e.score for e in validate_answer(as_map, ["book", "pen"])] == [0.0, 2.0]


@pytest.mark.parametrize(
    "answer_obj, message",
    [
        ({"objects": [{"tag": "book", "score": 1, "caption": "x"}]}, "not one of 2, 0.5, 0"),
        ({"objects": [{"tag": "book", "score": "high", "caption": "x"}]}, "not a number"),
        ({"objects": [{"tag": "book", "score": True, "caption": "x"}]}, "not a number"),
        ({"objects": [{"tag": "book", "score": 2, "caption": ""}]}, "non-empty string"),
        ({"objects": [{"tag": "book", "score": 2, "caption": None}]}, "non-empty string"),
        ({"objects": [{"tag": "book", "score": 2, "caption": "x" * 201}]}, "longer than 200"),
        ({"objects": [{"score": 2, "caption": "x"}]}, '"tag"'),
        ({"objects": ["book"]}, "is not an object"),
        ({"objects": []}, "no answer for the tag(s) ['book']"),
        ({"result": "ok"}, "must be a JSON object"),
        (42, "must be a JSON object"),
    ],
)
def test_validate_rejects_every_bad_field(answer_obj, message):
    with pytest.raises(AnswerError, match=None) as info:
        validate_answer(answer_obj, ["book"])
    assert message in str(info.value)


def test_snap_score():
    assert [snap_score(v) for v in (2, 2.0, "0.5", 0.5004, 0, "0", 1.9995)] == [2.0, 2.0, 0.5, 0.5, 0.0, 0.0, 2.0]
    for bad in (1, 0.8, -0.5, 3, float("nan"), None, "two"):
        with pytest.raises(ValueError):
            snap_score(bad)


def test_configuration_token_changes_after_a_fallback_and_a_config_edit(tmp_path, server):
    config = tmp_path / "realign_diff_llm.json"
    env = {"REALIGN_DIFF_LLM_CONFIG": str(config), "OPENAI_API_KEY": SECRET}
    before = llm_module.configuration_token(env)
    assert SECRET not in before
    assert llm_module.configuration_token(env) == before
    config.write_text('{"model": "x"}')
    after_edit = llm_module.configuration_token(env)
    assert after_edit != before
    server.default = Reply(status=500, error="down")
    scorer, _ = make_scorer(server, retries=0)
    scorer.score(PROMPT, TAGS)
    assert llm_module.configuration_token(env) != after_edit
    server.default = Reply(content=answer(GOOD))
    token = llm_module.configuration_token(env)
    scorer.score(PROMPT, TAGS)
    assert llm_module.configuration_token(env) == token  # a good answer changes nothing


def test_openai_key_is_not_sent_to_another_endpoint(server):
    server.queue(Reply(content=answer(GOOD)))
    environ = {"REALIGN_DIFF_LLM_BASE_URL": server.url, "OPENAI_API_KEY": SECRET}
    resolved = resolve_llm("stub-model", "", environ=environ, config_paths=[], timeout=2)
    assert resolved.api_key is None
    result = LLMScorer(resolved, cache=ScoreCache()).score(PROMPT, TAGS)
    assert result.source == "llm:stub-model"
    assert SECRET not in server.requests[0].headers.get("authorization", "")
    assert "OPENAI_API_KEY is only sent to OpenAI" in result.status and "REALIGN_DIFF_LLM_API_KEY" in result.status


def test_openai_key_goes_to_the_url_paired_with_it_in_openai_base_url(server):
    server.queue(Reply(content=answer(GOOD)))
    environ = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": SECRET}
    resolved = resolve_llm("stub-model", "", environ=environ, config_paths=[], timeout=2)
    assert resolved.key_source == "OPENAI_API_KEY"
    LLMScorer(resolved, cache=ScoreCache()).score(PROMPT, TAGS)
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_a_reply_without_choices_is_retried(server):
    server.queue(
        Reply(
            raw=json.dumps(
                {"id": "x", "object": "chat.completion", "created": 0, "model": "stub-model", "choices": []}
            ).encode()
        ),
        Reply(content=answer(GOOD)),
    )
    scorer, _ = make_scorer(server)
    result = scorer.score(PROMPT, TAGS)
    assert result.source == "llm:stub-model" and result.status.endswith("answered in 2 attempts")


def test_urls_in_messages_lose_credentials_and_queries():
    from realign_diff.dense_captioner.llm_config import display_url

    assert display_url("http://user:pw@host:8080/v1?api_key=sk-abc#frag") == "http://host:8080/v1"
