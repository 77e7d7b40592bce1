from __future__ import annotations

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


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    name = factory.Sequence(lambda n: f"version-{n}")
    folder = factory.Sequence(lambda n: f"version-{n}")
    kind = ModelVersion.Kind.BASE
    state = ModelVersion.State.CANDIDATE
