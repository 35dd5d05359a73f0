import pytest

from worker.settings import ConfigError, Rate, Settings, load_settings


def test_defaults_match_the_contract():
    settings = load_settings({})
    assert settings == Settings()
    assert settings.field_path == ("data",)
    assert settings.stream_update_rate == Rate(300, 60.0)
    assert settings.hms_webhook_header == "X-Callsync-Secret"


def test_values_are_parsed():
    settings = load_settings(
        {
            "REDIS_URL": "redis://localhost:6379/2",
            "HMS_WEBHOOK_SECRET": "old, new ,",
            "CALLSYNC_FIELD_PREFIX": "",
            "CALLSYNC_STREAM_UPDATE_RATE": "5/s",
            "CALLSYNC_DRY_RUN": "yes",
            "CALLSYNC_END_ROOM_ON_CALL_END": "false",
            "STREAM_BASE_URL": "http://127.0.0.1:9000/",
            "CALLSYNC_MAX_QUEUE_DEPTH": "5000",
        }
    )
    assert settings.max_queue_depth == 5000
    assert settings.hms_webhook_secrets == ("old", "new")
    assert settings.stream_api_secret == "" and settings.stream_secrets == ()
    assert settings.field_path == ()
    assert settings.stream_update_rate == Rate(5, 1.0)
    assert settings.dry_run and not settings.end_room_on_call_end
    assert settings.stream_base_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLSYNC_MAX_SESSION_SECONDS", "soon"),
        ("CALLSYNC_MAX_SESSION_SECONDS", "0"),
        ("CALLSYNC_STREAM_UPDATE_RATE", "300"),
        ("CALLSYNC_DRY_RUN", "maybe"),
        ("CALLSYNC_FIELD_PREFIX", "data"),
        ("CALLSYNC_MAX_BODY_BYTES", "-1"),
        ("CALLSYNC_MAX_QUEUE_DEPTH", "0"),
        ("CALLSYNC_MAX_QUEUE_DEPTH", "lots"),
        ("REDIS_URL", "localhost:6379"),
        ("HMS_BASE_URL", "api.100ms.live"),
        ("HMS_BASE_URL", "http://api.100ms.live/v2"),  # http only to loopback: credentials go in the clear
        ("STREAM_BASE_URL", "http://10.0.0.5:8080"),
        ("STREAM_BASE_URL", "http://127.0.0.1.example.com"),
        ("STREAM_BASE_URL", "http://[::1"),
        ("HMS_WEBHOOK_HEADER", "X Secret"),
    ],
)
def test_malformed_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as err:
        load_settings({name: value})
    assert name in str(err.value)


def test_roles_require_what_they_need_and_never_echo_secrets():
    base = {"REDIS_URL": "redis://x", "STREAM_API_SECRET": "topsecret-for-stream"}
    with pytest.raises(ConfigError, match="HMS_WEBHOOK_SECRET"):
        load_settings(base).require("web")
    load_settings({**base, "HMS_WEBHOOK_SECRET": "hms-webhook-secret-value"}).require("web")
    with pytest.raises(ConfigError, match="STREAM_API_KEY") as err:
        load_settings(base).require("worker")
    assert "topsecret" not in str(err.value)
    load_settings({**base, "CALLSYNC_DRY_RUN": "1"}).require("worker")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings({}).require("beat")
    assert "topsecret" not in repr(load_settings(base))


WORKER = {"REDIS_URL": "redis://x", "STREAM_API_KEY": "k", "HMS_ACCESS_KEY": "a"}
LONG = "a-secret-of-twenty-chars"


