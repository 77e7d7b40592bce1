"""Preference tuning on the dashboard over HTTP: preference datasets (an
upload of pairs, the demo pairs, pairs from feedback), a DPO job from the
form, its page, and the version page saying which feedback went into it."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from chat.models import Feedback, Message
from chat.services.conversations import conversation_create
from chat.services.preferences import preference_dataset_create
from models_admin.models import Dataset, ModelVersion, TrainingJob
from models_admin.services.datasets import DEMO_PREFERENCES_NAME, dataset_pairs_create
from models_admin.services.training import (
    PARAMS,
    param_default,
    training_checkpoint_register,
    training_job_create,
    training_job_progress,
)
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"How long is the warranty on item {n}?"}],
        "chosen": "Two years.",
        "rejected": f"{n + 3} years.",
    }
    for n in range(20)
]


@pytest.fixture
def production():
    return ModelVersionFactory(name="prod", state=ModelVersion.State.PRODUCTION)


@pytest.fixture
def broker(monkeypatch):
    from models_admin import tasks

    sent: list = []
    monkeypatch.setattr(tasks.training_job_run_task, "delay", lambda *args: sent.append(args))
    monkeypatch.setattr(tasks.model_version_evaluate_task, "delay", lambda *args: None)
    return sent


def _jsonl(*values) -> bytes:
    return "\n".join(json.dumps(v) for v in values).encode()


def test_an_upload_of_pairs_is_stored_as_a_preference_dataset_or_refused_by_line(client, runner):
    upload = SimpleUploadedFile("prefs.jsonl", _jsonl(*PAIRS), content_type="application/jsonl")
    response = client.post(
        reverse("dashboard:dataset-upload"),
        {"kind": "preferences", "name": "prefs", "eval_fraction": "0.1", "file": upload},
    )
    dataset = Dataset.objects.get(name="prefs")
    assert response.status_code == 302 and dataset.kind == "preferences"
    page = client.get(reverse("dashboard:dataset", args=[dataset.pk])).content.decode()
    assert 'data-testid="rejected-answer"' in page and "chosen" in page
    bad = SimpleUploadedFile(
        "bad.jsonl", _jsonl(PAIRS[0], {**PAIRS[1], "rejected": "Two years."}, {"prompt": []})
    )
    response = client.post(
        reverse("dashboard:dataset-upload"),
        {"kind": "preferences", "name": "bad", "eval_fraction": "0.1", "file": bad},
    )
    page = response.content.decode()
    assert response.status_code == 200 and not Dataset.objects.filter(name="bad").exists()
    assert "Line 2" in page and "Line 3" in page and "Line 1" not in page
    assert "the same answer" in page


def test_the_demo_pairs_are_created_once_from_the_datasets_page(client, runner):
    page = client.get(reverse("dashboard:datasets")).content.decode()
    assert 'data-testid="create-demo-preferences"' in page
    response = client.post(reverse("dashboard:dataset-demo"), {"which": "preferences"})
    dataset = Dataset.objects.get(name=DEMO_PREFERENCES_NAME)
    assert response.url == reverse("dashboard:dataset", args=[dataset.pk])
    assert dataset.stats["pairs"] == 240
    again = client.post(reverse("dashboard:dataset-demo"), {"which": "preferences"}, follow=True)
    assert "already exists" in again.content.decode()
    page = client.get(reverse("dashboard:datasets")).content.decode()
    assert 'data-testid="demo-preferences"' in page


def _rated_pair(user) -> tuple[Message, Message]:
    conversation = conversation_create(user=user)
    question = Message.objects.create(
        conversation=conversation, role="user", content="Do you ship to Norway?"
    )
    wrong, right = (
        Message.objects.create(
            conversation=conversation, role="assistant", parent=question, content=text,
            status=Message.Status.DONE,
        )
        for text in ("No, never.", "Yes: 19.95 and 7-14 working days.")
    )  # fmt: skip
    Feedback.objects.create(message=wrong, user=user, rating=Feedback.Rating.DOWN)
    Feedback.objects.create(message=right, user=user, rating=Feedback.Rating.UP)
    return right, wrong


def test_pairs_from_feedback_make_a_dataset_and_say_when_there_are_none(client, runner):
    refused = client.post(reverse("dashboard:dataset-feedback"), follow=True)
    assert "No conversation in the range holds a preference pair" in refused.content.decode()
    right, wrong = _rated_pair(UserFactory())
    response = client.post(reverse("dashboard:dataset-feedback"))
    dataset = Dataset.objects.get(source=Dataset.Source.FEEDBACK)
    assert response.url == reverse("dashboard:dataset", args=[dataset.pk])
    assert dataset.created_by == runner and dataset.stats["origins"] == {"rating": 1}
    page = client.get(response.url).content.decode()
    assert f"messages {right.pk} over {wrong.pk}" in page


def test_a_dpo_job_from_the_form_takes_dpo_defaults_and_its_page_draws_the_dpo_curves(
    client, runner, production, broker
):
    dataset = dataset_pairs_create(name="prefs", pairs=PAIRS, source=Dataset.Source.UPLOAD)
    page = client.get(reverse("dashboard:job-new")).content.decode()
    assert 'value="dpo"' in page and "data-defaults" in page
    data = {"kind": "dpo", "dataset": dataset.pk, "base_version": production.pk}
    for name, spec in PARAMS.items():
        if "dpo" in spec[4] and spec[0] is not bool:
            data[name] = str(param_default("dpo", name))
    data["beta"] = "0.2"
    response = client.post(reverse("dashboard:job-new"), data)
    job = TrainingJob.objects.get()
    assert response.status_code == 302
    assert job.kind == "dpo" and job.params["beta"] == 0.2
    assert job.params["learning_rate"] == param_default("dpo", "learning_rate")
    training_job_progress(
        job_id=job.pk,
        report={"step": 1, "loss": 0.6, "accuracy": 0.75, "margin": 0.1, "lr": 1e-6,
                "eval_accuracy": 0.8, "eval_margin": 0.05},
    )  # fmt: skip
    page = client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert 'data-chart="accuracy"' in page and 'data-chart="margin"' in page
    assert ">80%<" in page and "Base version (reference)" in page
    curve = client.get(reverse("dashboard:job-data", args=[job.pk])).json()["curve"]
    assert curve["eval_accuracy"] == [[1, 0.8]] and curve["margin"] == [[1, 0.1]]


def test_a_fine_tune_form_refuses_a_preference_dataset(client, runner, production, broker):
    dataset = dataset_pairs_create(name="prefs", pairs=PAIRS, source=Dataset.Source.UPLOAD)
    data = {"kind": "finetune", "dataset": dataset.pk, "base_version": production.pk}
    response = client.post(reverse("dashboard:job-new"), data)
    assert response.status_code == 200 and not TrainingJob.objects.exists()
    assert "only a preference-tuning (DPO) job" in response.content.decode()


def test_the_version_page_names_the_feedback_a_preference_tuned_version_learned_from(
    client, runner, production, settings, tmp_path
):
    settings.TRAINING_DPO_MIN_PAIRS = 1
    right, _wrong = _rated_pair(UserFactory())
    dataset = preference_dataset_create(name="feedback", eval_fraction=0.0)
    job = training_job_create(kind="dpo", dataset=dataset, base_version=production, enqueue=False)
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    version = training_checkpoint_register(job=job, step=1, folder=folder, metrics={})
    assert version.kind == ModelVersion.Kind.PREFERENCE
    page = client.get(reverse("dashboard:version", args=[version.pk])).content.decode()
    assert 'data-testid="version-feedback"' in page
    assert "rated up over a version rated down" in page
    review = reverse("dashboard:conversation-review", args=[right.conversation_id])
    assert review in page
