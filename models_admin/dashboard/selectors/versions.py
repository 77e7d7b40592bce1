"""Reads of the dashboard's model-versions pages, shaped as the templates
show them: metrics formatted and compared, state badges, lineage, the
canary panel, promotion deltas and the compare page's tables."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet
from django.template.defaultfilters import filesizeformat
from django.utils.formats import number_format
from django.utils.translation import gettext, gettext_lazy, pgettext

from models_admin.dashboard.selectors.figures import version_stats
from models_admin.models import Canary, Dataset, DatasetExample, ModelVersion, Promotion
from models_admin.selectors import model_version_get_production

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

LINEAGE_MAX_DEPTH = 100
#: Shown for a figure that is not known.
MISSING = "\N{EN DASH}"


# --- formatting -------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fixed(digits: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        return f"{value:,.{digits}f}"

    return fmt


def _count_human(value: Any) -> str:
    """1234567 -> "1.23M"."""
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:g}"


def _size_human(value: Any) -> str:
    """Bytes for people: "492.1 MB", "1.4 GB" (filesizeformat)."""
    return str(filesizeformat(value))


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.1f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    if value < 1:
        return gettext("%(n)s ms") % {"n": f"{value * 1000:.0f}"}
    return gettext("%(n)s s") % {"n": f"{value:.2f}"}


def _loss(value: Any) -> str:
    return MISSING if value is None else f"{value:.4f}"


@dataclass(frozen=True)
class Metric:
    key: str
    label: StrOrPromise
    #: "lower" or "higher" when one end is better; "" when neither is.
    better: str
    fmt: Callable[[Any], str]

    def value(self, version: ModelVersion) -> float | None:
        value = (version.metrics or {}).get(self.key)
        return value if _is_number(value) else None

    def display(self, version: ModelVersion) -> str:
        value = self.value(version)
        if value is None:
            return MISSING
        text = self.fmt(value)
        if self.key == "tokens_per_s" and (version.metrics or {}).get("speed_under_load"):
            # Measured while a training job shared the CPU: not comparable
            # with a figure measured alone.
            text += " (under load)"
        return text


METRICS = [
    Metric("eval_loss", gettext_lazy("Eval loss"), "lower", _fixed(4)),
    Metric("perplexity", gettext_lazy("Perplexity"), "lower", _fixed(2)),
    Metric("tokens_per_s", gettext_lazy("Tokens/s"), "higher", _fixed(1)),
    Metric("parameters", gettext_lazy("Parameters"), "", _count_human),
    Metric("size_bytes", gettext_lazy("Size"), "", _size_human),
    Metric("layers", gettext_lazy("Layers"), "", _fixed(0)),
]
METRIC = {metric.key: metric for metric in METRICS}


def _best(values: list[float | None], better: str) -> set[int]:
    """Indexes of the best values; none when fewer than two are known or
    all known ones are equal."""
    known = [v for v in values if v is not None]
    if not better or len(known) < 2 or len(set(known)) == 1:
        return set()
    target = min(known) if better == "lower" else max(known)
    return {i for i, v in enumerate(values) if v == target}


def _plain(value: Any) -> str:
    if _is_number(value) and isinstance(value, float):
        return format(value, ",.5g")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


# --- one version ------------------------------------------------------------


@dataclass
class Badge:
    label: str
    css: str


def version_badge(version: ModelVersion, canary: Canary | None) -> Badge:
    if version.state == ModelVersion.State.PRODUCTION:
        return Badge(pgettext("a version's state", "production"), "production")
    if canary is not None and canary.version_id == version.pk:
        return Badge(gettext("canary %(percent)s%%") % {"percent": canary.percent}, "canary")
    return Badge(version.get_state_display().lower(), version.state)


def version_row(version: ModelVersion, canary: Canary | None) -> dict[str, Any]:
    """A version as the list shows it: its badge and formatted metrics."""
    return {
        "version": version,
        "badge": version_badge(version, canary),
        **{key: metric.display(version) for key, metric in METRIC.items()},
    }


def versions_filtered(*, state: str, kind: str, canary: Canary | None) -> QuerySet[ModelVersion]:
    """Versions of a stored state ("canary": the running canary's, which
    no other state then lists) and kind; empty values keep every one."""
    versions = ModelVersion.objects.select_related("parent", "job", "dataset")
    canary_id = canary.version_id if canary is not None else None
    if state == "canary":
        versions = versions.filter(pk=canary_id) if canary_id else versions.none()
    elif state:
        versions = versions.filter(state=state)
        if state != ModelVersion.State.PRODUCTION and canary_id:
            versions = versions.exclude(pk=canary_id)
    if kind:
        versions = versions.filter(kind=kind)
    return versions


def version_lineage(version: ModelVersion) -> list[ModelVersion]:
    """Ancestors from the base down to version's parent."""
    chain: list[ModelVersion] = []
    seen = {version.pk}
    current = version.parent
    while current is not None and current.pk not in seen and len(chain) < LINEAGE_MAX_DEPTH:
        chain.append(current)
        seen.add(current.pk)
        current = current.parent
    chain.reverse()
    return chain


