"""Login throttling: after ``FAILURES`` failed logins for one username, or from one client address, within
``WINDOW_SECONDS``, further attempts for that username or from that address are answered with HTTP 429 and a clear
message, even with the right password, until the window that began with the first failure has passed.

Settings (``settings.LOGIN_THROTTLE``)::

    LOGIN_THROTTLE = {"FAILURES": 5, "WINDOW_SECONDS": 300, "CACHE": "default", "IP_HEADER": ""}

* the counts live in Django's cache ``CACHE`` (Redis when the site configures it, so that every web worker shares
  them; the per-process local-memory cache otherwise, where each worker counts on its own);
* ``IP_HEADER``: the ``request.META`` key holding the client address when a trusted proxy sets it (e.g.
  ``"HTTP_X_REAL_IP"``); empty: ``REMOTE_ADDR``. The first address of a comma-separated list is used;
* a successful login clears the failures of its username. It does not clear the address's count: otherwise one valid
  account would let an attacker wipe the count between guesses at other users' passwords;
* usernames are compared case-insensitively and kept in cache keys only as a hash.

``ThrottledLoginView`` is Django's ``LoginView`` with the throttle (``accounts/login/`` in ``microverse_site/urls.py``).
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import LoginView
from django.core.cache import caches

logger = logging.getLogger(__name__)

DEFAULTS = {"FAILURES": 5, "WINDOW_SECONDS": 300, "CACHE": "default", "IP_HEADER": ""}
KEY_PREFIX = "login-throttle"


@dataclass(frozen=True)
class LoginThrottle:
    failures: int = 5
    window: int = 300
    cache_alias: str = "default"
    ip_header: str = ""

    @classmethod
    def from_settings(cls) -> "LoginThrottle":
        config = {**DEFAULTS, **(getattr(settings, "LOGIN_THROTTLE", None) or {})}
        return cls(failures=max(1, int(config["FAILURES"])), window=max(1, int(config["WINDOW_SECONDS"])),
                   cache_alias=str(config["CACHE"] or "default"), ip_header=str(config["IP_HEADER"] or ""))

    @property
    def cache(self):
        return caches[self.cache_alias]

    # ---------------------------------------------------------------------------------------------- keys

    def client_ip(self, request) -> str:
        value = request.META.get(self.ip_header, "") if self.ip_header else ""
        value = value or request.META.get("REMOTE_ADDR", "") or "unknown"
        return value.split(",")[0].strip()[:64]

    @staticmethod
    def _digest(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def keys(self, *, username: str | None, ip: str | None) -> list[str]:
        keys = []
        if username is not None and username.strip():
            keys.append(f"{KEY_PREFIX}:user:{self._digest(username.strip().casefold())}")
        if ip:
            keys.append(f"{KEY_PREFIX}:ip:{self._digest(ip)}")
        return keys

    # ----------------------------------------------------------------------------------------- counting

    def retry_after(self, *, username: str | None, ip: str | None) -> int:
        """Seconds until attempts are allowed again for this username and address (0: allowed now)."""
        keys = self.keys(username=username, ip=ip)
        values = self.cache.get_many([*keys, *(f"{k}:until" for k in keys)])
        now = time.time()
        wait = 0.0
        for key in keys:
            if int(values.get(key) or 0) >= self.failures:
                until = values.get(f"{key}:until")
                wait = max(wait, (float(until) - now) if until else float(self.window), 1.0)
        return int(math.ceil(wait))

    def failure(self, *, username: str | None, ip: str | None) -> None:
        """Count one failed attempt; the window starts with a key's first failure and does not slide."""
        cache = self.cache
        for key in self.keys(username=username, ip=ip):
            if cache.add(key, 0, timeout=self.window):
                cache.set(f"{key}:until", time.time() + self.window, timeout=self.window)
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr: start a new window
                cache.set(key, 1, timeout=self.window)
                cache.set(f"{key}:until", time.time() + self.window, timeout=self.window)

    def success(self, *, username: str | None) -> None:
        """A successful login clears its username's failures (not the address's: see the module docstring)."""
        for key in self.keys(username=username, ip=None):
            self.cache.delete_many([key, f"{key}:until"])

    def message(self, wait: int) -> str:
        minutes = max(1, math.ceil(wait / 60))
        return (f"Too many failed login attempts. For your security, logging in is paused for this account or "
                f"address; try again in {minutes} minute{'s' if minutes != 1 else ''}.")


class ThrottledLoginView(LoginView):
    """Django's login view, refusing attempts with HTTP 429 (and ``Retry-After``) while the throttle says so."""

    def post(self, request, *args, **kwargs):
        self.throttle = LoginThrottle.from_settings()
        self.attempt_username = str(request.POST.get("username", ""))[:300]
        self.attempt_ip = self.throttle.client_ip(request)
        wait = self.throttle.retry_after(username=self.attempt_username, ip=self.attempt_ip)
        if wait:
            logger.warning("login throttled for %s seconds (client address %s)", wait, self.attempt_ip)
            messages.error(request, self.throttle.message(wait))
            response = self.render_to_response(self.get_context_data(form=self.get_form_class()(request)),
                                               status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        if self.request.POST.get("username") and self.request.POST.get("password"):
            self.throttle.failure(username=self.attempt_username, ip=self.attempt_ip)
        return super().form_invalid(form)

    def form_valid(self, form):
        self.throttle.success(username=self.attempt_username)
        return super().form_valid(form)
