"""The one place that calls LLMs: any OpenAI-compatible chat-completions endpoint, through the ``openai`` SDK.

``chat(purpose=..., messages=..., validate=...)`` sends one request and returns the validated answer. Around it:

* **retries** (the SDK's own are switched off, ``max_retries=0``): timeouts, connection errors, HTTP 5xx and bodies
  that are not chat-completion JSON are retried with exponential backoff; HTTP 429 waits for ``Retry-After`` (or
  ``retry-after-ms``), capped; HTTP 413 calls the caller's ``shrink(messages)`` (fewer or smaller images) and re-sends;
  other 4xx fail at once. Each logical request gets at most ``LLM_MAX_ATTEMPTS`` HTTP attempts.
* **validation**: ``validate(text)`` returns the parsed value or raises ``ValueError`` with a reason; an invalid answer
  gets ``max_repairs`` repair turns (the bad answer and a message naming what was wrong are appended) before the call
  fails with status "invalid".
* **records**: every ``chat()`` writes exactly one :class:`~microverse_site.models.LLMCall` (purpose, model, endpoint,
  request hash, status ok / invalid / error, HTTP attempts, tokens, latency, cost from a per-model price table, the
  answer text or the reason it failed). The API key is never stored, logged or put in an error message: any text that
  could echo it (an endpoint's error body) is redacted first.
* **cache**: ``request_hash`` is the sha256 of model + messages + parameters; ``find_cached(purpose, hash)`` returns an
  earlier ok answer, and ``chat(..., use_cache=True)`` reuses it instead of paying twice.

Call ``chat()`` outside database transactions: the call can take minutes, and its LLMCall row must survive a rollback
of the caller's work.

Settings: ``OPENAI_BASE_URL`` (empty: the SDK's default endpoint), ``OPENAI_API_KEY`` (empty: a placeholder is sent,
for local endpoints) and ``LLM_TIMEOUT_SECONDS`` (per HTTP attempt) come from ``settings.py``. The others are read from
Django settings when defined there, else from the environment variable of the same name, else the default:

* ``LLM_MODELS`` (a dict purpose -> model; environment: ``LLM_MODEL_TASK_PROMPT``, ``LLM_MODEL_TASK_LEVEL``,
  ``LLM_MODEL_RUBRIC_DRAFT``, ``LLM_MODEL_CAPTION``, ``LLM_MODEL_JUDGE``): default ``gpt-4o``;
* ``LLM_MAX_ATTEMPTS``: HTTP attempts per request, retries included (4);
* ``LLM_BACKOFF_SECONDS``: the first backoff, doubled on each retry (1.0); ``LLM_BACKOFF_MAX_SECONDS`` (30);
* ``LLM_RETRY_AFTER_MAX_SECONDS``: the longest wait a ``Retry-After`` header may impose (60);
* ``LLM_PRICES``: ``{"model": [usd_per_million_input, usd_per_million_output]}`` (JSON in the environment), merged over
  :data:`DEFAULT_PRICES`; a model without a price costs 0.
"""
from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Generic, TypeVar

import openai
from django.conf import settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The purposes the site calls an LLM for, each with its own model setting.
PURPOSES = ("task_prompt", "task_level", "rubric_draft", "caption", "judge")
DEFAULT_MODEL = "gpt-4o"

#: USD per million tokens (input, output). Unknown models cost 0 (recorded tokens still tell the truth).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}

#: How many times one request may be shrunk after HTTP 413.
MAX_SHRINKS = 4

REPAIR_MESSAGE = (
    "Your previous answer could not be used: {reason}. Answer again, following the required format exactly, "
    "with nothing before or after it."
)


class LLMError(Exception):
    """The call failed for good (after its retries and repairs). ``reason`` says why; the LLMCall row is written."""

    def __init__(self, reason: str, *, status: str = "error", call_id: int | None = None, attempts: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.call_id = call_id
        self.attempts = attempts


@dataclass(frozen=True)
class LLMResult(Generic[T]):
    value: T
    text: str
    model: str
    request_hash: str
    call_id: int | None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    cached: bool = False
    #: With ``chat(defer_record=True)``: the answer's LLMCall row, not saved yet (``call_id`` is None until it is).
    unsaved_call: Any = None


# -------------------------------------------------------------------------------------------------- settings


def _setting(name: str, default, cast):
    value = getattr(settings, name, None)
    if value is None or value == "":
        value = os.environ.get(name, "")
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name} has an invalid value") from None


