"""Fixtures of the models_admin tests: dashboard users, a registered
tiny base version with the demo dataset, and real Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission

from models_admin.services import model_version_register
from models_admin.services.datasets import dataset_demo_create
from tests.conftest import REPO_ROOT, child_env, database_url_for_children
from tests.factories import UserFactory

#: The training lease of the Celery workers tests start, in seconds.
CELERY_LEASE_S = 3


def grant(user, *codenames: str) -> None:
    """Give user the permissions with these codenames."""
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


@pytest.fixture
def viewer(client):
    """A staff member without any dashboard permission, logged in."""
    user = UserFactory(username="viewer", is_staff=True)
    client.force_login(user)
    return user


@pytest.fixture
def runner(client):
    """A staff member who may run training, logged in."""
    user = UserFactory(username="trainer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="run_trainingjob"))
    client.force_login(user)
    return user


@pytest.fixture
def base_version(tiny_model_dir, settings, tmp_path):
    settings.MODEL_DIR = tmp_path / "models"
    settings.MODEL_DIR.mkdir()
    return model_version_register(name="tiny", folder=tiny_model_dir)


@pytest.fixture
def demo(base_version):
    return dataset_demo_create(count=60)


@pytest.fixture
def celery_worker(settings, tmp_path):
    """Start Celery workers as `make run` does (solo pool); stop them all."""
    started: list[subprocess.Popen] = []
    logs: list = []

    def start() -> subprocess.Popen:
        log = (tmp_path / f"celery-{len(started)}.log").open("w")
        env = child_env(
            DATABASE_URL=database_url_for_children(),
            MODEL_DIR=str(settings.MODEL_DIR),
            TRAINING_LEASE_S=str(CELERY_LEASE_S),
            INFERENCE_THREADS="1",
        )
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "chatsite",
                "worker",
                "-Q",
                "training,default,evaluation",
                "--pool",
                "solo",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "info",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(process)
        logs.append(log)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for log in logs:
        log.close()
