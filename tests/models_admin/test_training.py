"""The training core on tiny models: the assistant-only mask, students made
of teacher layers, fine-tune, distill, LoRA, checkpoints and resume."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from models_admin.training.data import IGNORE, batch_indices, encode
from models_admin.training.loop import Hooks, TrainConfig, Trainer, checkpoints, states_drop
from models_admin.training.student import layers_to_keep, on_policy_draw, student_from_teacher
from tests.tiny_models import tiny_llama_save

CONVERSATIONS = [
    [
        {"role": "system", "content": "You work at the shop."},
        {"role": "user", "content": "When do you open?"},
        {"role": "assistant", "content": "We open at 9 every weekday."},
    ],
    [
        {"role": "user", "content": "Can I return a lamp?"},
        {"role": "assistant", "content": "Yes, within 30 days."},
        {"role": "user", "content": "Even if used?"},
        {"role": "assistant", "content": "Only unused items, sorry."},
    ],
    [
        {"role": "user", "content": "How much is shipping?"},
        {"role": "assistant", "content": "Shipping is 4.90, free over 50."},
    ],
    [
        {"role": "user", "content": "Where is order LK-123456?"},
        {"role": "assistant", "content": "It shipped yesterday."},
    ],
]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, default_model_dir):
    return tiny_llama_save(
        tmp_path_factory.mktemp("teacher") / "tiny", default_model_dir=default_model_dir, layers=4
    )


def _config(tmp_path, teacher_dir, **overrides) -> TrainConfig:
    values = {
        "kind": "finetune",
        "base_dir": teacher_dir,
        "output_dir": tmp_path / "run",
        "train": CONVERSATIONS * 4,
        "eval": CONVERSATIONS,
        "learning_rate": 3e-3,
        "steps": 12,
        "batch_size": 4,
        "max_length": 128,
        "warmup_steps": 2,
        "checkpoint_every": 6,
        "eval_every": 6,
    }
    values.update(overrides)
    return TrainConfig(**values)


def _run(config: TrainConfig, **hooks) -> tuple[list[dict], list[tuple[int, dict]]]:
    reports: list[dict] = []
    saved: list[tuple[int, dict]] = []
    Trainer(
        config,
        Hooks(
            progress=reports.append,
            checkpoint=lambda step, folder, metrics: saved.append((step, metrics)),
            **hooks,
        ),
    ).run()
    return reports, saved


def test_the_mask_covers_exactly_the_assistant_answers_and_their_end_markers(teacher_dir):
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    encoded = encode(tokenizer, CONVERSATIONS[1], max_length=512)
    trained = [
        t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE
    ]
    assert tokenizer.decode(trained) == (
        "Yes, within 30 days.<|im_end|>\nOnly unused items, sorry.<|im_end|>\n"
    )
    # Everything else (system, questions, role headers) is context only.
    context = [
        t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label == IGNORE
    ]
    text = tokenizer.decode(context)
    assert "Can I return a lamp?" in text and "Even if used?" in text
    assert "Yes, within" not in text
    # Truncation keeps the alignment.
    short = encode(tokenizer, CONVERSATIONS[1], max_length=10)
    assert len(short.input_ids) == len(short.labels) == 10


def test_batches_are_a_deterministic_function_of_the_step():
    first = [batch_indices(step=s, batch_size=3, count=7, seed=1) for s in range(10)]
    again = [batch_indices(step=s, batch_size=3, count=7, seed=1) for s in range(10)]
    assert first == again
    flat = [i for batch in first for i in batch]
    # Each epoch of 7 positions is a permutation.
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))


@pytest.mark.parametrize(
    ("total", "keep", "expected"),
    [(30, 10, [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]), (4, 2, [0, 3]), (5, 5, [0, 1, 2, 3, 4])],
)
def test_students_keep_evenly_spaced_layers_with_the_first_and_last(total, keep, expected):
    assert layers_to_keep(total, keep) == expected


def test_a_student_has_the_requested_layers_and_still_runs(teacher_dir):
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    student = student_from_teacher(teacher, layers=2)
    assert len(student.model.layers) == 2 and student.config.num_hidden_layers == 2
    assert len(teacher.model.layers) == 4
    ids = torch.tensor([[1, 2, 3, 4]])
    assert student(input_ids=ids).logits.shape == teacher(input_ids=ids).logits.shape
    assert torch.equal(
        student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight
    )


def test_fine_tuning_lowers_the_loss_and_checkpoints_loadable_models(tmp_path, teacher_dir):
    config = _config(tmp_path, teacher_dir)
    states_at: dict[int, list[str]] = {}
    reports: list[dict] = []
    saved: list[tuple[int, dict]] = []

    def checkpoint(step, folder, metrics):
        saved.append((step, metrics))
        states_at[step] = sorted(p.name for p in config.output_dir.glob("trainer-state-*"))

    Trainer(config, Hooks(progress=reports.append, checkpoint=checkpoint)).run()
    assert [r["step"] for r in reports] == list(range(1, 13))
    assert reports[-1]["loss"] < reports[0]["loss"] * 0.7
    assert [step for step, _ in saved] == [6, 12]
    assert saved[1][1]["eval_loss"] < saved[0][1]["eval_loss"] + 1.0
    folders = checkpoints(config.output_dir)
    assert [step for step, _ in folders] == [6, 12]
    # Only the newest keeps the optimizer state, beside it and not in it;
    # each is a loadable model. A run over for good drops it.
    assert states_at == {6: ["trainer-state-6.pt"], 12: ["trainer-state-12.pt"]}
    assert not list(folders[1][1].glob("*.pt"))
    states_drop(config.output_dir)
    assert not list(config.output_dir.glob("trainer-state-*"))
    assert [step for step, _ in checkpoints(config.output_dir)] == [6, 12]
    model = AutoModelForCausalLM.from_pretrained(folders[1][1])
    assert model.config.num_hidden_layers == 4
    assert not list(config.output_dir.glob(".checkpoint-*"))


def test_a_resumed_run_continues_the_step_numbers_and_ends_where_an_unbroken_one_does(
    tmp_path, teacher_dir
):
    unbroken = _config(tmp_path / "a", teacher_dir, steps=8, checkpoint_every=4)
    _run(unbroken)
    broken = _config(tmp_path / "b", teacher_dir, steps=8, checkpoint_every=4)
    seen: list[int] = []

    def stop_after_five() -> bool:
        return len(seen) >= 5

    Trainer(
        broken,
        Hooks(progress=lambda report: seen.append(report["step"]), should_stop=stop_after_five),
    ).run()
    assert seen == [1, 2, 3, 4, 5]
    # Step 5 was not checkpointed: the restart goes on from 4.
    resumed, saved = _run(broken)
    assert [r["step"] for r in resumed] == [5, 6, 7, 8]
    # The checkpoint it resumed from is reported again (registration is idempotent).
    assert [step for step, _ in saved] == [4, 8]
    a = load_file(unbroken.output_dir / "checkpoint-8" / "model.safetensors")
    b = load_file(broken.output_dir / "checkpoint-8" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def bf16_teacher_dir(tmp_path_factory, teacher_dir):
    """The tiny teacher stored in bfloat16, its head tied to the embedding."""
    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.bfloat16)
    assert model.config.tie_word_embeddings
    folder = tmp_path_factory.mktemp("bf16") / "tiny"
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(folder)
    return folder


def _weights_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def test_checkpoints_keep_the_base_dtype_and_tied_weights_so_they_are_its_size(
    tmp_path, bf16_teacher_dir
):
    """Training runs in float32; the checkpoint is stored as the base is
    (bfloat16, head tied), so a candidate is the base's size, not 2-3x it."""
    broken = _config(tmp_path / "b", bf16_teacher_dir, steps=6, checkpoint_every=3)
    seen: list[int] = []
    Trainer(
        broken,
        Hooks(
            progress=lambda report: seen.append(report["step"]),
            should_stop=lambda: len(seen) >= 4,
        ),
    ).run()
    folder = checkpoints(broken.output_dir)[-1][1]
    tensors = load_file(folder / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert "lm_head.weight" not in tensors
    assert _weights_bytes(folder) == pytest.approx(_weights_bytes(bf16_teacher_dir), rel=0.02)
    tuned = AutoModelForCausalLM.from_pretrained(folder)
    assert tuned.lm_head.weight.data_ptr() == tuned.model.embed_tokens.weight.data_ptr()

    # A restart goes on from the float32 weights it had, not the rounded
    # checkpoint: it ends where an unbroken run does.
    _run(broken)
    unbroken = _config(tmp_path / "a", bf16_teacher_dir, steps=6, checkpoint_every=3)
    _run(unbroken)
    a = load_file(unbroken.output_dir / "checkpoint-6" / "model.safetensors")
    b = load_file(broken.output_dir / "checkpoint-6" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=1e-2, atol=1e-3)


def test_distilling_builds_a_smaller_student_whose_loss_falls(tmp_path, teacher_dir):
    config = _config(tmp_path, teacher_dir, kind="distill", student_layers=2, steps=10)
    reports, saved = _run(config)
    assert reports[-1]["loss"] < reports[0]["loss"]
    assert {"kl", "ce"} <= set(reports[0])
    student = AutoModelForCausalLM.from_pretrained(checkpoints(config.output_dir)[-1][1])
    assert student.config.num_hidden_layers == 2
    assert [step for step, _ in saved] == [6, 10]


def test_on_policy_distillation_scores_the_student_s_own_answers(tmp_path, teacher_dir):
    """With on_policy 1 every batch is the student's sampled answers to the
    conversations' last questions, scored by the teacher alone (KL only:
    there is no reference answer for the student's words)."""
    from models_admin.training import loop

    written: list[list] = []
    real = loop.student_answers

    def recording(model, examples, max_new_tokens, pad_id):
        answered = real(model, examples, max_new_tokens, pad_id)
        written.append(answered)
        return answered

    config = _config(
        tmp_path, teacher_dir, kind="distill", student_layers=2, steps=3, on_policy=1.0,
        on_policy_tokens=6, checkpoint_every=3, eval_every=3,
    )  # fmt: skip
    loop.student_answers = recording
    try:
        reports, saved = _run(config)
    finally:
        loop.student_answers = real
    assert len(written) == 3 and [step for step, _ in saved] == [3]
    for example in written[0]:
        new = [label for label in example.labels if label != IGNORE]
        assert 1 <= len(new) <= 6 and example.input_ids[-len(new) :] == new
    assert all(r["ce"] >= 0 and r["kl"] >= 0 for r in reports)
    # A resumed run draws the same batches as on-policy: the draw is seeded.
    assert [on_policy_draw(config.on_policy, config.seed, n) for n in range(20)] == [True] * 20
    draws = [on_policy_draw(0.5, 0, n) for n in range(200)]
    assert draws == [on_policy_draw(0.5, 0, n) for n in range(200)] and 60 < sum(draws) < 140


def test_a_time_budget_ends_the_run_with_an_evaluated_checkpoint(tmp_path, teacher_dir):
    config = _config(tmp_path, teacher_dir, steps=10_000, max_seconds=0.01)
    reports, saved = _run(config)
    assert [r["step"] for r in reports] == [1] and "eval_loss" in reports[0]
    assert [step for step, _ in saved] == [1]


def test_lora_fine_tuning_saves_merged_plain_models(tmp_path, teacher_dir):
    config = _config(
        tmp_path, teacher_dir, lora=True, steps=6, checkpoint_every=6, learning_rate=1e-2
    )
    reports, _ = _run(config)
    assert reports[0]["step"] == 1
    folder = checkpoints(config.output_dir)[-1][1]
    assert not (folder / "adapter_config.json").exists()
    tuned = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(teacher_dir)
    changed = not torch.equal(
        tuned.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight
    )
    assert changed
