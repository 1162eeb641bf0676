"""The cache that every process of the site sees (web workers and Celery workers), for precomputed reports.

It is the ``"shared"`` entry of ``settings.CACHES`` if there is one, else the default cache unless that one lives in
one process only (local memory, dummy), else a file cache in ``VAR_DIR/cache/shared``. Keys carry the database's
name (:func:`db_key`), so test databases and the development database beside them never read each other's entries.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.db import connection

_store = None


def shared_store():
    global _store
    if _store is None:
        configured = getattr(settings, "CACHES", {})
        if "shared" in configured:
            _store = caches["shared"]
        else:
            backend = configured.get("default", {}).get("BACKEND", "django.core.cache.backends.locmem.LocMemCache")
            if backend.rsplit(".", 1)[-1] not in ("LocMemCache", "DummyCache"):
                _store = caches["default"]
            else:
                location = Path(settings.VAR_DIR) / "cache" / "shared"
                _store = FileBasedCache(str(location), {"TIMEOUT": None, "OPTIONS": {"MAX_ENTRIES": 10_000}})
    return _store


def db_key(*parts: str) -> str:
    """A key scoped to the current database: ``<parts[0]>:<database name>:<parts[1]>:...``."""
    name = str(connection.settings_dict.get("NAME", "")).replace("/", "_").replace(" ", "_")[-80:]
    return ":".join([parts[0], name, *parts[1:]])
