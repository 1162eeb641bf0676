"""microverse_site.llm against a real local chat-completions server (tests.fakes.chat_server): no patched client."""
import json
import logging
import time
from decimal import Decimal

import pytest

from microverse_site import llm
from microverse_site.models import LLMCall
from tests.fakes.chat_server import (Answer, Delay, NotJSON, RateLimited, ServerError, Status, TooLarge)
from tests.fakes.fixtures import TEST_API_KEY, chat_server, llm_endpoint  # noqa: F401

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Say hello."}]


def text(answer: str) -> str:
    return answer


def ask(**kwargs):
    kwargs.setdefault("purpose", "task_prompt")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("validate", text)
    return llm.chat(**kwargs)


def only_call() -> LLMCall:
    calls = list(LLMCall.objects.all())
    assert len(calls) == 1, calls
    return calls[0]


def gaps(server) -> list[float]:
    times = [request.received_at for request in server.chat_requests()]
    return [later - earlier for earlier, later in zip(times, times[1:])]


# ------------------------------------------------------------------------------------------------ success


def test_success_records_model_tokens_cost_and_sends_the_key(llm_endpoint, settings):
    settings.LLM_MODELS = {"task_prompt": "gpt-4o-mini"}
    llm_endpoint.script(Answer("Hello there.", prompt_tokens=1200, completion_tokens=300))

    result = ask()

    assert result.value == result.text == "Hello there."
    assert (result.model, result.attempts, result.prompt_tokens, result.completion_tokens) == ("gpt-4o-mini", 1,
                                                                                                1200, 300)
    call = only_call()
    assert call.pk == result.call_id
    assert (call.purpose, call.model, call.status, call.attempts) == ("task_prompt", "gpt-4o-mini", "ok", 1)
    assert (call.prompt_tokens, call.completion_tokens) == (1200, 300)
    assert call.cost_usd == Decimal("0.000360")  # 1200 x 0.15 + 300 x 0.60 USD per million tokens
    assert call.base_url == llm_endpoint.url
    assert call.response_text == "Hello there." and call.error == ""
    assert len(call.request_hash) == 64 and call.request_hash == result.request_hash
    assert call.latency_ms >= 0
    [request] = llm_endpoint.chat_requests()
    assert request.path == "/v1/chat/completions"
    assert request.model == "gpt-4o-mini"
    assert request.messages == MESSAGES
    assert request.authorization == f"Bearer {TEST_API_KEY}"


def test_model_per_purpose_settings_then_environment_then_default(llm_endpoint, settings, monkeypatch):
    settings.LLM_MODELS = {"rubric_draft": "from-settings"}
    monkeypatch.setenv("LLM_MODEL_RUBRIC_DRAFT", "from-env-ignored")
    monkeypatch.setenv("LLM_MODEL_TASK_LEVEL", "from-env")
    monkeypatch.delenv("LLM_MODEL_CAPTION", raising=False)
    for purpose in ("rubric_draft", "task_level", "caption"):
        ask(purpose=purpose)
    assert [r.model for r in llm_endpoint.chat_requests()] == ["from-settings", "from-env", "gpt-4o"]
    assert list(LLMCall.objects.order_by("id").values_list("purpose", "model")) == [
        ("rubric_draft", "from-settings"), ("task_level", "from-env"), ("caption", "gpt-4o")]


def test_image_parts_reach_the_server(llm_endpoint):
    image = "data:image/jpeg;base64," + "A" * 40
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe the frames."},
                                             {"type": "image_url", "image_url": {"url": image}},
                                             {"type": "image_url", "image_url": {"url": image}}]}]
    ask(purpose="caption", messages=messages)
    [request] = llm_endpoint.chat_requests()
    assert request.image_urls == [image, image]
    assert request.text == "Describe the frames."


def test_cost_is_none_safe_and_matches_dated_model_names():
    assert llm.cost_usd("some-local-model", 1000, 1000) == Decimal("0")
    assert llm.cost_usd("gpt-4o", None, None) == Decimal("0")
    assert llm.cost_usd("gpt-4o-2024-08-06", 1_000_000, 0) == Decimal("2.500000")
    assert llm.cost_usd("gpt-4o-mini-2024-07-18", 0, 1_000_000) == Decimal("0.600000")  # longest prefix wins
    assert llm.cost_usd("x", 10, 10, {"x": (1.0, 2.0)}) == Decimal("0.000030")


