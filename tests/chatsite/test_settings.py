"""Settings come from the environment, with embedded defaults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

_PRINT = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "debug": settings.DEBUG,
    "secret_key": settings.SECRET_KEY,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "engine": db["ENGINE"],
    "name": str(db["NAME"]),
    "options": db.get("OPTIONS", {}),
    "redis_url": settings.REDIS_URL,
    "broker": settings.CELERY_BROKER_URL,
    "backend": settings.CELERY_RESULT_BACKEND,
    "channel_hosts": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"],
    "model_dir": str(settings.MODEL_DIR),
    "default_model_dir": str(settings.DEFAULT_MODEL_DIR),
    "device": settings.INFERENCE_DEVICE,
    "dtype": settings.INFERENCE_DTYPE,
    "web_port": settings.WEB_PORT,
    "session_cookie_secure": settings.SESSION_COOKIE_SECURE,
}))
"""

_VARIABLES = (
    "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "MODEL_DIR",
    "DEFAULT_MODEL_DIR", "INFERENCE_DEVICE", "INFERENCE_DTYPE", "WEB_PORT", "VAR_DIR",
)  # fmt: skip


def _settings(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if k not in _VARIABLES}
    clean.update(VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="chatsite.settings")
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + _PRINT],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )


def _values(tmp_path, **env: str) -> dict:
    result = _settings(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_defaults_are_the_embedded_default(tmp_path):
    values = _values(tmp_path)
    var = tmp_path / "var"
    assert values["debug"] is True
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(var / "db.sqlite3")
    assert "journal_mode=WAL" in values["options"]["init_command"]
    assert values["options"]["timeout"] >= 5
    assert values["options"]["transaction_mode"] == "IMMEDIATE"
    assert values["redis_url"] == f"unix://{var / 'redis' / 'redis.sock'}"
    assert values["broker"] == f"redis+socket://{var / 'redis' / 'redis.sock'}"
    assert values["backend"] == values["broker"]
    assert values["channel_hosts"] == [{"address": values["redis_url"]}]
    assert values["model_dir"] == str(var / "models")
    assert values["default_model_dir"] == str(var / "models" / "smollm2-135m-instruct")
    assert (values["device"], values["dtype"]) == ("auto", "auto")
    assert values["web_port"] == 8000
    assert "localhost" in values["allowed_hosts"]


def test_development_secret_key_is_generated_once_and_kept(tmp_path):
    first = _values(tmp_path)["secret_key"]
    second = _values(tmp_path)["secret_key"]
    assert len(first) >= 50
    assert first == second
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0


def test_environment_overrides_every_default(tmp_path):
    values = _values(
        tmp_path,
        DEBUG="false",
        SECRET_KEY="s" * 60,
        ALLOWED_HOSTS="chat.example.com, api.example.com",
        DATABASE_URL="postgres://app:pw@db.internal:5432/chat",
        REDIS_URL="redis://cache.internal:6380/2",
        MODEL_DIR=str(tmp_path / "models"),
        INFERENCE_DEVICE="cpu",
        INFERENCE_DTYPE="bfloat16",
        WEB_PORT="9000",
    )
    assert values["debug"] is False
    assert values["secret_key"] == "s" * 60
    assert values["allowed_hosts"] == ["chat.example.com", "api.example.com"]
    assert values["engine"] == "django.db.backends.postgresql"
    assert values["name"] == "chat"
    assert values["redis_url"] == "redis://cache.internal:6380/2"
    assert values["broker"] == values["backend"] == "redis://cache.internal:6380/2"
    assert values["model_dir"] == str(tmp_path / "models")
    assert values["default_model_dir"] == str(tmp_path / "models" / "smollm2-135m-instruct")
    assert (values["device"], values["dtype"]) == ("cpu", "bfloat16")
    assert values["web_port"] == 9000
    assert values["session_cookie_secure"] is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "false"}, "SECRET_KEY must be set when DEBUG is off"),
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"WEB_PORT": "eighty"}, "WEB_PORT must be a whole number"),
        ({"INFERENCE_DEVICE": "tpu"}, "INFERENCE_DEVICE must be one of auto, cpu, cuda"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_variable(tmp_path, env, message):
    result = _settings(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_dotenv_fills_unset_variables_and_the_environment_wins(tmp_path, monkeypatch):
    from chatsite.env import dotenv_load

    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n"
        "CHATSITE_A=from-file\n"
        "export CHATSITE_B='quoted value'\n"
        "CHATSITE_C=from-file\n"
        "CHATSITE_EMPTY=\n"
    )
    monkeypatch.setenv("CHATSITE_C", "from-environment")
    for name in ("CHATSITE_A", "CHATSITE_B", "CHATSITE_EMPTY"):
        monkeypatch.delenv(name, raising=False)
    dotenv_load(dotenv)
    import os

    assert os.environ["CHATSITE_A"] == "from-file"
    assert os.environ["CHATSITE_B"] == "quoted value"
    assert os.environ["CHATSITE_C"] == "from-environment"
    assert "CHATSITE_EMPTY" not in os.environ
    for name in ("CHATSITE_A", "CHATSITE_B"):
        monkeypatch.delenv(name)


def test_a_malformed_dotenv_line_names_the_file_and_line(tmp_path):
    from django.core.exceptions import ImproperlyConfigured

    from chatsite.env import dotenv_load

    dotenv = tmp_path / ".env"
    dotenv.write_text("GOOD=1\nthis is not an assignment\n")
    with pytest.raises(ImproperlyConfigured, match=r"\.env:2: expected NAME=value"):
        dotenv_load(dotenv)
