"""The load benchmark's smoke run (benchmarks/load_bench.py --scale smoke), in CI on PostgreSQL + Redis: a seeded
database of its own, gunicorn with the production settings, a Celery worker and locust with 10 experts for 20 s.
It must answer every request without an error, and every vote answered "Saved" must be exactly one new decision.
The full-scale figures are a benchmark run by hand (benchmarks/README.md, "Load")."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.django_db
def test_fifty_experts_smoke_run_has_no_errors_and_loses_no_vote(tmp_path):
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("the load benchmark runs against PostgreSQL + Redis")
    database = f"microverse_load_smoke_{os.getpid()}"
    server = connection.settings_dict
    postgres = f"postgres://{server['USER']}@{server['HOST'] or '127.0.0.1'}:{server['PORT'] or 5432}"
    out = tmp_path / "load.json"
    try:
        run = subprocess.run(
            [sys.executable, "benchmarks/load_bench.py", "--scale", "smoke", "--users", "10", "--duration", "20",
             "--spawn-rate", "10", "--workers", "3", "--database", database, "--postgres", postgres,
             "--redis-db", "13", "--port", str(_free_port()), "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        import psycopg

        with psycopg.connect(f"{postgres}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["errors"] == 0
    assert result["decisions_consistent"] and result["decisions_added"] > 0
    opened = result["endpoints"]["expert: open item"]
    assert opened["requests"] > 10 and opened["failures"] == 0
    assert result["endpoints"]["trivial: /healthz"]["requests"] > 20
