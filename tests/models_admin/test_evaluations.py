"""Evaluations: a row per measurement, its progress as it runs, and a
failure kept with its reason (the task of the evaluation queue calls
``evaluation_run``; here it runs in the test's process)."""

from __future__ import annotations

import pytest

from models_admin.models import Evaluation, ModelVersion
from models_admin.services.evaluations import evaluation_queue, evaluation_run
from models_admin.services.model_versions import model_version_register

pytestmark = pytest.mark.django_db


def test_an_evaluation_reports_each_phase_and_stores_the_measurements(
    base_version, demo, monkeypatch
):
    from models_admin.services import evaluations

    seen: list[tuple[str, int, int]] = []
    writer = evaluations._progress_writer

    def recording(evaluation):
        write = writer(evaluation)

        def report(phase, done, total):
            seen.append((phase, done, total))
            write(phase, done, total)

        return report

    monkeypatch.setattr(evaluations, "_progress_writer", recording)
    evaluation = evaluation_queue(version=base_version, dataset=demo, enqueue=False)
    assert evaluation_queue(version=base_version, dataset=demo, enqueue=False) == evaluation
    done = evaluation_run(evaluation_id=evaluation.pk)
    assert done is not None and done.state == Evaluation.State.COMPLETED
    assert done.started_at <= done.finished_at
    phases = [phase for phase, _, _ in seen]
    assert phases[0] == "loading"
    assert phases.index("eval loss") < phases.index("decode speed") < phases.index("answers")
    eval_examples = demo.stats["eval"]
    assert ("eval loss", eval_examples, eval_examples) in seen
    assert ("decode speed", 3, 3) in seen
    assert seen[-1] == ("answers", 8, 8)
    stored = Evaluation.objects.get(pk=evaluation.pk)
    assert (stored.phase, stored.done, stored.total) == ("answers", 8, 8)
    version = ModelVersion.objects.get(pk=base_version.pk)
    assert version.evaluated_at is not None and version.metrics["eval_loss"] > 0
    assert version.metrics["speed_under_load"] is False  # no training job ran
    assert demo.name in version.metrics["eval_by_dataset"]
    # A finished evaluation is not run again (a task delivered twice).
    assert evaluation_run(evaluation_id=evaluation.pk) is None


def test_a_version_that_cannot_be_measured_fails_with_its_reason(settings, tmp_path):
    settings.MODEL_DIR = tmp_path
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    version = model_version_register(name="broken", folder=folder)
    evaluation = evaluation_queue(version=version, enqueue=False)
    done = evaluation_run(evaluation_id=evaluation.pk)
    assert done is not None and done.state == Evaluation.State.FAILED
    assert done.error and done.finished_at is not None
    assert ModelVersion.objects.get(pk=version.pk).evaluated_at is None
