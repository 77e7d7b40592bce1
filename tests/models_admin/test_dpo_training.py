"""Preference tuning on tiny models: the trainer's DPO runs (full and LoRA),
resume, preference datasets (upload, demo, from feedback) and the checks
on a DPO job."""

from __future__ import annotations

import pytest
import torch
from django.core.exceptions import ValidationError
from safetensors.torch import load_file

from models_admin.dataset_format import DatasetFormatError
from models_admin.demo_data import demo_preference_pairs
from models_admin.models import Dataset, DatasetExample, TrainingJob
from models_admin.services.datasets import (
    dataset_demo_create,
    dataset_demo_preferences_create,
    dataset_pairs,
    dataset_pairs_create,
    dataset_upload,
)
from models_admin.services.training import (
    training_job_claim,
    training_job_create,
    training_job_run,
    training_params_validate,
)
from models_admin.training.loop import Hooks, TrainConfig, Trainer
from tests.models_admin.test_dpo import _lines
from tests.models_admin.test_training import _run
from tests.tiny_models import tiny_llama_save

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"How many days do I have to return item {n}?"}],
        "chosen": "You have 30 days to return it.",
        "rejected": f"You have {n + 2} days to return it.",
    }
    for n in range(12)
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, default_model_dir):
    return tiny_llama_save(
        tmp_path_factory.mktemp("dpo") / "tiny", default_model_dir=default_model_dir, layers=2
    )


def _config(tmp_path, base_dir, **overrides) -> TrainConfig:
    values = {
        "kind": "dpo",
        "base_dir": base_dir,
        "output_dir": tmp_path / "run",
        "train": [],
        "eval": [],
        "train_pairs": PAIRS[:8],
        "eval_pairs": PAIRS[8:],
        "learning_rate": 3e-3,
        "steps": 8,
        "batch_size": 4,
        "max_length": 96,
        "warmup_steps": 1,
        "checkpoint_every": 4,
        "eval_every": 4,
        "beta": 0.5,
    }
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_learns_the_preferred_answers_and_reports_accuracy_and_margins(
    tmp_path, base_dir, lora
):
    overrides = {"lora": True, "learning_rate": 2e-2} if lora else {}
    reports, saved = _run(_config(tmp_path, base_dir, **overrides))
    base, steps = reports[0], reports[1:]
    # The base is measured first: against itself every reward is 0.
    assert base["step"] == 0 and base["eval_margin"] == 0 and base["eval_accuracy"] == 0
    assert 0 <= base["base_logp_accuracy"] <= 1
    assert [r["step"] for r in steps] == list(range(1, 9))
    # The loss starts at log 2 (policy == reference) and falls; held-out
    # pairs (other numbers, same right answer) come to prefer the chosen.
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert steps[-1]["loss"] < 0.5
    assert steps[-1]["eval_accuracy"] == 1.0 and steps[-1]["eval_margin"] > 0
    assert {"accuracy", "margin", "eval_dpo_loss", "eval_loss"} <= set(steps[-1])
    assert [step for step, _ in saved] == [4, 8]
    metrics = saved[-1][1]
    assert metrics["pref_accuracy"] == 1.0 and metrics["reward_margin"] > 0
    assert {"pref_logp_accuracy", "eval_dpo_loss", "eval_loss", "train_loss"} <= set(metrics)