def version_metrics_table(version: ModelVersion) -> list[tuple[StrOrPromise, str]]:
    """Every stored metric as (label, value): the known ones formatted,
    then the rest as stored, nested ones as ``group.key``."""
    metrics = version.metrics or {}
    rows = [(m.label, m.display(version)) for m in METRICS if m.key in metrics]
    for key in sorted(metrics):
        if key in METRIC or key == "eval_by_dataset":
            continue
        value = metrics[key]
        if isinstance(value, dict):
            rows.extend((f"{key}.{sub}", _plain(value[sub])) for sub in sorted(value))
        else:
            rows.append((key.replace("_", " ").capitalize(), _plain(value)))
    return rows


def _eval_by_dataset(version: ModelVersion) -> dict[str, dict[str, Any]]:
    value = (version.metrics or {}).get("eval_by_dataset")
    return value if isinstance(value, dict) else {}


def _eval_loss_on(version: ModelVersion, dataset: str) -> float | None:
    measured = _eval_by_dataset(version).get(dataset)
    loss = measured.get("eval_loss") if isinstance(measured, dict) else None
    return loss if _is_number(loss) else None


def version_eval_rows(version: ModelVersion) -> list[dict[str, str]]:
    """Eval loss and perplexity on each dataset the version was measured
    on, formatted, by dataset name."""
    rows = []
    for name, row in sorted(_eval_by_dataset(version).items()):
        if not isinstance(row, dict):
            continue
        shown = {"name": name}
        for key in ("eval_loss", "perplexity"):
            value = row.get(key)
            shown[key] = METRIC[key].fmt(value) if _is_number(value) else MISSING
        rows.append(shown)
    return rows


def _answers(version: ModelVersion) -> dict[str, str]:
    """Stored answers to the fixed prompts, by prompt."""
    found: dict[str, str] = {}
    for item in version.answers or []:
        if isinstance(item, dict) and isinstance(item.get("prompt"), str):
            found.setdefault(item["prompt"], str(item.get("answer", "")))
    return found


# --- production, rollback and the canary -------------------------------------


def rollback_target() -> ModelVersion | None:
    """The version a rollback returns to: the one the current production
    version replaced last."""
    current = model_version_get_production()
    if current is None:
        return None
    last = (
        Promotion.objects.select_related("from_version")
        .filter(to_version=current, from_version__isnull=False)
        .first()
    )
    return last.from_version if last is not None else None


def canary_panel(canary: Canary | None) -> dict[str, Any]:
    """The running canary beside production: who started it, and per
    version the answers it wrote since."""
    production = model_version_get_production()
    panel: dict[str, Any] = {"canary": canary, "production": production, "stats": []}
    if canary is None or production is None:
        return panel
    ids = [production.pk, canary.version_id]
    figures = version_stats(version_ids=ids, since=canary.started_at)
    prod, cand = figures[production.pk], figures[canary.version_id]

    def row(label: str, key: str, fmt: Callable[[Any], str]) -> dict[str, str]:
        return {"label": label, "production": fmt(prod[key]), "canary": fmt(cand[key])}

    def rate(stats: dict[str, Any]) -> str:
        if stats["thumbs_up_rate"] is None:
            return MISSING
        rated = stats["thumbs_up"] + stats["thumbs_down"]
        return f"{_percent(stats['thumbs_up_rate'])} ({stats['thumbs_up']}/{rated})"

    def tokens(stats: dict[str, Any]) -> str:
        return gettext("%(prompt_tokens)s in / %(completion_tokens)s out") % {
            "prompt_tokens": number_format(stats["prompt_tokens"], force_grouping=True),
            "completion_tokens": number_format(stats["completion_tokens"], force_grouping=True),
        }

    panel["stats"] = [
        row("Answers", "answers", lambda v: f"{v:,}"),
        {"label": gettext("Thumbs-up rate"), "production": rate(prod), "canary": rate(cand)},
        row(gettext("TTFT p50"), "ttft_p50_s", _seconds),
        row(gettext("TTFT p95"), "ttft_p95_s", _seconds),
        row(gettext("Tokens/s"), "tokens_per_s", lambda v: MISSING if v is None else f"{v:.1f}"),
        row(gettext("Error rate"), "error_rate", _percent),
        {"label": gettext("Tokens"), "production": tokens(prod), "canary": tokens(cand)},
    ]
    return panel


def _delta(
    metric_better: str,
    old: float | None,
    new: float | None,
    fmt: Callable[[Any], str] | None = None,
) -> dict[str, Any]:
    """The change from old to new, signed and written as the figure itself
    is (fmt: "+1.0 GB", "+1.23M"), with the relative change."""
    if old is None or new is None:
        return {"text": MISSING, "verdict": ""}
    change = new - old
    percent = f" ({change / old * 100:+.1f}%)" if old else ""
    verdict = ""
    if metric_better and change:
        improved = change < 0 if metric_better == "lower" else change > 0
        verdict = "better" if improved else "worse"
    sign = "+" if change >= 0 else "-"
    amount = f"{change:+,.4g}" if fmt is None else sign + fmt(abs(change))
    return {"text": f"{amount}{percent}", "verdict": verdict}


