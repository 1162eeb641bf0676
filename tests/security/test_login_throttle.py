"""Login throttling (microverse_site/throttle.py): N failures for one username or from one address within the
window lock further attempts with HTTP 429, even with the right password, until the window passes; a successful
login clears its username's count; the counts live in Django's cache (Redis when configured)."""
from __future__ import annotations

import time

import pytest
from django.core.cache import caches
from django.test import Client
from django.urls import reverse

from microverse_site.throttle import LoginThrottle
from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def throttle(settings):
    settings.LOGIN_THROTTLE = {"FAILURES": 5, "WINDOW_SECONDS": 300, "CACHE": "default", "IP_HEADER": ""}
    caches["default"].clear()
    yield settings.LOGIN_THROTTLE
    caches["default"].clear()


def attempt(client, username, password, ip="10.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_the_site_uses_the_throttled_login_view():
    from django.urls import resolve

    assert resolve(reverse("login")).func.view_class.__name__ == "ThrottledLoginView"


def test_five_failures_lock_the_username_even_for_the_right_password(client, expert):
    for n in range(5):
        response = attempt(client, "expert1", f"wrong-{n}")
        assert response.status_code == 200, n  # the ordinary "did not match" page
    locked = attempt(client, "expert1", TEST_PASSWORD)
    assert locked.status_code == 429
    assert not logged_in(client)
    body = locked.content.decode()
    assert "Too many failed login attempts" in body and "try again in 5 minutes" in body
    assert 0 < int(locked["Retry-After"]) <= 300
    # from another address too: the username is locked, not just the address
    assert attempt(Client(), "EXPERT1", TEST_PASSWORD, ip="10.9.9.9").status_code == 429
    # other users from another address are not affected
    other = Client()
    assert attempt(other, "admin_never_failed", "x", ip="10.9.9.9").status_code == 200


def test_failures_for_many_usernames_from_one_address_lock_the_address(client, expert):
    for n in range(5):
        assert attempt(client, f"guess{n}", "password", ip="10.0.0.7").status_code == 200
    assert attempt(client, "expert1", TEST_PASSWORD, ip="10.0.0.7").status_code == 429
    # the same user from their own address logs in
    own = Client()
    assert attempt(own, "expert1", TEST_PASSWORD, ip="10.0.0.8").status_code == 302
    assert logged_in(own)


def test_a_successful_login_resets_the_usernames_count(client, expert):
    for n in range(4):
        attempt(client, "expert1", f"wrong-{n}", ip=f"10.1.0.{n}")
    assert attempt(client, "expert1", TEST_PASSWORD, ip="10.1.1.1").status_code == 302
    client.logout()
    for n in range(4):  # four more: would be nine without the reset
        assert attempt(client, "expert1", f"wrong-{n}", ip=f"10.2.0.{n}").status_code == 200
    assert attempt(client, "expert1", TEST_PASSWORD, ip="10.3.0.1").status_code == 302


def test_the_lock_ends_when_the_window_passes(client, expert, throttle):
    throttle["WINDOW_SECONDS"] = 1
    for n in range(5):
        attempt(client, "expert1", f"wrong-{n}")
    assert attempt(client, "expert1", TEST_PASSWORD).status_code == 429
    time.sleep(1.2)
    assert attempt(client, "expert1", TEST_PASSWORD).status_code == 302
    assert logged_in(client)


def test_empty_submissions_and_gets_are_not_counted(client, expert):
    for _ in range(10):
        client.post(reverse("login"), {"username": "expert1"}, REMOTE_ADDR="10.0.0.1")
        client.get(reverse("login"), REMOTE_ADDR="10.0.0.1")
    assert attempt(client, "expert1", TEST_PASSWORD).status_code == 302


def test_a_trusted_proxy_header_gives_the_client_address(client, expert, throttle):
    throttle["IP_HEADER"] = "HTTP_X_REAL_IP"
    for n in range(5):
        client.post(reverse("login"), {"username": f"g{n}", "password": "x"}, REMOTE_ADDR="10.0.0.1",
                    HTTP_X_REAL_IP="203.0.113.5")
    # the proxy's own address is not locked; the client behind it is
    assert client.post(reverse("login"), {"username": "expert1", "password": TEST_PASSWORD},
                       REMOTE_ADDR="10.0.0.1", HTTP_X_REAL_IP="198.51.100.1").status_code == 302
    assert Client().post(reverse("login"), {"username": "expert1", "password": TEST_PASSWORD},
                         REMOTE_ADDR="10.0.0.1", HTTP_X_REAL_IP="203.0.113.5").status_code == 429


def test_cache_keys_hold_no_username():
    keys = LoginThrottle().keys(username="Expert1", ip="10.0.0.1")
    assert all("expert1" not in key.lower() for key in keys)
    assert LoginThrottle().keys(username="EXPERT1 ", ip=None) == LoginThrottle().keys(username="expert1", ip=None)


def test_the_cache_is_redis_when_configured(monkeypatch):
    """The settings block picks Django's built-in RedisCache for REDIS_CACHE_URL / CACHE_URL, else local memory
    (the settings file run afresh, as a process starting with that environment would)."""
    import runpy

    import microverse_site.settings as site_settings

    def caches_with(**env):
        for name in ("REDIS_CACHE_URL", "CACHE_URL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(site_settings.__file__, run_name="settings_probe")["CACHES"]["default"]

    assert caches_with(REDIS_CACHE_URL="redis://127.0.0.1:6379/5") == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/5"}
    assert caches_with(CACHE_URL="redis://cache:6379/1")["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert caches_with()["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


def test_the_throttle_works_on_redis(settings, expert):
    """Against a real Redis server when one answers on 127.0.0.1:6379 (CI runs one); skipped otherwise."""
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/15", socket_connect_timeout=0.5).ping()
    except Exception:  # noqa: BLE001
        pytest.skip("no Redis server on 127.0.0.1:6379")
    settings.CACHES = {**settings.CACHES, "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/15",
        "KEY_PREFIX": f"test-{time.time_ns()}"}}
    settings.LOGIN_THROTTLE = {**settings.LOGIN_THROTTLE, "CACHE": "throttle", "WINDOW_SECONDS": 30}
    try:
        client = Client()
        for n in range(5):
            assert attempt(client, "expert1", f"wrong-{n}").status_code == 200
        assert attempt(client, "expert1", TEST_PASSWORD).status_code == 429
    finally:
        caches["throttle"].clear()


def test_the_database_admin_signs_in_through_the_throttled_login(client, admin_user):
    """/django-admin/login/ checks no password: it sends everyone to the throttled login and back to the admin."""
    page = client.get("/django-admin/")
    assert page.status_code == 302
    followed = client.get(page["Location"])
    assert followed.status_code == 302
    assert followed["Location"] == "/accounts/login/?next=%2Fdjango-admin%2F"
    # A password posted to the admin's own login form is never checked, right or wrong.
    posted = client.post("/django-admin/login/?next=/django-admin/", {"username": admin_user.username,
                                                                      "password": TEST_PASSWORD})
    assert posted.status_code == 302 and posted["Location"].startswith("/accounts/login/")
    assert not logged_in(client)
    # An outside "next" is dropped.
    away = client.get("/django-admin/login/?next=https://evil.example/")
    assert away["Location"] == "/accounts/login/?next=%2Fdjango-admin%2F"
    # Locked out through the throttled form, the admin stays locked out.
    for _ in range(5):
        attempt(client, admin_user.username, "wrong")
    assert attempt(client, admin_user.username, TEST_PASSWORD).status_code == 429
    assert not logged_in(client)
