"""The dashboard's training area over HTTP: who may see and act, the new-job
form and its validation, cancel, the live data of a job, and datasets
(upload, preview)."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from models_admin.dashboard.selectors.jobs import curve_series, duration_format
from models_admin.dashboard.views import datasets as dataset_views
from models_admin.models import Dataset, Evaluation, ModelVersion, TrainingJob
from models_admin.services.datasets import DEMO_NAME, dataset_create
from models_admin.services.training import (
    PARAMS,
    training_job_create,
    training_job_log,
    training_job_progress,
)
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db

CONVERSATIONS = [
    [
        {"role": "user", "content": f"Question {n}?"},
        {"role": "assistant", "content": f"Answer {n}."},
    ]
    for n in range(10)
]
VALID_JSONL = b"".join(
    json.dumps({"messages": conversation}).encode() + b"\n" for conversation in CONVERSATIONS
)


@pytest.fixture
def dataset():
    # Stored before any production version exists, so no tokenizer is
    # loaded for token counts (the tests do not need them).
    return dataset_create(name="shop", conversations=CONVERSATIONS, source=Dataset.Source.UPLOAD)


@pytest.fixture
def production(dataset):
    return ModelVersionFactory(name="prod", state=ModelVersion.State.PRODUCTION)


@pytest.fixture
def staff(client):
    user = UserFactory(username="watcher", is_staff=True)
    client.force_login(user)
    return user


@pytest.fixture
def job(dataset, production):
    return training_job_create(
        kind="finetune", dataset=dataset, params={"steps": 10}, enqueue=False
    )


@pytest.fixture
def broker(monkeypatch):
    """The Celery edge: what would have gone to the training queue."""
    from models_admin import tasks

    sent: dict[str, list] = {"run": [], "evaluate": []}
    monkeypatch.setattr(
        tasks.training_job_run_task, "delay", lambda *args: sent["run"].append(args)
    )
    monkeypatch.setattr(
        tasks.model_version_evaluate_task, "delay", lambda *args: sent["evaluate"].append(args)
    )
    return sent


def _form(dataset, base, **params):
    data = {"kind": "finetune", "dataset": dataset.pk, "base_version": base.pk}
    for name, (_type, default, *_rest) in PARAMS.items():
        if "finetune" in PARAMS[name][4] and not isinstance(default, bool):
            data[name] = str(default)
    data.update({name: str(value) for name, value in params.items()})
    return data


def _field_html(html: str, name: str) -> str:
    """The markup of one form field's wrapper, errors included."""
    match = re.search(rf'<div class="field[^"]*" data-field="{name}".*?\n</div>', html, re.S)
    assert match, f"no field {name}"
    return match.group(0)


def _pages(job, dataset):
    return [
        reverse("dashboard:jobs"),
        reverse("dashboard:job", args=[job.pk]),
        reverse("dashboard:job-data", args=[job.pk]),
        reverse("dashboard:job-new"),
        reverse("dashboard:datasets"),
        reverse("dashboard:dataset", args=[dataset.pk]),
        reverse("dashboard:dataset-upload"),
    ]


# --- access -------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client, job, dataset):
    for url in _pages(job, dataset):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("login")), url


def test_signed_in_users_who_are_not_staff_are_refused(client, job, dataset):
    client.force_login(UserFactory(username="customer"))
    for url in _pages(job, dataset):
        assert client.get(url).status_code == 403, url
    response = client.post(reverse("dashboard:job-cancel", args=[job.pk]))
    assert response.status_code == 403
    assert TrainingJob.objects.get(pk=job.pk).state == TrainingJob.State.QUEUED