def _prices_from(value) -> dict[str, tuple[float, float]]:
    if isinstance(value, str):
        value = json.loads(value)
    return {str(model): (float(pair[0]), float(pair[1])) for model, pair in dict(value).items()}


@dataclass(frozen=True)
class LLMSettings:
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0
    models: dict[str, str] = field(default_factory=dict)
    max_attempts: int = 4
    backoff: float = 1.0
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @classmethod
    def from_settings(cls) -> "LLMSettings":
        models = {purpose: os.environ.get(f"LLM_MODEL_{purpose.upper()}", "") for purpose in PURPOSES}
        models = {purpose: model for purpose, model in models.items() if model}
        models.update({k: v for k, v in dict(getattr(settings, "LLM_MODELS", None) or {}).items() if v})
        return cls(
            base_url=str(getattr(settings, "OPENAI_BASE_URL", "") or ""),
            api_key=str(getattr(settings, "OPENAI_API_KEY", "") or ""),
            timeout=_setting("LLM_TIMEOUT_SECONDS", 60.0, float),
            models=models,
            max_attempts=max(1, _setting("LLM_MAX_ATTEMPTS", 4, int)),
            backoff=max(0.0, _setting("LLM_BACKOFF_SECONDS", 1.0, float)),
            backoff_max=max(0.0, _setting("LLM_BACKOFF_MAX_SECONDS", 30.0, float)),
            retry_after_max=max(0.0, _setting("LLM_RETRY_AFTER_MAX_SECONDS", 60.0, float)),
            prices={**DEFAULT_PRICES, **_setting("LLM_PRICES", {}, _prices_from)},
        )

    def model_for(self, purpose: str) -> str:
        return self.models.get(purpose) or os.environ.get(f"LLM_MODEL_{purpose.upper()}") or DEFAULT_MODEL

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the API key replaced by ``[redacted]``."""
        if not text:
            return text or ""
        if self.api_key and len(self.api_key) >= 4:
            text = text.replace(self.api_key, "[redacted]")
        return text


# ---------------------------------------------------------------------------------------------------- helpers


def request_hash(model: str, messages: list[dict], params: dict | None = None) -> str:
    """sha256 of the model, the messages and the request parameters (canonical JSON)."""
    payload = {"model": model, "messages": messages, "params": params or {}}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def find_cached(purpose: str, request_hash: str) -> str | None:
    """The answer text of the latest ok call with this purpose and request hash, or None."""
    from microverse_site.models import LLMCall

    row = (LLMCall.objects.filter(purpose=purpose, request_hash=request_hash, status="ok")
           .order_by("-created_at", "-id").values_list("response_text", flat=True).first())
    return row


def price_for(model: str, prices: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The price pair of `model`, or of the longest known name it starts with (``gpt-4o-2024-08-06`` -> ``gpt-4o``)."""
    if model in prices:
        return prices[model]
    known = sorted((name for name in prices if model.startswith(name)), key=len, reverse=True)
    return prices[known[0]] if known else None


def cost_usd(model: str, prompt_tokens: int | None, completion_tokens: int | None,
             prices: dict[str, tuple[float, float]] | None = None) -> Decimal:
    """Cost in USD (6 decimals); 0 for a model without a price or a call without usage."""
    pair = price_for(model, DEFAULT_PRICES if prices is None else prices)
    if pair is None:
        return Decimal("0.000000")
    usd = (Decimal(prompt_tokens or 0) * Decimal(str(pair[0])) + Decimal(completion_tokens or 0)
           * Decimal(str(pair[1]))) / Decimal(1_000_000)
    return usd.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def halve_images(messages: list[dict]) -> list[dict] | None:
    """A ready-made ``shrink``: keep every other image part of each message (at least one per message).

    Returns None when no message has more than one image (nothing left to shrink)."""
    changed = False
    shrunk = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            images = [i for i, part in enumerate(content) if isinstance(part, dict) and part.get("type") == "image_url"]
            if len(images) > 1:
                drop = set(images[1::2])
                content = [part for i, part in enumerate(content) if i not in drop]
                message = {**message, "content": content}
                changed = True
        shrunk.append(message)
    return shrunk if changed else None


def _retry_after_seconds(headers) -> float | None:
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message")
        if isinstance(message, str) and message:
            return message
    return getattr(exc, "message", "") or str(exc)


