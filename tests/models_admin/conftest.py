"""Fixtures of the dashboard tests."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from tests.factories import UserFactory


def grant(user, *codenames: str) -> None:
    """Give user the permissions with these codenames."""
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


@pytest.fixture
def viewer(client):
    """A staff member without any dashboard permission, logged in."""
    user = UserFactory(username="viewer", is_staff=True)
    client.force_login(user)
    return user