def test_staff_without_the_training_right_see_jobs_but_cannot_start_or_cancel(
    client, staff, job, dataset, production
):
    listing = client.get(reverse("dashboard:jobs"))
    assert listing.status_code == 200
    assert f'data-job="{job.pk}"' in listing.content.decode()
    assert 'data-testid="new-job"' not in listing.content.decode()
    detail = client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert 'data-testid="cancel-job"' not in detail
    page = client.get(reverse("dashboard:dataset", args=[dataset.pk])).content.decode()
    assert 'data-testid="finetune-on-dataset"' not in page
    assert (
        'data-testid="upload-dataset"'
        not in client.get(reverse("dashboard:datasets")).content.decode()
    )

    assert client.get(reverse("dashboard:job-new")).status_code == 403
    refused = client.post(reverse("dashboard:job-new"), _form(dataset, production))
    assert refused.status_code == 403
    assert b"run_trainingjob" in refused.content
    assert client.post(reverse("dashboard:job-cancel", args=[job.pk])).status_code == 403
    upload = SimpleUploadedFile("data.jsonl", VALID_JSONL)
    response = client.post(
        reverse("dashboard:dataset-upload"), {"name": "x", "eval_fraction": "0.1", "file": upload}
    )
    assert response.status_code == 403
    assert TrainingJob.objects.count() == 1
    assert TrainingJob.objects.get().state == TrainingJob.State.QUEUED
    assert Dataset.objects.count() == 1


# --- jobs ---------------------------------------------------------------------


def test_the_job_list_filters_by_state_and_offers_new_jobs_to_trainers(
    client, runner, dataset, production
):
    queued = training_job_create(kind="finetune", dataset=dataset, enqueue=False)
    cancelled = training_job_create(kind="distill", dataset=dataset, enqueue=False)
    TrainingJob.objects.filter(pk=cancelled.pk).update(state=TrainingJob.State.CANCELLED)

    everything = client.get(reverse("dashboard:jobs")).content.decode()
    assert 'data-testid="new-job"' in everything
    assert f'data-job="{queued.pk}"' in everything and f'data-job="{cancelled.pk}"' in everything
    only = client.get(reverse("dashboard:jobs"), {"state": "cancelled"}).content.decode()
    assert f'data-job="{cancelled.pk}"' in only and f'data-job="{queued.pk}"' not in only
    assert "0 / 60" in everything  # the progress bar counts steps from the start


def test_the_new_job_form_is_prefilled_from_the_dataset_link_and_production(
    client, runner, dataset, production
):
    response = client.get(reverse("dashboard:job-new"), {"dataset": dataset.pk})
    assert response.status_code == 200
    form = response.context["form"]
    assert form["dataset"].value() == dataset.pk
    assert form["base_version"].value() == production.pk
    html = response.content.decode()
    rate = _field_html(html, "learning_rate")
    assert 'value="0.0001"' in rate and 'min="1e-07"' in rate and 'max="1"' in rate
    assert 'data-kinds="distill"' in _field_html(html, "temperature")
    assert "Distill: train a smaller student" in html


def test_a_valid_form_queues_the_job_with_its_parameters_and_sends_it_to_the_queue(
    client, runner, dataset, production, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("dashboard:job-new"),
            _form(dataset, production, learning_rate="0.0003", steps="12", lora="on"),
        )
    job = TrainingJob.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("dashboard:job", args=[job.pk])
    assert job.state == TrainingJob.State.QUEUED and job.kind == "finetune"
    assert job.created_by == runner and job.base_version == production
    assert job.params["learning_rate"] == 3e-4 and job.params["steps"] == 12
    assert job.params["lora"] is True and "temperature" not in job.params
    assert broker["run"] == [(job.pk,)]
    # The base is measured on the job's data on the evaluation queue, not
    # ahead of the job on the training queue.
    [evaluation] = Evaluation.objects.filter(job=job)
    assert (evaluation.version, evaluation.dataset) == (production, dataset)
    assert broker["evaluate"] == [(evaluation.pk,)]


def test_evaluations_have_their_own_queue():
    from chatsite.celery import app
    from models_admin import tasks

    route = app.amqp.router.route({}, tasks.model_version_evaluate_task.name)
    assert route["queue"].name == "evaluation"
    route = app.amqp.router.route({}, tasks.training_job_run_task.name)
    assert route["queue"].name == "training"


