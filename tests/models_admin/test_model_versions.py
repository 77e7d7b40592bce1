"""Model versions: one production version, audited promotions, idempotent
registration of the default model."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from models_admin.models import ModelVersion, Promotion
from models_admin.selectors import model_version_get_production
from models_admin.services import (
    model_version_create,
    model_version_promote,
    model_version_register,
)
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_the_database_refuses_a_second_production_version():
    ModelVersionFactory(state=ModelVersion.State.PRODUCTION)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersionFactory(state=ModelVersion.State.PRODUCTION)


def test_promotion_moves_production_and_records_who_when_and_why():
    operator = UserFactory(is_staff=True)
    first = ModelVersionFactory()
    second = ModelVersionFactory()
    model_version_promote(version=first)
    promotion = model_version_promote(version=second, by=operator, note="better eval loss")
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == ("archived", "production")
    assert model_version_get_production() == second
    assert promotion.from_version == first
    assert promotion.to_version == second
    assert promotion.by == operator
    assert promotion.note == "better eval loss"
    assert promotion.created_at is not None
    assert ModelVersion.objects.filter(state="production").count() == 1


def test_rollback_is_a_promotion_of_the_previous_version():
    first, second = ModelVersionFactory(), ModelVersionFactory()
    model_version_promote(version=first)
    model_version_promote(version=second)
    model_version_promote(version=first, note="rollback")
    assert model_version_get_production() == first
    assert list(Promotion.objects.values_list("to_version__name", flat=True)) == [
        first.name,
        second.name,
        first.name,
    ]


def test_promoting_the_production_version_again_records_nothing():
    version = ModelVersionFactory()
    model_version_promote(version=version)
    assert model_version_promote(version=version) is None
    assert Promotion.objects.count() == 1


def test_registering_the_default_model_twice_changes_nothing(settings, tmp_path):
    settings.MODEL_DIR = tmp_path
    folder = tmp_path / "smollm2"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    first = model_version_register(name="SmolLM2", folder=folder)
    second = model_version_register(name="SmolLM2", folder=folder)
    assert first.pk == second.pk
    assert first.state == "production"
    assert first.folder == "smollm2"  # relative to MODEL_DIR
    assert first.path == folder
    assert ModelVersion.objects.count() == 1
    assert Promotion.objects.count() == 1


def test_registering_does_not_displace_an_existing_production_version(settings, tmp_path):
    settings.MODEL_DIR = tmp_path
    current = ModelVersionFactory()
    model_version_promote(version=current)
    added = model_version_register(name="other", folder=tmp_path / "other")
    assert added.state == "candidate"
    assert model_version_get_production() == current


def test_a_folder_outside_model_dir_is_kept_absolute(settings, tmp_path):
    settings.MODEL_DIR = tmp_path / "models"
    version = model_version_create(name="elsewhere", folder=tmp_path / "elsewhere")
    assert version.folder == str(tmp_path / "elsewhere")
    assert version.path == tmp_path / "elsewhere"


def test_the_admin_lists_versions_and_cannot_edit_state(client):
    admin = UserFactory(is_staff=True, is_superuser=True)
    version = ModelVersionFactory(name="listed-version")
    client.force_login(admin)
    listing = client.get("/admin/models_admin/modelversion/")
    assert listing.status_code == 200
    assert b"listed-version" in listing.content
    change = client.get(f"/admin/models_admin/modelversion/{version.pk}/change/")
    assert change.status_code == 200
    assert b'name="state"' not in change.content
    assert client.get("/admin/models_admin/promotion/add/").status_code == 403
