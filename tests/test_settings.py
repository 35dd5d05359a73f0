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
        }
    )
    assert settings.hms_webhook_secrets == ("old", "new")
    assert settings.stream_api_secret == "" and settings.stream_webhook_secrets == ()
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
        ("REDIS_URL", "localhost:6379"),
        ("HMS_BASE_URL", "api.100ms.live"),
        ("HMS_WEBHOOK_HEADER", "X Secret"),
    ],
)
def test_malformed_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as err:
        load_settings({name: value})
    assert name in str(err.value)


def test_roles_require_what_they_need_and_never_echo_secrets():
    base = {"REDIS_URL": "redis://x", "STREAM_API_SECRET": "topsecret"}
    with pytest.raises(ConfigError, match="HMS_WEBHOOK_SECRET"):
        load_settings(base).require("web")
    load_settings({**base, "HMS_WEBHOOK_SECRET": "h"}).require("web")
    with pytest.raises(ConfigError, match="STREAM_API_KEY") as err:
        load_settings(base).require("worker")
    assert "topsecret" not in str(err.value)
    load_settings({**base, "CALLSYNC_DRY_RUN": "1"}).require("worker")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings({}).require("beat")
    assert "topsecret" not in repr(load_settings(base))


def test_task_events_are_off_unless_asked_for():
    from worker.celery_app import create_celery

    assert create_celery(load_settings({})).conf.worker_send_task_events is False
    assert create_celery(load_settings({"CALLSYNC_TASK_EVENTS": "true"})).conf.worker_send_task_events is True


def test_a_stream_secret_list_signs_with_the_first_and_verifies_with_any():
    settings = load_settings({"STREAM_API_SECRET": " new-secret , old-secret ,,"})
    assert settings.stream_api_secret == "new-secret"
    assert settings.stream_webhook_secrets == ("new-secret", "old-secret")
    assert set(settings.secrets) >= {"new-secret", "old-secret"}  # both scrubbed from logs
    assert "secret" not in repr(settings)
    assert load_settings({"STREAM_API_SECRET": "one"}).stream_webhook_secrets == ("one",)
    with pytest.raises(ConfigError, match="STREAM_API_SECRET"):
        load_settings({"REDIS_URL": "redis://x", "STREAM_API_SECRET": " , "}).require("web")