def _clip(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------------- chat


class _Failed(Exception):
    """A request that could not get an answer (transport), after its retries."""


@dataclass
class _Totals:
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _backoff(config: LLMSettings, retry: int) -> float:
    delay = min(config.backoff_max, config.backoff * (2 ** (retry - 1)))
    return delay * (1.0 + 0.1 * random.random())


def _send(client: openai.OpenAI, config: LLMSettings, *, model: str, messages: list[dict], params: dict,
          shrink: Callable[[list[dict]], list[dict] | None] | None, totals: _Totals, purpose: str
          ) -> tuple[str, list[dict]]:
    """One logical request with its retries. Returns (answer text, the messages finally sent)."""
    tries = 0
    shrinks = 0
    while True:
        tries += 1
        totals.attempts += 1
        wait: float | None = None
        try:
            response = client.chat.completions.create(model=model, messages=messages, **params)
        except openai.APITimeoutError:
            reason = f"timed out after {config.timeout:g} s"
        except openai.APIConnectionError as exc:
            reason = f"connection error ({_clip(config.redact(str(exc.__cause__ or exc)), 200)})"
        except openai.APIStatusError as exc:
            code = exc.status_code
            message = _clip(config.redact(_error_message(exc)), 300)
            if code == 413:
                new_messages = shrink(messages) if (shrink is not None and shrinks < MAX_SHRINKS) else None
                if new_messages is None or new_messages == messages:
                    raise _Failed(f"HTTP 413 (request too large) and nothing left to shrink: {message}") from None
                shrinks += 1
                messages = new_messages
                tries -= 1  # a smaller request is a new request, not a retry of the same one
                logger.warning("llm %s: HTTP 413, shrunk the request (shrink %d) and re-sending", purpose, shrinks)
                continue
            reason = f"HTTP {code}: {message}"
            if code == 429:
                header_wait = _retry_after_seconds(exc.response.headers if exc.response is not None else None)
                wait = min(header_wait, config.retry_after_max) if header_wait is not None else None
            elif code < 500 and code not in (408, 409):
                raise _Failed(reason) from None
        except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:
            reason = f"the endpoint's answer is not chat-completion JSON ({type(exc).__name__})"
        else:
            usage = getattr(response, "usage", None)
            if usage is not None:
                totals.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
                totals.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
            choices = getattr(response, "choices", None)
            if isinstance(response, (str, bytes)) or choices is None:
                reason = "the endpoint's answer is not chat-completion JSON"
            elif not choices:
                reason = "the endpoint's answer has no choices"
            else:
                message = choices[0].message
                return (getattr(message, "content", None) or ""), messages
        if tries >= config.max_attempts:
            raise _Failed(f"{reason} (gave up after {tries} attempts)")
        if wait is None:
            wait = _backoff(config, tries)
        logger.warning("llm %s: attempt %d failed (%s); retrying in %.2f s", purpose, tries, reason, wait)
        time.sleep(wait)


_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(config: LLMSettings) -> openai.OpenAI:
    """One SDK client per endpoint, key and timeout, kept for the process (it pools connections; building one costs
    a noticeable fraction of a second). The SDK's own retries are off: ``_send`` does them."""
    key = (config.base_url, config.api_key, config.timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) >= 16:
                for old in _clients.values():
                    old.close()
                _clients.clear()
            client = openai.OpenAI(base_url=config.base_url or None, api_key=config.api_key or "unused",
                                   timeout=config.timeout, max_retries=0)
            _clients[key] = client
        return client


def _record(**fields):
    row = _call_row(**fields)
    row.save()
    return row


def _call_row(*, purpose, model, base_url, request_hash_, status, totals: _Totals, started: float,
              config: LLMSettings, response_text: str = "", error: str = ""):
    """The LLMCall row of a call that ends now, unsaved."""
    from microverse_site.models import LLMCall

    return LLMCall(
        purpose=purpose[:40], model=model[:120], base_url=config.redact(base_url)[:300], request_hash=request_hash_,
        status=status, attempts=min(totals.attempts, 32767), prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        cost_usd=cost_usd(model, totals.prompt_tokens, totals.completion_tokens, config.prices),
        latency_ms=int((time.monotonic() - started) * 1000), response_text=config.redact(response_text or ""),
        error=config.redact(error or ""),
    )


def chat(*, purpose: str, messages: list[dict], validate: Callable[[str], T], max_repairs: int = 1,
         shrink: Callable[[list[dict]], list[dict] | None] | None = None, model: str | None = None,
         temperature: float | None = None, max_tokens: int | None = None, response_format: dict | None = None,
         timeout: float | None = None, max_attempts: int | None = None, use_cache: bool = False,
         config: LLMSettings | None = None, request_hash_: str | None = None,
         defer_record: bool = False) -> LLMResult[T]:
    """Ask the model for `purpose` and return ``validate(answer)`` (see the module docstring).

    Raises :class:`LLMError` (status "error": no usable HTTP answer; "invalid": answers failed `validate` after the
    repairs) once the LLMCall row is written. `request_hash_`: the caller's own :func:`request_hash` of this request,
    when it has it. `defer_record`: an answer that validates comes back at once with its LLMCall row unsaved
    (``LLMResult.unsaved_call``), for a caller that saves the rows of many calls together off its requests' path
    (the judge runner); failed calls are still written before the error is raised."""
    config = config or LLMSettings.from_settings()
    overrides = {}
    if timeout is not None:
        overrides["timeout"] = float(timeout)
    if max_attempts is not None:
        overrides["max_attempts"] = max(1, int(max_attempts))
    if overrides:
        config = dataclasses.replace(config, **overrides)
    model = model or config.model_for(purpose)
    params: dict[str, Any] = {}
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if response_format is not None:
        params["response_format"] = response_format
    hash_ = request_hash_ or request_hash(model, messages, params)
    started = time.monotonic()
    totals = _Totals()
    record = dict(purpose=purpose, model=model, base_url=config.base_url, request_hash_=hash_, config=config)

    if use_cache:
        cached = find_cached(purpose, hash_)
        if cached is not None:
            try:
                value = validate(cached)
            except ValueError:
                pass  # an answer that no longer validates is asked for again
            else:
                logger.info("llm %s: reused an earlier answer (request %s)", purpose, hash_[:12])
                return LLMResult(value=value, text=cached, model=model, request_hash=hash_, call_id=None, cached=True,
                                 cost_usd=Decimal("0.000000"))

    if not config.base_url and not config.api_key:
        reason = "no LLM endpoint is configured (set OPENAI_BASE_URL and/or OPENAI_API_KEY)"
        row = _record(**record, status="error", totals=totals, started=started, error=reason)
        raise LLMError(reason, status="error", call_id=row.pk, attempts=0)

    client = _client(config)
    conversation = list(messages)
    repairs_left = max(0, int(max_repairs))
    try:
        while True:
            try:
                text, conversation = _send(client, config, model=model, messages=conversation, params=params,
                                           shrink=shrink, totals=totals, purpose=purpose)
            except _Failed as failure:
                reason = str(failure)
                row = _record(**record, status="error", totals=totals, started=started, error=reason)
                logger.warning("llm %s: failed after %d attempts: %s", purpose, totals.attempts, reason)
                raise LLMError(reason, status="error", call_id=row.pk, attempts=totals.attempts) from None
            try:
                value = validate(text)
            except ValueError as invalid:
                reason = config.redact(str(invalid)) or "the answer is not in the required format"
                if repairs_left <= 0:
                    reason = f"invalid answer: {reason}"
                    row = _record(**record, status="invalid", totals=totals, started=started, response_text=text,
                                  error=reason)
                    logger.warning("llm %s: %s (after %d attempts)", purpose, reason, totals.attempts)
                    raise LLMError(reason, status="invalid", call_id=row.pk, attempts=totals.attempts) from None
                repairs_left -= 1
                logger.info("llm %s: invalid answer (%s); asking once more", purpose, reason)
                conversation = conversation + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": REPAIR_MESSAGE.format(reason=reason.rstrip("."))},
                ]
                continue
            row = _call_row(**record, status="ok", totals=totals, started=started, response_text=text)
            if not defer_record:
                row.save()
                logger.info("llm %s: ok, model %s, %d attempts, %d+%d tokens, %d ms", purpose, model,
                            totals.attempts, totals.prompt_tokens, totals.completion_tokens, row.latency_ms)
            return LLMResult(value=value, text=text, model=model, request_hash=hash_, call_id=row.pk,
                             attempts=totals.attempts, prompt_tokens=totals.prompt_tokens,
                             completion_tokens=totals.completion_tokens, cost_usd=row.cost_usd,
                             unsaved_call=row if defer_record else None)
    except (LLMError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a crashing validator or shrink callback: still one row, then the real error
        _record(**record, status="error", totals=totals, started=started,
                error=f"internal error: {type(exc).__name__}: {_clip(config.redact(str(exc)), 300)}")
        raise