def test_usage_missing_records_zero_tokens(llm_endpoint):
    # A server that omits usage: the SDK gives usage=None; the row says 0 tokens and 0 cost.
    llm_endpoint.when(lambda r: True, NotJSON(body=json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "no usage"}, "finish_reason": "stop"}],
    }), content_type="application/json"))
    result = ask()
    assert result.text == "no usage"
    call = only_call()
    assert (call.prompt_tokens, call.completion_tokens, call.cost_usd) == (0, 0, Decimal("0"))


# ------------------------------------------------------------------------------------------------ retries


def test_timeout_then_success(llm_endpoint, settings):
    settings.LLM_TIMEOUT_SECONDS = 0.3
    llm_endpoint.script(Delay(3), "made it")
    started = time.monotonic()
    result = ask()
    assert result.text == "made it"
    assert time.monotonic() - started >= 0.3
    assert len(llm_endpoint.chat_requests()) == 2
    call = only_call()
    assert (call.status, call.attempts) == ("ok", 2)


def test_timeouts_until_the_attempts_run_out(llm_endpoint, settings):
    settings.LLM_TIMEOUT_SECONDS = 0.2
    settings.LLM_MAX_ATTEMPTS = 2
    llm_endpoint.script(Delay(3), Delay(3), "too late")
    with pytest.raises(llm.LLMError) as caught:
        ask()
    assert caught.value.status == "error"
    assert "timed out after 0.2 s" in caught.value.reason and "gave up after 2 attempts" in caught.value.reason
    call = only_call()
    assert (call.status, call.attempts) == ("error", 2)
    assert call.error == caught.value.reason and caught.value.call_id == call.pk


def test_429_waits_for_retry_after(llm_endpoint, settings):
    settings.LLM_BACKOFF_SECONDS = 0.0
    llm_endpoint.script(RateLimited(retry_after=0.6), "after the wait")
    result = ask()
    assert result.text == "after the wait"
    [gap] = gaps(llm_endpoint)
    assert 0.6 <= gap < 2.0
    assert only_call().attempts == 2


def test_retry_after_is_capped(llm_endpoint, settings):
    settings.LLM_RETRY_AFTER_MAX_SECONDS = 0.2
    llm_endpoint.script(RateLimited(retry_after=30), "quick")
    assert ask().text == "quick"
    [gap] = gaps(llm_endpoint)
    assert 0.2 <= gap < 1.5


def test_5xx_retried_with_exponential_backoff(llm_endpoint, settings):
    settings.LLM_BACKOFF_SECONDS = 0.1
    llm_endpoint.script(ServerError(500), ServerError(503), "third time")
    assert ask().text == "third time"
    first, second = gaps(llm_endpoint)
    assert first >= 0.1 and second >= 0.2
    call = only_call()
    assert (call.status, call.attempts) == ("ok", 3)


def test_5xx_every_time_fails_with_the_reason(llm_endpoint, settings):
    settings.LLM_MAX_ATTEMPTS = 3
    llm_endpoint.when(lambda r: True, ServerError(502))
    with pytest.raises(llm.LLMError, match=r"HTTP 502: The server had an error.*gave up after 3 attempts"):
        ask()
    assert len(llm_endpoint.chat_requests()) == 3
    assert only_call().status == "error"


def test_other_4xx_are_not_retried(llm_endpoint):
    llm_endpoint.script(Status(400, {"error": {"message": "max_tokens is too large", "type": "invalid_request"}}))
    with pytest.raises(llm.LLMError, match="HTTP 400: max_tokens is too large"):
        ask()
    assert len(llm_endpoint.chat_requests()) == 1
    assert only_call().attempts == 1


def _frames(count: int) -> list[dict]:
    parts = [{"type": "text", "text": "Caption these frames."}]
    for i in range(count):
        parts.append({"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{i:02d}" + "Q" * 2000}})
    return [{"role": "user", "content": parts}]