@pytest.mark.parametrize(
    ("role", "env", "named"),
    [
        ("web", {"STREAM_API_SECRET": "dev-stream-secret", "HMS_WEBHOOK_SECRET": LONG}, "STREAM_API_SECRET"),
        ("web", {"STREAM_API_SECRET": LONG, "HMS_WEBHOOK_SECRET": "dev-hms-secret"}, "HMS_WEBHOOK_SECRET"),
        ("web", {"STREAM_API_SECRET": LONG, "HMS_WEBHOOK_SECRET": f"{LONG},dev-hms-secret"}, "HMS_WEBHOOK_SECRET"),
        ("web", {"STREAM_API_SECRET": "x", "HMS_WEBHOOK_SECRET": LONG}, "STREAM_API_SECRET"),
        ("web", {"STREAM_API_SECRET": LONG, "HMS_WEBHOOK_SECRET": f"{LONG},short-fifteen15"}, "HMS_WEBHOOK_SECRET"),
        ("worker", {**WORKER, "STREAM_API_SECRET": LONG, "HMS_APP_SECRET": "dev-hms-secret"}, "HMS_APP_SECRET"),
        ("worker", {**WORKER, "STREAM_API_SECRET": "dev-stream-secret", "HMS_APP_SECRET": LONG}, "STREAM_API_SECRET"),
        ("worker", {**WORKER, "STREAM_API_SECRET": LONG, "HMS_APP_SECRET": "0123456789"}, "HMS_APP_SECRET"),
    ],
)
def test_public_or_short_secrets_are_refused_outside_dry_run(role, env, named):
    # `callsync run` with real credentials silently accepted deliveries signed with
    # dev-hms-secret, and `callsync web` one-character secrets (issue 12, item 10).
    with pytest.raises(ConfigError) as err:
        load_settings({"REDIS_URL": "redis://x", **env}).require(role)
    message = str(err.value)
    assert message.startswith(named) and "\n" not in message
    assert not any(len(value) > 3 and value in message for value in env.values() if value not in ("k", "a", "redis://x"))
    load_settings({"REDIS_URL": "redis://x", **env, "CALLSYNC_DRY_RUN": "true"}).require(role)  # development


def test_sixteen_characters_are_enough():
    load_settings({"REDIS_URL": "redis://x", "STREAM_API_SECRET": "s" * 16, "HMS_WEBHOOK_SECRET": "h" * 16}).require("web")


def test_task_events_are_off_unless_asked_for():
    from worker.jobs.app import create_celery

    assert create_celery(load_settings({})).conf.worker_send_task_events is False
    assert create_celery(load_settings({"CALLSYNC_TASK_EVENTS": "true"})).conf.worker_send_task_events is True


def test_every_problem_is_found_in_one_pass():
    with pytest.raises(ConfigError) as err:
        load_settings(
            {
                "CALLSYNC_MAX_SESSION_SECONDS": "soon",
                "CALLSYNC_STREAM_UPDATE_RATE": "300",
                "REDIS_URL": "localhost:6379",
                "HMS_WEBHOOK_HEADER": "X Secret",
                "CALLSYNC_DRY_RUN": "maybe",
            },
            "web",
        )
    named = [problem.split()[0] for problem in err.value.problems]
    assert named == [
        "REDIS_URL",
        "HMS_WEBHOOK_HEADER",
        "CALLSYNC_MAX_SESSION_SECONDS",
        "CALLSYNC_STREAM_UPDATE_RATE",
        "CALLSYNC_DRY_RUN",
        "STREAM_API_SECRET",
        "HMS_WEBHOOK_SECRET",
    ]


def test_the_redis_password_stays_out_of_the_settings_repr():
    from worker.settings import redacted_url

    url = "rediss://:hunter2-password@redis.example:6380/0?ssl_cert_reqs=none"
    assert "hunter2" not in repr(load_settings({"REDIS_URL": url}))
    assert redacted_url(url) == "rediss://:***@redis.example:6380/0?ssl_cert_reqs=none"
    assert redacted_url("redis://:p@ss@h:1/0") == "redis://:***@h:1/0"  # split at the last "@", as URL parsers do
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_calls_api_settings_are_parsed():
    settings = load_settings(
        {
            "HMS_DEFAULT_ROLE": "host",
            "HMS_TEMPLATE_ID": "63188115d11d6db790c73c60",
            "CALLSYNC_CALL_TOKEN_TTL_SECONDS": "600",
            "CALLSYNC_CORS_ORIGINS": "https://App.example.com/, http://localhost:3000,https://app.example.com",
            "CALLSYNC_CALLS_PER_USER": "5/s",
            "CALLSYNC_UNAUTHENTICATED_PER_ADDRESS": "100/h",
            "CALLSYNC_TRUSTED_PROXIES": "2",
            "STREAM_API_SECRET": "new, old ,",
        }
    )
    assert (settings.hms_default_role, settings.hms_template_id, settings.call_token_ttl_seconds) == (
        "host",
        "63188115d11d6db790c73c60",
        600,
    )
    assert settings.cors_origins == ("https://app.example.com", "http://localhost:3000")
    assert settings.calls_per_user == Rate(5, 1.0)
    assert (settings.unauthenticated_per_address, settings.trusted_proxies) == (Rate(100, 3600.0), 2)
    assert settings.stream_secrets == ("new", "old")
    assert {"new", "old"} <= set(settings.secrets)  # each secret of a rotation is scrubbed from logs
    defaults = load_settings({})
    assert (defaults.hms_default_role, defaults.call_token_ttl_seconds, defaults.cors_origins) == ("guest", 3600, ())
    assert (defaults.unauthenticated_per_address, defaults.trusted_proxies) == (Rate(30, 60.0), 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLSYNC_CORS_ORIGINS", "*"),
        ("CALLSYNC_CORS_ORIGINS", "app.example.com"),
        ("CALLSYNC_CORS_ORIGINS", "https://app.example.com/path"),
        ("HMS_DEFAULT_ROLE", "a role"),
        ("CALLSYNC_CALL_TOKEN_TTL_SECONDS", "10"),
        ("CALLSYNC_CALL_TOKEN_TTL_SECONDS", "864000"),
        ("CALLSYNC_CALLS_PER_USER", "lots"),
        ("CALLSYNC_UNAUTHENTICATED_PER_ADDRESS", "0/m"),
        ("CALLSYNC_TRUSTED_PROXIES", "-1"),
        ("CALLSYNC_TRUSTED_PROXIES", "many"),
    ],
)
def test_malformed_calls_api_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as err:
        load_settings({name: value})
    assert name in str(err.value)