def test_the_job_page_says_what_a_job_and_its_measurements_wait_for(
    client, staff, dataset, production, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = training_job_create(kind="finetune", dataset=dataset, params={"steps": 5})
        second = training_job_create(kind="finetune", dataset=dataset, params={"steps": 5})
    data = client.get(reverse("dashboard:job-data", args=[second.pk])).json()
    assert data["note"] == "Waiting for a training worker; 1 job queued before this one."
    TrainingJob.objects.filter(pk=first.pk).update(state=TrainingJob.State.RUNNING)
    data = client.get(reverse("dashboard:job-data", args=[second.pk])).json()
    assert data["note"] == f"Waiting for the training worker: it is running {first}."

    data = client.get(reverse("dashboard:job-data", args=[first.pk])).json()
    [row] = data["evaluations"]
    assert row["what"] == f"the base model on {dataset.name}"
    assert row["text"] == "waiting for the evaluation worker" and data["evaluating"]
    evaluation = Evaluation.objects.get(pk=row["id"])
    Evaluation.objects.filter(pk=evaluation.pk).update(
        state=Evaluation.State.RUNNING, phase="answers", done=2, total=8
    )
    page = client.get(reverse("dashboard:job", args=[first.pk])).content.decode()
    assert "Measuring the base model on shop:" in page
    assert "answers to the fixed prompts 2/8" in page
    Evaluation.objects.filter(pk=evaluation.pk).update(
        state=Evaluation.State.FAILED, error="Traceback...\nOSError: no model file"
    )
    data = client.get(reverse("dashboard:job-data", args=[first.pk])).json()
    assert data["evaluations"][0]["text"] == "failed: OSError: no model file"
    assert not data["evaluating"]


def test_a_form_sent_without_scripts_starts_the_job_with_the_kind_s_parameters_only(
    client, runner, dataset, production
):
    """Without the page's script every input is sent, the other kind's
    still at their defaults; those are left out, not refused."""
    data = {"kind": "distill", "dataset": dataset.pk, "base_version": production.pk}
    for name, (_type, default, *_rest) in PARAMS.items():
        if not isinstance(default, bool):
            data[name] = str(default)
    response = client.post(reverse("dashboard:job-new"), data)
    assert response.status_code == 302, response.context["form"].errors
    job = TrainingJob.objects.get()
    assert job.kind == "distill" and "lora_r" not in job.params
    assert job.params["temperature"] == 1.0


def test_a_distill_job_takes_a_student_version_and_its_own_parameters(
    client, runner, dataset, production
):
    student = ModelVersionFactory(name="small")
    data = _form(dataset, production, temperature="3", alpha="0.7", student_layers="4")
    data.update(kind="distill", student_version=student.pk)
    del data["lora_r"], data["lora_alpha"]
    response = client.post(reverse("dashboard:job-new"), data)
    assert response.status_code == 302, response.context["form"].errors
    job = TrainingJob.objects.get()
    assert job.kind == "distill" and job.student_version == student
    assert (job.params["temperature"], job.params["alpha"]) == (3.0, 0.7)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"learning_rate": "5"}, "learning_rate", "Must be between 1e-07 and 1."),
        ({"steps": "0"}, "steps", "Must be between 1 and 1e+06."),
        ({"temperature": "3.5"}, "temperature", "Not a finetune parameter."),
        ({"batch_size": "2.5"}, "batch_size", "Enter a whole number."),
    ],
)
def test_bad_parameters_are_shown_next_to_their_field_and_start_nothing(
    client, runner, dataset, production, params, field, message
):
    response = client.post(reverse("dashboard:job-new"), _form(dataset, production, **params))
    assert response.status_code == 200
    assert not TrainingJob.objects.exists()
    assert response.context["form"].errors[field] == [message]
    html = response.content.decode()
    assert message in _field_html(html, field)
    # What was typed stays in the form.
    assert f'value="{params[field]}"' in _field_html(html, field)
    assert 'value="finetune"' in html and "checked" in html


def test_a_student_version_on_a_fine_tune_is_refused_next_to_it(
    client, runner, dataset, production
):
    student = ModelVersionFactory(name="small")
    data = _form(dataset, production, learning_rate="0.0002")
    data["student_version"] = student.pk
    response = client.post(reverse("dashboard:job-new"), data)
    assert response.status_code == 200 and not TrainingJob.objects.exists()
    assert "Only a distill job has a student." in _field_html(
        response.content.decode(), "student_version"
    )
    assert 'value="0.0002"' in _field_html(response.content.decode(), "learning_rate")


def test_a_dataset_without_training_examples_is_refused_next_to_it(
    client, runner, dataset, production
):
    Dataset.objects.filter(pk=dataset.pk).update(stats={"examples": 0, "train": 0})
    response = client.post(reverse("dashboard:job-new"), _form(dataset, production))
    assert not TrainingJob.objects.exists()
    assert "The dataset has no training examples." in _field_html(
        response.content.decode(), "dataset"
    )


