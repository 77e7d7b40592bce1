"""Registering the speech recogniser: a Whisper model folder, or none
(pocketsphinx, the embedded default)."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from models_admin.models import SpeechModel


def speech_folder_check(folder: Path) -> None:
    """Raise ValidationError unless folder holds a Whisper model that
    transformers can load offline."""
    config = folder / "config.json"
    if not config.is_file():
        raise ValidationError(f"{folder} is not a model folder (no config.json).")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, OSError) as exc:
        raise ValidationError(f"{config} cannot be read ({exc}).") from None
    if model_type != "whisper":
        raise ValidationError(f"{folder} holds a {model_type!r} model, not a Whisper one.")
    # The feature extractor's settings: preprocessor_config.json, or
    # processor_config.json as newer transformers save them.
    missing = [
        " or ".join(names)
        for names in (
            ("preprocessor_config.json", "processor_config.json"),
            ("tokenizer_config.json",),
        )
        if not any((folder / name).is_file() for name in names)
    ]
    if missing:
        raise ValidationError(f"{folder} lacks {', '.join(missing)}.")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ValidationError(f"{folder} holds no weights (*.safetensors).")


@transaction.atomic
def speech_model_register(*, folder: Path, name: str = "") -> SpeechModel:
    """Make the Whisper model in folder the recogniser of every speech
    worker (they swap to it within seconds)."""
    folder = folder.resolve()
    speech_folder_check(folder)
    SpeechModel.objects.filter(active=True).update(active=False)
    return SpeechModel.objects.create(name=name or folder.name, path=str(folder), active=True)


@transaction.atomic
def speech_model_default() -> None:
    """Go back to pocketsphinx."""
    SpeechModel.objects.filter(active=True).update(active=False)


def speech_model_path() -> Path | None:
    """The folder the speech workers load; None for pocketsphinx."""
    active = SpeechModel.objects.filter(active=True).first()
    return Path(active.path) if active is not None else None
