from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import factory
from django.contrib.auth import get_user_model

from models_admin.models import ModelVersion


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


_FOLDERS = Path(tempfile.mkdtemp(prefix="versions-"))
atexit.register(shutil.rmtree, _FOLDERS, ignore_errors=True)


def _model_folder(name: str) -> str:
    """A folder that passes the promotion check (config.json present); tests
    that load weights pass a real folder instead."""
    folder = _FOLDERS / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    return str(folder)


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    name = factory.Sequence(lambda n: f"version-{n}")
    folder = factory.LazyAttribute(lambda version: _model_folder(version.name))
    kind = ModelVersion.Kind.BASE
    state = ModelVersion.State.CANDIDATE