def test_the_calls_api_says_what_it_lacks_and_the_web_role_starts_without_it():
    base = {"REDIS_URL": "redis://x", "STREAM_API_SECRET": "s" * 16, "HMS_WEBHOOK_SECRET": "h" * 16}
    web_only = load_settings(base).require("web")
    assert web_only.calls_api_unavailable == "the calls API is not configured: STREAM_API_KEY is unset"
    full = {**base, "STREAM_API_KEY": "k", "HMS_ACCESS_KEY": "a", "HMS_APP_SECRET": "b"}
    assert load_settings(full).calls_api_unavailable is None
    assert "HMS_APP_SECRET" in (load_settings({**full, "HMS_APP_SECRET": ""}).calls_api_unavailable or "")
    assert "dry run" in (load_settings({**full, "CALLSYNC_DRY_RUN": "true"}).calls_api_unavailable or "")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000", "http://127.8.0.1", "http://localhost:8080/v2", "http://[::1]:80"])
def test_http_is_accepted_to_loopback_hosts_only(url):
    assert load_settings({"STREAM_BASE_URL": url, "HMS_BASE_URL": url}).hms_base_url == url.rstrip("/")


@pytest.mark.parametrize(
    ("env", "named", "needed"),
    [
        ({"CALLSYNC_STREAM_UPDATE_RATE": "1/h", "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS": "60"}, "CALLSYNC_STREAM_UPDATE_RATE", 113),
        ({"CALLSYNC_STALE_FLAG_GRACE_SECONDS": "3600", "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS": "30"}, "GRACE", 113),
    ],
)
def test_waits_too_long_for_the_visibility_timeout_are_refused(env, named, needed):
    # Served in hops of half the timeout; more than 64 hops would keep the workers hopping.
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert named in str(err.value) and "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS" in str(err.value)
    assert f"at least {needed}" in str(err.value)
    assert load_settings({**env, "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS": str(needed)}).longest_countdown_seconds == needed / 2


def test_the_issues_short_timeout_and_slow_ceiling_are_served_in_hops():
    settings = load_settings({"CALLSYNC_STREAM_UPDATE_RATE": "1/m", "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS": "10"})
    assert settings.longest_countdown_seconds == 5.0


def test_the_fixed_retry_waits_fit_the_hops_of_the_shortest_timeout():
    from worker.core.upstream import MAX_WAIT_SECONDS, backoff_seconds
    from worker.settings import MAX_HOPS

    shortest = load_settings({"CALLSYNC_VISIBILITY_TIMEOUT_SECONDS": "10"}).longest_countdown_seconds
    longest_retry = max(MAX_WAIT_SECONDS + 1, backoff_seconds(30, 0.999999) + 1)  # a 429's wait and jitter, the backoff cap
    assert longest_retry <= MAX_HOPS * shortest


def test_a_stream_secret_list_signs_with_the_first_and_verifies_with_any():
    settings = load_settings({"STREAM_API_SECRET": " new-secret , old-secret ,,"})
    assert settings.stream_api_secret == "new-secret"
    assert settings.stream_secrets == ("new-secret", "old-secret")
    assert set(settings.secrets) >= {"new-secret", "old-secret"}  # both scrubbed from logs
    assert "secret" not in repr(settings)
    assert load_settings({"STREAM_API_SECRET": "one"}).stream_secrets == ("one",)
    with pytest.raises(ConfigError, match="STREAM_API_SECRET"):
        load_settings({"REDIS_URL": "redis://x", "STREAM_API_SECRET": " , "}).require("web")