def test_a_resumed_dpo_run_ends_where_an_unbroken_one_does(tmp_path, base_dir):
    unbroken = _config(tmp_path / "a", base_dir, steps=6, checkpoint_every=3, eval_every=6)
    _run(unbroken)
    broken = _config(tmp_path / "b", base_dir, steps=6, checkpoint_every=3, eval_every=6)
    seen: list[int] = []
    Trainer(
        broken,
        Hooks(
            progress=lambda report: seen.append(report["step"]),
            should_stop=lambda: len(seen) >= 5,
        ),
    ).run()
    assert seen == [0, 1, 2, 3, 4]
    resumed, saved = _run(broken)
    # No second measurement of the base; steps go on from checkpoint 3.
    assert [r["step"] for r in resumed] == [4, 5, 6]
    assert [step for step, _ in saved] == [3, 6]
    a = load_file(unbroken.output_dir / "checkpoint-6" / "model.safetensors")
    b = load_file(broken.output_dir / "checkpoint-6" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_dpo_parameters_have_their_own_defaults_and_bounds():
    clean = training_params_validate(kind="dpo", params={"lora": True})
    assert clean["beta"] == 0.1 and clean["learning_rate"] == 5e-6 and clean["lora"]
    with pytest.raises(ValidationError) as caught:
        training_params_validate(kind="dpo", params={"beta": 0, "alpha": 0.5})
    assert set(caught.value.message_dict) == {"beta", "alpha"}
    with pytest.raises(ValidationError) as caught:
        training_params_validate(kind="finetune", params={"beta": 0.1})
    assert "beta" in caught.value.message_dict


@pytest.mark.django_db
def test_an_uploaded_pair_file_is_stored_whole_or_refused_naming_each_bad_line(tiny_version):
    dataset = dataset_upload(
        kind="preferences", name="prefs", data=_lines(*PAIRS), eval_fraction=0.25
    )
    assert dataset.kind == Dataset.Kind.PREFERENCES
    assert dataset.stats["pairs"] == 12 and dataset.stats["eval"] == 3
    pairs = dataset_pairs(dataset, DatasetExample.Split.TRAIN) + dataset_pairs(
        dataset, DatasetExample.Split.EVAL
    )
    assert sorted(p["rejected"] for p in pairs) == sorted(p["rejected"] for p in PAIRS)
    assert all(p["chosen"] == "You have 30 days to return it." for p in pairs)
    bad = [PAIRS[0], {**PAIRS[1], "chosen": ""}, PAIRS[2], {**PAIRS[3], "rejected": None}]
    bad.append({**PAIRS[4], "chosen": "nul \u0000 here"})
    with pytest.raises(DatasetFormatError) as caught:
        dataset_upload(kind="preferences", name="bad prefs", data=_lines(*bad))
    assert [error.line for error in caught.value.errors] == [2, 4]
    assert not Dataset.objects.filter(name="bad prefs").exists()
    with pytest.raises(DatasetFormatError) as caught:
        dataset_upload(kind="preferences", name="bad prefs", data=_lines(*bad[:1], bad[4]))
    assert [error.line for error in caught.value.errors] == [2]
    assert "NUL" in caught.value.errors[0].error


@pytest.fixture
def tiny_version(tiny_model_dir, settings, tmp_path):
    from models_admin.services import model_version_register

    settings.MODEL_DIR = tmp_path / "models"
    settings.MODEL_DIR.mkdir()
    return model_version_register(name="tiny", folder=tiny_model_dir)


@pytest.mark.django_db
def test_a_dpo_job_needs_enough_preference_pairs_and_other_kinds_refuse_them(
    tiny_version, settings
):
    settings.TRAINING_DPO_MIN_PAIRS = 16
    few = dataset_pairs_create(name="few", pairs=PAIRS, source=Dataset.Source.UPLOAD)
    with pytest.raises(ValidationError) as caught:
        training_job_create(kind="dpo", dataset=few, base_version=tiny_version, enqueue=False)
    (message,) = caught.value.message_dict["dataset"]
    assert "has 11 training pairs" in message and "at least 16" in message
    with pytest.raises(ValidationError) as caught:
        training_job_create(kind="finetune", dataset=few, base_version=tiny_version)
    assert "only a preference-tuning" in caught.value.message_dict["dataset"][0]
    conversations = dataset_demo_create(count=20)
    with pytest.raises(ValidationError) as caught:
        training_job_create(kind="dpo", dataset=conversations, base_version=tiny_version)
    assert "needs a dataset of preference pairs" in caught.value.message_dict["dataset"][0]
    assert not TrainingJob.objects.exists()


def test_the_demo_pairs_prefer_the_shop_s_facts_over_a_plausible_wrong_answer():
    pairs = demo_preference_pairs(count=120)
    assert len({repr(p["prompt"]) for p in pairs}) == 120
    for pair in pairs:
        assert pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"] != pair["rejected"]
    # Most differ in one fact, so the pairs teach the facts, not a style.
    one_fact = [
        p for p in pairs if len(p["chosen"]) - 3 <= len(p["rejected"]) <= len(p["chosen"]) + 6
    ]
    assert len(one_fact) >= 0.8 * len(pairs)
    assert demo_preference_pairs(count=120) == pairs


@pytest.mark.django_db(transaction=True)
def test_a_dpo_job_runs_inline_and_its_checkpoints_are_preference_tuned_candidates(
    tiny_version, settings
):
    settings.TRAINING_DPO_MIN_PAIRS = 8
    dataset = dataset_demo_preferences_create(count=24)
    job = training_job_create(
        kind="dpo",
        dataset=dataset,
        base_version=tiny_version,
        params={"steps": 4, "checkpoint_every": 4, "eval_every": 4, "eval_examples": 4,
                "max_length": 128, "learning_rate": 1e-3},
        enqueue=False,
    )  # fmt: skip
    training_job_run(job=training_job_claim(job_id=job.pk))
    job.refresh_from_db()
    assert job.state == TrainingJob.State.COMPLETED, job.error or job.log
    assert [p["step"] for p in job.curve] == [0, 1, 2, 3, 4]
    assert "eval_accuracy" in job.curve[-1] and "accuracy" in job.curve[1]
    assert "base_logp_accuracy" in job.progress
    (version,) = job.checkpoints.all()
    assert version.kind == "dpo" and version.parent == tiny_version
    assert {"pref_accuracy", "reward_margin"} <= set(version.metrics["training"])
