"""GGUF copies of model versions: the compression job on a real Celery
worker, the default model's GGUF registration, training from a GGUF
version, and the dashboard's form."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from models_admin.models import Compression, ModelVersion
from models_admin.services import model_version_promote, model_version_register
from models_admin.services.compression import compression_start
from models_admin.services.evaluations import model_version_evaluate
from models_admin.services.training import training_job_create
from tests.conftest import wait_for
from tests.models_admin.conftest import grant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow
def test_a_compression_runs_on_the_worker_and_yields_a_measured_gguf_candidate(
    celery_worker, base_version, demo
):
    model_version_evaluate(version=base_version, dataset=demo)
    base_version.refresh_from_db()
    celery_worker()
    compression = compression_start(source=base_version, quantization="q8_0")
    wait_for(lambda: Compression.objects.get(pk=compression.pk).finished, timeout=180)
    compression.refresh_from_db()
    assert compression.state == Compression.State.COMPLETED, compression.error
    copy = compression.result
    assert copy is not None
    wait_for(lambda: ModelVersion.objects.get(pk=copy.pk).evaluated_at is not None, timeout=120)
    copy.refresh_from_db()
    assert (copy.format, copy.kind, copy.state) == ("gguf", "compressed", "candidate")
    assert copy.parent == base_version and copy.name == f"{base_version.name}-Q8_0"
    assert copy.metrics["quantization"] == "Q8_0"
    assert copy.metrics["size_bytes"] < base_version.metrics["size_bytes"]
    # Measured on the same data: 8-bit weights barely move the loss.
    base_loss = base_version.metrics["eval_by_dataset"][demo.name]["eval_loss"]
    copy_loss = copy.metrics["eval_by_dataset"][demo.name]["eval_loss"]
    assert abs(copy_loss - base_loss) < 0.05 * base_loss
    assert len(copy.answers) == len(base_version.answers) > 0


def test_a_broken_source_fails_with_its_reason_and_registers_nothing(settings, tmp_path):
    settings.MODEL_DIR = tmp_path
    folder = tmp_path / "not-llama"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    source = model_version_register(name="gpt2-ish", folder=folder)
    compression = compression_start(source=source, quantization="q4_k_m", enqueue=False)
    call_command_result = _run(compression.pk)
    assert call_command_result.state == Compression.State.FAILED
    assert "GPT2LMHeadModel" in call_command_result.error
    assert ModelVersion.objects.count() == 1
    assert not (tmp_path / "compressed" / f"{source.pk}-q4_k_m-{compression.pk}").exists()


def _run(compression_id: int) -> Compression:
    from models_admin.services.compression import compression_run

    result = compression_run(compression_id=compression_id, measure_here=True)
    assert result is not None
    return result


def test_compressions_are_refused_clearly(base_version):
    with pytest.raises(ValidationError, match="Pick one of"):
        compression_start(source=base_version, quantization="q1_magic", enqueue=False)
    compression_start(source=base_version, quantization="q8_0", enqueue=False)
    with pytest.raises(ValidationError, match="already being made"):
        compression_start(source=base_version, quantization="q8_0", enqueue=False)


def test_the_compress_command_builds_and_measures_a_copy(base_version, capsys):
    call_command("compress", base_version.name, "--quantization", "q8_0")
    out = capsys.readouterr().out
    assert "Model version tiny-Q8_0 (candidate)" in out
    copy = ModelVersion.objects.get(name="tiny-Q8_0")
    assert copy.format == "gguf" and copy.evaluated_at is not None
    assert copy.metrics["tokens_per_s"] > 0


def test_training_from_a_gguf_version_trains_the_version_it_was_made_from(
    base_version, demo, tmp_path
):
    call_command("compress", base_version.name, "--quantization", "f16")
    copy = ModelVersion.objects.get(name="tiny-F16")
    model_version_promote(version=copy)
    job = training_job_create(kind="finetune", dataset=demo, params={"steps": 2}, enqueue=False)
    assert job.base_version == base_version
    orphan_folder = tmp_path / "orphan"
    orphan_folder.mkdir()
    (orphan_folder / "model.gguf").write_bytes((copy.path / "model.gguf").read_bytes())
    orphan = model_version_register(name="orphan", folder=orphan_folder)
    assert orphan.format == "gguf"
    with pytest.raises(ValidationError, match="no transformers version behind it"):
        training_job_create(
            kind="finetune", dataset=demo, base_version=orphan, params={"steps": 2}, enqueue=False
        )


def test_the_version_page_offers_compression_to_those_who_may_train(client, viewer, base_version):
    page = client.get(f"/dashboard/versions/{base_version.pk}/")
    assert b"compress-start" not in page.content
    response = client.post(
        f"/dashboard/versions/{base_version.pk}/compress/", {"quantization": "q8_0"}
    )
    assert response.status_code == 403
    grant(viewer, "run_trainingjob")
    page = client.get(f"/dashboard/versions/{base_version.pk}/")
    assert b"compress-start" in page.content
    response = client.post(
        f"/dashboard/versions/{base_version.pk}/compress/", {"quantization": "q8_0"}
    )
    assert response.status_code == 302
    compression = Compression.objects.get()
    assert (compression.source, compression.quantization) == (base_version, "q8_0")
    assert compression.created_by == viewer
    page = client.get(f"/dashboard/versions/{base_version.pk}/")
    assert b"Queued" in page.content