def test_413_shrinks_the_request_and_resends(llm_endpoint):
    llm_endpoint.max_body_bytes = 7000  # room for about two frames, not eight
    result = ask(purpose="caption", messages=_frames(8), shrink=llm.halve_images)
    assert result.text == "OK"
    assert [len(r.image_urls) for r in llm_endpoint.chat_requests()] == [8, 4, 2]
    kept = llm_endpoint.chat_requests()[-1].image_urls
    assert [url[23:25] for url in kept] == ["00", "04"]
    call = only_call()
    assert (call.status, call.attempts) == ("ok", 3)


def test_413_without_a_way_to_shrink_fails(llm_endpoint):
    llm_endpoint.script(TooLarge())
    with pytest.raises(llm.LLMError, match="HTTP 413"):
        ask()
    llm_endpoint.max_body_bytes = 10
    with pytest.raises(llm.LLMError, match="nothing left to shrink"):
        ask(purpose="caption", messages=_frames(1), shrink=llm.halve_images)
    assert LLMCall.objects.filter(status="error").count() == 2


def test_a_body_that_is_not_json_is_retried(llm_endpoint):
    llm_endpoint.script(NotJSON(), NotJSON(body="{not json", content_type="application/json"), "proper")
    assert ask().text == "proper"
    assert only_call().attempts == 3


def test_a_body_that_is_never_json_fails(llm_endpoint, settings):
    settings.LLM_MAX_ATTEMPTS = 2
    llm_endpoint.when(lambda r: True, NotJSON())
    with pytest.raises(llm.LLMError, match="not chat-completion JSON"):
        ask()
    assert only_call().status == "error"


def test_no_endpoint_configured(db, settings):
    settings.OPENAI_BASE_URL = ""
    settings.OPENAI_API_KEY = ""
    with pytest.raises(llm.LLMError, match="no LLM endpoint is configured"):
        ask()
    call = only_call()
    assert (call.status, call.attempts) == ("error", 0)


# --------------------------------------------------------------------------------------------- validation


def wants_json_with_x(answer: str) -> int:
    try:
        data = json.loads(answer)
    except ValueError:
        raise ValueError("the answer is not JSON") from None
    if not isinstance(data, dict) or "x" not in data:
        raise ValueError('the object lacks "x"')
    return data["x"]


def test_invalid_answer_is_repaired_once(llm_endpoint):
    llm_endpoint.script("Sure! x is 3.", '{"x": 3}')
    result = ask(validate=wants_json_with_x)
    assert result.value == 3
    first, second = llm_endpoint.chat_requests()
    assert first.messages == MESSAGES
    assert second.messages[:2] == MESSAGES
    assert second.messages[2] == {"role": "assistant", "content": "Sure! x is 3."}
    assert second.messages[3]["role"] == "user"
    assert "the answer is not JSON" in second.messages[3]["content"]
    assert "format exactly" in second.messages[3]["content"]
    call = only_call()
    assert (call.status, call.attempts, call.response_text) == ("ok", 2, '{"x": 3}')


def test_invalid_after_the_repair_is_an_error_with_the_reason(llm_endpoint):
    llm_endpoint.script("no", '{"y": 1}', '{"x": 1}')
    with pytest.raises(llm.LLMError) as caught:
        ask(validate=wants_json_with_x)
    assert caught.value.status == "invalid"
    assert caught.value.reason == 'invalid answer: the object lacks "x"'
    assert llm_endpoint.pending == 1  # exactly one repair turn, no more
    call = only_call()
    assert (call.status, call.attempts, call.error, call.response_text) == (
        "invalid", 2, 'invalid answer: the object lacks "x"', '{"y": 1}')


def test_max_repairs_zero_fails_at_once(llm_endpoint):
    llm_endpoint.script("no", '{"x": 1}')
    with pytest.raises(llm.LLMError, match="invalid answer"):
        ask(validate=wants_json_with_x, max_repairs=0)
    assert len(llm_endpoint.chat_requests()) == 1


def test_a_crashing_validator_still_records_the_call(llm_endpoint):
    def broken(answer):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        ask(validate=broken)
    call = only_call()
    assert call.status == "error" and "internal error: KeyError" in call.error