def promotion_deltas(production: ModelVersion, candidate: ModelVersion) -> list[dict[str, Any]]:
    """Each metric of production and the candidate, and the change."""
    return [
        {
            "label": metric.label,
            "production": metric.display(production),
            "candidate": metric.display(candidate),
            **_delta(metric.better, metric.value(production), metric.value(candidate), metric.fmt),
        }
        for metric in METRICS
    ]


def promotion_shared_datasets(
    production: ModelVersion, candidate: ModelVersion
) -> list[dict[str, Any]]:
    """Eval loss on every dataset both versions were measured on: the fair
    comparison, as losses on different data do not compare."""
    old_by, new_by = _eval_by_dataset(production), _eval_by_dataset(candidate)
    rows = []
    for name in sorted(set(old_by) & set(new_by)):
        old, new = _eval_loss_on(production, name), _eval_loss_on(candidate, name)
        rows.append(
            {
                "label": gettext("Eval loss on %(name)s") % {"name": name},
                "production": _loss(old),
                "candidate": _loss(new),
                **_delta("lower", old, new),
            }
        )
    return rows


# --- the compare page ---------------------------------------------------------


def compare_metric_rows(chosen: list[ModelVersion]) -> list[dict[str, Any]]:
    """Each metric of the chosen versions side by side, then the eval loss
    on every dataset any of them was measured on; the best cells marked."""
    rows = []
    for metric in METRICS:
        values = [metric.value(v) for v in chosen]
        best = _best(values, metric.better)
        rows.append(
            {
                "label": metric.label,
                "better": metric.better,
                "cells": [
                    {"display": metric.display(v), "best": i in best} for i, v in enumerate(chosen)
                ],
            }
        )
    datasets = sorted({name for v in chosen for name in _eval_by_dataset(v)})
    for name in datasets:
        losses = [_eval_loss_on(v, name) for v in chosen]
        best = _best(losses, "lower")
        rows.append(
            {
                "label": gettext("Eval loss on %(name)s") % {"name": name},
                "better": "lower",
                "cells": [
                    {"display": _loss(value), "best": i in best} for i, value in enumerate(losses)
                ],
            }
        )
    return rows


def compare_answer_rows(chosen: list[ModelVersion]) -> list[dict[str, Any]]:
    """Each fixed prompt any chosen version answered, with every version's
    stored answer (None where it has none) in ``cells``, and the same
    answers beside their version's name in ``by_version``, which a narrow
    screen shows above each answer when the columns stack."""
    answers = [_answers(v) for v in chosen]
    prompts: list[str] = []
    for by_prompt in answers:
        prompts.extend(p for p in by_prompt if p not in prompts)
    rows = []
    for prompt in prompts:
        cells = [by_prompt.get(prompt) for by_prompt in answers]
        rows.append(
            {
                "prompt": prompt,
                "cells": cells,
                "by_version": [(v.name, cell) for v, cell in zip(chosen, cells, strict=True)],
            }
        )
    return rows


#: Pairs from feedback a version page lists (the counts cover them all).
FEEDBACK_PAIRS_SHOWN = 25
FEEDBACK_KINDS = {
    "rating": gettext_lazy("rated up over a version rated down"),
    "regenerated": gettext_lazy("kept over a version regenerated away"),
    "handoff": gettext_lazy("a staff reply over the bot's answer"),
}


def version_feedback(version: ModelVersion) -> dict[str, Any] | None:
    """The feedback that went into a preference-tuned version: how many
    pairs of each kind its dataset took from conversations, and the first
    of them with the conversation each came from. None for a version not
    trained on preference pairs."""
    from chat.models import Message

    dataset = version.dataset
    if dataset is None or dataset.kind != Dataset.Kind.PREFERENCES:
        return None
    origins = [
        origin
        for origin in DatasetExample.objects.filter(dataset=dataset)
        .order_by("index")
        .values_list("origin", flat=True)
        if isinstance(origin, dict) and origin.get("kind")
    ]
    counts = Counter(origin["kind"] for origin in origins)
    shown = origins[:FEEDBACK_PAIRS_SHOWN]
    ids = {o.get("chosen_id") for o in shown} | {o.get("rejected_id") for o in shown}
    conversations = dict(
        Message.objects.filter(pk__in=[i for i in ids if isinstance(i, int)]).values_list(
            "pk", "conversation_id"
        )
    )
    rows = [
        {
            "kind": origin["kind"],
            "kind_text": str(FEEDBACK_KINDS.get(origin["kind"], origin["kind"])),
            "chosen_id": origin.get("chosen_id"),
            "rejected_id": origin.get("rejected_id"),
            "conversation_id": conversations.get(origin.get("chosen_id") or 0),
        }
        for origin in shown
    ]
    return {
        "pairs": int(dataset.stats.get("pairs") or dataset.stats.get("examples") or 0),
        "from_feedback": len(origins),
        "counts": [(str(FEEDBACK_KINDS.get(k, k)), n) for k, n in sorted(counts.items())],
        "rows": rows,
    }
