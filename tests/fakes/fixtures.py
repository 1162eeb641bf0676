"""Pytest fixtures around the fake chat-completions server (``tests.fakes.chat_server``).

One server runs per test session (started on first use, stopped at exit), so that a Celery worker subprocess can
reach the same server as the test that scripts it.

``chat_server``
    The session's :class:`~tests.fakes.chat_server.ChatServer`, reset (empty script, no rules, no responder, no
    recorded requests) before each test.
``llm_endpoint``
    ``chat_server`` plus Django settings pointing ``microverse_site.llm`` at it for this test: ``OPENAI_BASE_URL``,
    ``OPENAI_API_KEY`` (:data:`TEST_API_KEY`), a short ``LLM_TIMEOUT_SECONDS`` and short backoff. Yields the server.

A Celery worker started by ``tests.conftest.celery_worker_process`` inherits the test process's environment when it
starts. :func:`export_worker_environment` starts the session server and puts :func:`worker_environment` into
``os.environ``; call it before the worker starts (module level of a test module runs at collection time, before any
test) so that tasks in the worker reach this server too.
"""
from __future__ import annotations

import atexit
import os
import threading

import pytest

from tests.fakes.chat_server import ChatServer

# Shaped like a real key so that a leak is easy to spot; it must never reach a database row or a log line.
TEST_API_KEY = "sk-test-" + "9f3c1d7e5b2a4680" * 3

_server: ChatServer | None = None
_server_lock = threading.Lock()


def session_chat_server() -> ChatServer:
    """The session's server, started on first use and closed when the process exits."""
    global _server
    with _server_lock:
        if _server is None:
            _server = ChatServer().start()
            atexit.register(_server.close)
        return _server


def worker_environment() -> dict[str, str]:
    """Environment variables that point a worker process's ``microverse_site.llm`` at the session server."""
    server = session_chat_server()
    return {
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": TEST_API_KEY,
        "LLM_TIMEOUT_SECONDS": "10",
        "LLM_BACKOFF_SECONDS": "0.05",
    }


def export_worker_environment() -> dict[str, str]:
    """Put :func:`worker_environment` into ``os.environ`` (for a worker started later) and return it."""
    env = worker_environment()
    os.environ.update(env)
    return env


@pytest.fixture
def chat_server() -> ChatServer:
    server = session_chat_server()
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def llm_endpoint(chat_server, settings) -> ChatServer:
    settings.OPENAI_BASE_URL = chat_server.url
    settings.OPENAI_API_KEY = TEST_API_KEY
    settings.LLM_TIMEOUT_SECONDS = 2.0
    settings.LLM_BACKOFF_SECONDS = 0.01
    settings.LLM_MAX_ATTEMPTS = 4
    return chat_server
