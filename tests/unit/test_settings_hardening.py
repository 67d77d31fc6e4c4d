"""The hardening settings: rate limits, CORS origins, trusted proxies (dui.settings)."""

from __future__ import annotations

import pytest

from dui.settings import DEFAULT_RATE_LIMITS, RateLimits, Settings, SettingsError

PROD = {"DUI_ENV": "prod", "DUI_BASE_URL": "https://dui.example.org", "DUI_DOCUMENT_OID": "1.2.250.1.999.1",
       "DUI_MASTER_KEY_FILE": "/etc/dui/master.key",
        "DUI_AUDIT_KEY_FILE": "/etc/dui/audit.key"}


def test_rate_limits_default_on_from_the_environment_and_off_in_code() -> None:
    assert Settings.from_env({}).rate == DEFAULT_RATE_LIMITS
    assert DEFAULT_RATE_LIMITS.per_minute > 0 and DEFAULT_RATE_LIMITS.auth_per_minute > 0
    assert DEFAULT_RATE_LIMITS.auth_per_minute < DEFAULT_RATE_LIMITS.per_minute
    assert Settings().rate == RateLimits(0, 0, 0, 0)
    env = {"DUI_RATE_LIMIT": "300", "DUI_RATE_LIMIT_BURST": "50", "DUI_AUTH_RATE_LIMIT": "0",
           "DUI_AUTH_RATE_LIMIT_BURST": "3"}
    assert Settings.from_env(env).rate == RateLimits(300, 50, 0, 3)


@pytest.mark.parametrize(("env", "message"), [
    ({"DUI_RATE_LIMIT": "-1"}, "DUI_RATE_LIMIT must be at least 0"),
    ({"DUI_RATE_LIMIT": "lots"}, "DUI_RATE_LIMIT must be an integer"),
    ({"DUI_RATE_LIMIT_BURST": "0"}, "DUI_RATE_LIMIT_BURST must be at least 1"),
    ({"DUI_AUTH_RATE_LIMIT_BURST": "0"}, "DUI_AUTH_RATE_LIMIT_BURST must be at least 1"),
    ({"DUI_TRUSTED_PROXIES": "9"}, "DUI_TRUSTED_PROXIES=9 is a number of proxies"),
])
def test_bad_rate_or_proxy_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_cors_origins() -> None:
    assert Settings.from_env({}).http.cors_origins == ()
    env = {"DUI_CORS_ORIGINS": "https://App.Example.org, http://localhost:3000 https://app.example.org "
                               "https://[::1]:8443"}
    assert Settings.from_env(env).http.cors_origins == ("https://app.example.org", "http://localhost:3000",
                                                        "https://[::1]:8443")


@pytest.mark.parametrize("origin", ["*", "null", "https://app.example.org/", "https://app.example.org/fhir",
                                    "app.example.org", "ftp://app.example.org", "https://*.example.org",
                                    "https://user@app.example.org", "https://app.example.org?x=1"])
def test_cors_origins_are_origins_only(origin: str) -> None:
    with pytest.raises(SettingsError, match=r"DUI_CORS_ORIGINS: .* is not an origin"):
        Settings.from_env({"DUI_CORS_ORIGINS": origin})


def test_production_allows_https_origins_only() -> None:
    assert Settings.from_env({**PROD, "DUI_CORS_ORIGINS": "https://app.example.org"}).http.cors_origins
    with pytest.raises(SettingsError, match="https origins only when DUI_ENV=prod, not http://localhost:3000"):
        Settings.from_env({**PROD, "DUI_CORS_ORIGINS": "https://app.example.org,http://localhost:3000"})


def test_redis_url_for_shared_counters() -> None:
    assert Settings.from_env({}).redis_url is None
    settings = Settings.from_env({"DUI_REDIS_URL": "rediss://:pw-secret@redis.internal:6380/2"})
    assert settings.redis_url == "rediss://:pw-secret@redis.internal:6380/2"
    assert "pw-secret" not in repr(settings)  # it may carry a password
    assert Settings.from_env({"DUI_REDIS_URL": "redis+unix:///run/redis.sock"}).redis_url
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DUI_REDIS_URL": "http://:pw-secret@redis.internal"})
    assert str(refused.value).startswith("DUI_REDIS_URL must start with redis://, rediss:// or redis+unix://")
    assert "pw-secret" not in str(refused.value)