def test_cancel_ends_a_queued_job_and_needs_a_post(client, runner, job):
    url = reverse("dashboard:job-cancel", args=[job.pk])
    assert client.get(url).status_code == 405
    response = client.post(url)
    assert response.status_code == 302
    assert response.url == reverse("dashboard:job", args=[job.pk])
    job.refresh_from_db()
    assert job.state == TrainingJob.State.CANCELLED and job.finished_at is not None
    page = client.get(response.url).content.decode()
    assert "is cancelled" in page and 'data-testid="cancel-job"' not in page


def test_cancel_of_a_running_job_asks_it_to_stop(client, runner, job):
    TrainingJob.objects.filter(pk=job.pk).update(state=TrainingJob.State.RUNNING)
    client.post(reverse("dashboard:job-cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.state == TrainingJob.State.RUNNING and job.cancel_requested


def test_a_trainer_sees_the_cancel_button_of_an_unfinished_job(client, runner, job):
    page = client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert 'data-testid="cancel-job"' in page
    assert f'action="{reverse("dashboard:job-cancel", args=[job.pk])}"' in page
    assert "data-confirm=" in page and "csrfmiddlewaretoken" in page
    # Ten steps and a checkpoint every twenty: the only one is the last.
    assert "the first comes at step 10." in page


def test_job_data_has_progress_curves_log_and_checkpoints(client, staff, job):
    TrainingJob.objects.filter(pk=job.pk).update(state=TrainingJob.State.RUNNING)
    for step in (1, 2, 3, 4, 5):
        report = {"step": step, "total_steps": 10, "loss": 3.0 - step * 0.2, "lr": 1e-4}
        report.update(examples_per_s=8.5, eta_s=125.0)
        if step == 5:
            report["eval_loss"] = 2.4
        training_job_progress(job_id=job.pk, report=report)
    training_job_log(job_id=job.pk, line="step 5 <b>done</b>")
    checkpoint = ModelVersionFactory(
        name="prod-finetune-step5",
        kind=ModelVersion.Kind.FINETUNE,
        job=job,
        step=5,
        metrics={
            "training": {"train_loss": 2.0, "eval_loss": 2.4},
            "eval_loss": 2.35,
            "perplexity": 10.49,
            "tokens_per_s": 41.0,
        },
    )

    response = client.get(reverse("dashboard:job-data", args=[job.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = response.json()
    assert data["state"] == "running" and data["step"] == 5 and data["total_steps"] == 10
    assert data["percent"] == 50.0 and data["eta"] == "2m 05s"
    assert data["progress"]["examples_per_s"] == 8.5 and data["progress"]["eval_loss"] == 2.4
    assert [point[0] for point in data["curve"]["loss"]] == [1, 2, 3, 4, 5]
    assert data["curve"]["loss"][0][1] == pytest.approx(2.8)
    assert data["curve"]["eval_loss"] == [[5, 2.4]]
    assert len(data["curve"]["lr"]) == 5
    assert "step 5 <b>done</b>" in data["log"]
    [row] = data["checkpoints"]
    assert row["url"] == reverse("dashboard:version", args=[checkpoint.pk])
    assert (row["step"], row["eval_loss"], row["perplexity"]) == (5, 2.35, 10.49)

    brief = client.get(reverse("dashboard:job-data", args=[job.pk]), {"brief": "1"}).json()
    assert brief["step"] == 5 and "curve" not in brief and "log" not in brief

    page = client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert "step 5 &lt;b&gt;done&lt;/b&gt;" in page and "<b>done</b>" not in page
    assert f'href="{row["url"]}"' in page
    assert 'id="job-data"' in page and 'data-chart="loss"' in page


def test_a_missing_job_is_not_found(client, staff):
    assert client.get(reverse("dashboard:job", args=[999])).status_code == 404
    assert client.get(reverse("dashboard:job-data", args=[999])).status_code == 404


def test_curves_keep_the_later_value_of_a_step_run_twice_and_stay_small():
    curve = [{"step": 1, "loss": 3.0, "lr": 1e-4}, {"step": 2, "loss": 2.5, "lr": 1e-4}]
    curve += [{"step": 2, "loss": 2.4, "lr": 1e-4, "eval_loss": 2.6}]
    curve += [{"step": 3, "loss": float("nan")}]
    series = curve_series(curve)
    assert series["loss"] == [[1, 3.0], [2, 2.4]]
    assert series["eval_loss"] == [[2, 2.6]]
    long = curve_series([{"step": s, "loss": 1.0 / s} for s in range(1, 5001)])["loss"]
    assert len(long) <= 1000 and long[-1] == [5000, 1.0 / 5000]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, ""), (4.4, "4s"), (125, "2m 05s"), (3 * 3600 + 60, "3h 01m"), (90000, "1d 1h")],
)
def test_durations_read_as_the_largest_two_units(seconds, shown):
    assert duration_format(seconds) == shown


# --- datasets -------------------------------------------------------------------


def test_a_valid_upload_stores_the_dataset_and_opens_it(client, runner):
    upload = SimpleUploadedFile("shop.jsonl", VALID_JSONL, content_type="application/jsonl")
    response = client.post(
        reverse("dashboard:dataset-upload"),
        {"name": "uploaded", "description": "Shop talk", "eval_fraction": "0.2", "file": upload},
    )
    dataset = Dataset.objects.get(name="uploaded")
    assert response.status_code == 302
    assert response.url == reverse("dashboard:dataset", args=[dataset.pk])
    assert dataset.source == Dataset.Source.UPLOAD and dataset.created_by == runner
    assert (dataset.stats["train"], dataset.stats["eval"]) == (8, 2)
    page = client.get(response.url).content.decode()
    assert "8 training and 2 eval examples" in page and "Question 0?" in page


def test_a_broken_upload_names_its_bad_lines_and_stores_nothing(client, runner):
    data = VALID_JSONL + b"{not json\n" + b'{"messages": [{"role": "bot", "content": "x"}]}\n'
    upload = SimpleUploadedFile("broken.jsonl", data)
    response = client.post(
        reverse("dashboard:dataset-upload"),
        {"name": "broken", "eval_fraction": "0.1", "file": upload},
    )
    assert response.status_code == 200
    assert not Dataset.objects.filter(name="broken").exists()
    html = response.content.decode()
    report = re.search(r'data-testid="format-error".*?</div>', html, re.S).group(0)
    assert "Line 11" in report and "not valid JSON" in report
    assert "Line 12" in report and "&quot;role&quot; of message 1" in report
    assert "2 problems" in report
    assert 'value="broken"' in html  # the name stays in the form


def test_an_upload_under_a_taken_name_is_refused_next_to_the_name(client, runner, dataset):
    upload = SimpleUploadedFile("again.jsonl", VALID_JSONL)
    response = client.post(
        reverse("dashboard:dataset-upload"),
        {"name": dataset.name, "eval_fraction": "0.1", "file": upload},
    )
    assert response.status_code == 200
    assert "already exists" in str(response.context["form"].errors["name"])
    assert Dataset.objects.count() == 1


def test_the_preview_shows_turns_escaped(client, staff):
    hostile = [
        {"role": "system", "content": "Be <i>nice</i>."},
        {"role": "user", "content": "<script>alert(1)</script>"},
        {"role": "assistant", "content": '<img src=x onerror="alert(2)">'},
    ]
    dataset = dataset_create(
        name="hostile", conversations=[hostile, *CONVERSATIONS], source=Dataset.Source.UPLOAD
    )
    html = client.get(reverse("dashboard:dataset", args=[dataset.pk])).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "Be &lt;i&gt;nice&lt;/i&gt;." in html
    assert 'class="turn role-user"' in html and 'class="turn role-assistant"' in html


def test_a_dataset_page_lists_its_export_filters_jobs_and_a_prefilled_job_link(client, runner):
    dataset = dataset_create(
        name="liked",
        conversations=CONVERSATIONS,
        source=Dataset.Source.EXPORT,
        filters={"thumbs_up_only": True, "source": None, "date_from": "2026-01-01T00:00:00"},
    )
    ModelVersionFactory(name="prod", state=ModelVersion.State.PRODUCTION)
    job = training_job_create(kind="finetune", dataset=dataset, enqueue=False)
    html = client.get(reverse("dashboard:dataset", args=[dataset.pk])).content.decode()
    filters = re.search(r'data-testid="dataset-filters".*?</dl>', html, re.S).group(0)
    assert "Thumbs up only</dt><dd>yes" in filters and "Source</dt><dd>any" in filters
    assert "2026-01-01T00:00:00" in filters
    assert reverse("dashboard:job", args=[job.pk]) in html
    assert f"{reverse('dashboard:job-new')}?dataset={dataset.pk}" in html

    listing = client.get(reverse("dashboard:datasets")).content.decode()
    row = re.search(rf'<tr>\s*<td><a href="[^"]*/{dataset.pk}/">liked</a>.*?</tr>', listing, re.S)
    assert row and '<td class="num">1</td>' in row.group(0)


# --- the demo dataset -------------------------------------------------------------


def test_a_trainer_creates_the_demo_dataset_with_one_click_and_lands_on_it(client, runner):
    listing = client.get(reverse("dashboard:datasets")).content.decode()
    form = re.search(r'<form[^>]*data-testid="demo-dataset-form".*?</form>', listing, re.S)
    assert form, "the list offers the demo button"
    assert 'method="post"' in form.group(0)
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert f'action="{reverse("dashboard:dataset-demo")}"' in form.group(0)

    response = client.post(reverse("dashboard:dataset-demo"), follow=True)
    demo = Dataset.objects.get(name=DEMO_NAME)
    assert response.redirect_chain == [(reverse("dashboard:dataset", args=[demo.pk]), 302)]
    assert demo.source == Dataset.Source.DEMO
    assert demo.stats["examples"] == 300
    page = response.content.decode()
    train, evaluation = demo.stats["train"], demo.stats["eval"]
    assert f"The demo dataset is stored: {train} training and {evaluation} eval" in page
    listing = client.get(reverse("dashboard:datasets")).content.decode()
    assert 'data-testid="create-demo-dataset"' not in listing
    link = re.search(r'<a [^>]*data-testid="demo-dataset"[^>]*>', listing)
    assert link and f'href="{reverse("dashboard:dataset", args=[demo.pk])}"' in link.group(0)


def test_asking_again_for_the_demo_dataset_links_to_it_and_creates_nothing(client, runner):
    existing = dataset_create(
        name=DEMO_NAME, conversations=CONVERSATIONS, source=Dataset.Source.DEMO
    )
    response = client.post(reverse("dashboard:dataset-demo"), follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(reverse("dashboard:datasets"), 302)]
    page = response.content.decode()
    link = f'<a href="{reverse("dashboard:dataset", args=[existing.pk])}">{DEMO_NAME}</a>'
    assert f"A dataset named {link} already exists; nothing new was created." in page
    assert Dataset.objects.filter(name=DEMO_NAME).count() == 1
    assert Dataset.objects.get(name=DEMO_NAME).stats["examples"] == len(CONVERSATIONS)


def test_a_demo_dataset_stored_by_another_click_meanwhile_is_linked_not_an_error(
    client, runner, monkeypatch
):
    """Two clicks at once: the later one finds the name taken when it
    saves, and says so as if the dataset had been there before."""

    def stored_first(**kwargs):
        dataset_create(name=DEMO_NAME, conversations=CONVERSATIONS, source=Dataset.Source.DEMO)
        raise ValidationError({"name": ["Dataset with this Name already exists."]})

    monkeypatch.setattr(dataset_views, "dataset_demo_create", stored_first)
    response = client.post(reverse("dashboard:dataset-demo"), follow=True)
    assert response.redirect_chain == [(reverse("dashboard:datasets"), 302)]
    assert "already exists; nothing new was created." in response.content.decode()
    assert Dataset.objects.filter(name=DEMO_NAME).count() == 1


def test_the_demo_dataset_needs_the_upload_right_a_post_and_the_csrf_token(client, staff):
    url = reverse("dashboard:dataset-demo")
    listing = client.get(reverse("dashboard:datasets")).content.decode()
    assert 'data-testid="create-demo-dataset"' not in listing
    assert client.post(url).status_code == 403
    assert not Dataset.objects.filter(name=DEMO_NAME).exists()

    trainer = UserFactory(username="csrf-trainer", is_staff=True)
    trainer.user_permissions.add(Permission.objects.get(codename="run_trainingjob"))
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(trainer)
    assert strict.get(url).status_code == 405
    assert strict.post(url).status_code == 403
    assert not Dataset.objects.filter(name=DEMO_NAME).exists()