def test_a_deferred_record_comes_back_unsaved_and_failures_are_still_written(llm_endpoint):
    llm_endpoint.script(Answer('{"x": 5}', prompt_tokens=10, completion_tokens=2), "no", "still no")
    result = ask(validate=wants_json_with_x, defer_record=True)
    assert (result.value, result.call_id) == (5, None) and LLMCall.objects.count() == 0  # nothing written yet
    row = result.unsaved_call
    assert (row.pk, row.status, row.response_text, row.prompt_tokens, row.attempts) == (None, "ok", '{"x": 5}', 10, 1)
    assert row.request_hash == result.request_hash and row.latency_ms >= 0
    row.save()  # what the judge runner does, many rows in one transaction
    assert only_call().response_text == '{"x": 5}'
    # a call that fails is written before the error is raised, deferred or not
    with pytest.raises(llm.LLMError) as caught:
        ask(validate=wants_json_with_x, defer_record=True)
    assert caught.value.call_id == LLMCall.objects.get(status="invalid").pk


def test_a_given_request_hash_is_the_one_recorded(llm_endpoint):
    llm_endpoint.script("hello")
    result = ask(request_hash_="a" * 64)
    assert result.request_hash == only_call().request_hash == "a" * 64


# -------------------------------------------------------------------------------------------------- cache


def test_identical_requests_can_reuse_an_ok_answer(llm_endpoint):
    llm_endpoint.script("first answer", "second answer")
    first = ask()
    assert llm.find_cached("task_prompt", first.request_hash) == "first answer"
    assert llm.find_cached("task_level", first.request_hash) is None

    again = ask(use_cache=True)
    assert (again.text, again.cached, again.call_id) == ("first answer", True, None)
    assert len(llm_endpoint.chat_requests()) == 1

    other = ask(use_cache=True, messages=MESSAGES + [{"role": "user", "content": "More."}])
    assert other.text == "second answer" and not other.cached
    assert LLMCall.objects.count() == 2


def test_request_hash_covers_model_messages_and_parameters():
    base = llm.request_hash("m", MESSAGES)
    assert base == llm.request_hash("m", [dict(m) for m in MESSAGES])
    assert base != llm.request_hash("other", MESSAGES)
    assert base != llm.request_hash("m", MESSAGES[:1])
    assert base != llm.request_hash("m", MESSAGES, {"temperature": 0})


# ------------------------------------------------------------------------------------------------ secrets


def test_the_api_key_appears_in_no_row_and_no_log(llm_endpoint, settings, caplog):
    caplog.set_level(logging.DEBUG)
    settings.LLM_TIMEOUT_SECONDS = 0.2
    settings.LLM_MAX_ATTEMPTS = 2
    echo = {"error": {"message": f"Incorrect API key provided: {TEST_API_KEY}.", "type": "invalid_request_error"}}
    llm_endpoint.script(
        "fine",                                    # ok
        "bad", "bad again",                        # invalid after the repair
        Status(401, echo),                         # an endpoint that echoes the key back
        Delay(2), ServerError(500),                # timeout, then 5xx: gives up
        Status(429, echo, {"Retry-After": "0"}), "recovered",
    )
    ask()
    with pytest.raises(llm.LLMError) as invalid:
        ask(validate=wants_json_with_x)
    with pytest.raises(llm.LLMError) as unauthorised:
        ask()
    with pytest.raises(llm.LLMError) as gave_up:
        ask()
    ask()

    assert all(r.authorization == f"Bearer {TEST_API_KEY}" for r in llm_endpoint.chat_requests())
    assert "[redacted]" in unauthorised.value.reason
    for error in (invalid.value, unauthorised.value, gave_up.value):
        assert TEST_API_KEY not in str(error) and TEST_API_KEY not in repr(error)
    rows = list(LLMCall.objects.values())
    assert len(rows) == 5
    for row in rows:
        for value in row.values():
            assert TEST_API_KEY not in str(value), row
    assert caplog.records, "expected log records from the client"
    assert TEST_API_KEY not in caplog.text
    for record in caplog.records:
        assert TEST_API_KEY not in record.getMessage()
        assert TEST_API_KEY not in repr(record.args)
    assert TEST_API_KEY not in repr(llm.LLMSettings.from_settings())
