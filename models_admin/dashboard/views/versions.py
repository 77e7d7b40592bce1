"""The dashboard's model versions: every version with its lineage and
metrics, side-by-side comparison (with one question streamed to every
compared version at once), promotion, rollback, canaries and the audit
history of all of them.

Looking is for staff; promoting, rolling back and running canaries need
``models_admin.promote_modelversion``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat.views.body import BodyError, json_body
from inference.client import (
    generation_cancel,
    generation_events,
    generation_submit,
    workers_live_count,
)
from inference.protocol import StreamEvent
from inference.sampling import SamplingError
from models_admin.dashboard.forms.versions import (
    CanaryForm,
    CompareAskForm,
    CompareForm,
    PromoteForm,
    RollbackForm,
    VersionFilterForm,
)
from models_admin.dashboard.selectors.usage import answer_tokens_per_s, version_stats
from models_admin.dashboard.views.access import permission_required, staff_required, user_is_staff
from models_admin.models import Canary, ModelVersion, Promotion
from models_admin.selectors import canary_get_active, model_version_get_production
from models_admin.services.model_versions import (
    canary_start,
    canary_stop,
    model_version_promote,
    model_version_rollback,
)

logger = logging.getLogger(__name__)

#: Largest body of a compare question.
ASK_BODY_MAX_BYTES = 256_000

PROMOTE = "models_admin.promote_modelversion"
#: How long the "ask all" stream waits for a version's next event.
ASK_IDLE_TIMEOUT_S = 120.0
LINEAGE_MAX_DEPTH = 100
PAGE_SIZE = 50
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
    return str(filesizeformat(value))


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.1f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    #: "lower" or "higher" when one end is better; "" when neither is.
    better: str
    fmt: Callable[[Any], str]

    def value(self, version: ModelVersion) -> float | None:
        value = (version.metrics or {}).get(self.key)
        return value if _is_number(value) else None

    def display(self, version: ModelVersion) -> str:
        value = self.value(version)
        return MISSING if value is None else self.fmt(value)


METRICS = [
    Metric("eval_loss", "Eval loss", "lower", _fixed(4)),
    Metric("perplexity", "Perplexity", "lower", _fixed(2)),
    Metric("tokens_per_s", "Tokens/s", "higher", _fixed(1)),
    Metric("parameters", "Parameters", "", _count_human),
    Metric("size_bytes", "Size", "", _size_human),
    Metric("layers", "Layers", "", _fixed(0)),
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


# --- reads for the pages ------------------------------------------------------
# Page-shaped reads: what each template shows, gathered in one place.


@dataclass
class Badge:
    label: str
    css: str


def _badge(version: ModelVersion, canary: Canary | None) -> Badge:
    if version.state == ModelVersion.State.PRODUCTION:
        return Badge("production", "production")
    if canary is not None and canary.version_id == version.pk:
        return Badge(f"canary {canary.percent}%", "canary")
    return Badge(version.get_state_display().lower(), version.state)


def _row(version: ModelVersion, canary: Canary | None) -> dict[str, Any]:
    return {
        "version": version,
        "badge": _badge(version, canary),
        **{key: metric.display(version) for key, metric in METRIC.items()},
    }


def _versions_filtered(
    *, state: str, kind: str, canary: Canary | None
) -> Any:  # a QuerySet of ModelVersion
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


def _lineage(version: ModelVersion) -> list[ModelVersion]:
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


def _metrics_table(version: ModelVersion) -> list[tuple[str, str]]:
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


def _plain(value: Any) -> str:
    if _is_number(value) and isinstance(value, float):
        return f"{value:,.5g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _eval_by_dataset(version: ModelVersion) -> dict[str, dict[str, Any]]:
    value = (version.metrics or {}).get("eval_by_dataset")
    return value if isinstance(value, dict) else {}


def _answers(version: ModelVersion) -> dict[str, str]:
    """Stored answers to the fixed prompts, by prompt."""
    found: dict[str, str] = {}
    for item in version.answers or []:
        if isinstance(item, dict) and isinstance(item.get("prompt"), str):
            found.setdefault(item["prompt"], str(item.get("answer", "")))
    return found


def _rollback_target() -> ModelVersion | None:
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


def _canary_panel(canary: Canary | None) -> dict[str, Any]:
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
        return f"{stats['prompt_tokens']:,} in / {stats['completion_tokens']:,} out"

    panel["stats"] = [
        row("Answers", "answers", lambda v: f"{v:,}"),
        {"label": "Thumbs-up rate", "production": rate(prod), "canary": rate(cand)},
        row("TTFT p50", "ttft_p50_s", _seconds),
        row("TTFT p95", "ttft_p95_s", _seconds),
        row("Tokens/s", "tokens_per_s", lambda v: MISSING if v is None else f"{v:.1f}"),
        row("Error rate", "error_rate", _percent),
        {"label": "Tokens", "production": tokens(prod), "canary": tokens(cand)},
    ]
    return panel


def _canary_context(request: HttpRequest, form: CanaryForm | None = None) -> dict[str, Any]:
    canary = canary_get_active()
    context: dict[str, Any] = {"panel": _canary_panel(canary), "canary_form": None}
    if request.user.has_perm(PROMOTE):
        initial = {"version": canary.version_id, "percent": canary.percent} if canary else {}
        context["canary_form"] = form if form is not None else CanaryForm(initial=initial)
    return context


def _next_url(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _error_messages(error: ValidationError) -> list[str]:
    return list(error.messages)


def _actor(request: HttpRequest) -> AbstractBaseUser:
    """The signed-in user; actions run only after the access checks."""
    user = request.user
    assert isinstance(user, AbstractBaseUser)
    return user


# --- pages ----------------------------------------------------------------------


@staff_required
@require_GET
def versions(request: HttpRequest) -> HttpResponse:
    """Every version, filtered by state and kind, with the canary panel."""
    filters = VersionFilterForm(request.GET or None)
    state = kind = ""
    if filters.is_valid():
        state, kind = filters.cleaned_data["state"], filters.cleaned_data["kind"]
    context = _canary_context(request)
    canary = context["panel"]["canary"]
    page = Paginator(_versions_filtered(state=state, kind=kind, canary=canary), 100).get_page(
        request.GET.get("page")
    )
    context.update(
        section="versions",
        filters=filters,
        page=page,
        rows=[_row(version, canary) for version in page.object_list],
        rollback_target=_rollback_target(),
        query=_query_without_page(request),
    )
    return render(request, "dashboard/versions/list.html", context)


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


@staff_required
@require_GET
def version_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One version: facts, lineage, metrics, answers, promotions."""
    version = get_object_or_404(
        ModelVersion.objects.select_related("parent", "job", "dataset"), pk=pk
    )
    canary = canary_get_active()
    production = model_version_get_production()
    promotions = (
        Promotion.objects.select_related("from_version", "to_version", "by")
        .filter(Q(to_version=version) | Q(from_version=version))
        .order_by("-created_at", "-id")
    )
    by_dataset = [
        {
            "name": name,
            "eval_loss": METRIC["eval_loss"].fmt(row["eval_loss"])
            if _is_number(row.get("eval_loss"))
            else MISSING,
            "perplexity": METRIC["perplexity"].fmt(row["perplexity"])
            if _is_number(row.get("perplexity"))
            else MISSING,
        }
        for name, row in sorted(_eval_by_dataset(version).items())
        if isinstance(row, dict)
    ]
    running = canary if canary is not None and canary.version_id == version.pk else None
    context = {
        "section": "versions",
        "version": version,
        "badge": _badge(version, canary),
        "lineage": _lineage(version),
        "children": version.children.order_by("created_at", "id"),
        "metrics_rows": _metrics_table(version),
        "by_dataset": by_dataset,
        "answers": [item for item in version.answers or [] if isinstance(item, dict)],
        "promotions": promotions,
        "canaries": version.canaries.select_related("started_by", "ended_by"),
        "production": production,
        "is_canary": running is not None,
        "canary": running,
        "canary_form": CanaryForm(
            initial={"version": version.pk, "percent": running.percent if running else 10}
        )
        if request.user.has_perm(PROMOTE)
        else None,
    }
    return render(request, "dashboard/versions/detail.html", context)


@staff_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    """2 to 4 versions side by side: metrics, stored answers, and a box
    that asks all of them a new question."""
    form = CompareForm({"v": request.GET.getlist("v")})
    if not form.is_valid():
        return render(
            request,
            "dashboard/versions/compare.html",
            {"section": "versions", "errors": form.errors.get("v", []), "versions": []},
            status=400,
        )
    chosen: list[ModelVersion] = form.cleaned_data["v"]
    canary = canary_get_active()
    metric_rows = []
    for metric in METRICS:
        values = [metric.value(v) for v in chosen]
        best = _best(values, metric.better)
        metric_rows.append(
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
        values = []
        for v in chosen:
            measured = _eval_by_dataset(v).get(name)
            loss = measured.get("eval_loss") if isinstance(measured, dict) else None
            values.append(loss if _is_number(loss) else None)
        best = _best(values, "lower")
        metric_rows.append(
            {
                "label": f"Eval loss on {name}",
                "better": "lower",
                "cells": [
                    {"display": MISSING if value is None else f"{value:.4f}", "best": i in best}
                    for i, value in enumerate(values)
                ],
            }
        )
    answers = [_answers(v) for v in chosen]
    prompts: list[str] = []
    for by_prompt in answers:
        prompts.extend(p for p in by_prompt if p not in prompts)
    answer_rows = [
        {"prompt": prompt, "cells": [by_prompt.get(prompt) for by_prompt in answers]}
        for prompt in prompts
    ]
    context = {
        "section": "versions",
        "versions": [{"version": v, "badge": _badge(v, canary)} for v in chosen],
        "metric_rows": metric_rows,
        "answer_rows": answer_rows,
        "ask_form": CompareAskForm(),
        "ask_config": {
            "url": reverse("dashboard:compare-ask"),
            "versions": [{"id": v.pk, "name": v.name} for v in chosen],
        },
    }
    return render(request, "dashboard/versions/compare.html", context)


@permission_required(PROMOTE)
@require_http_methods(["GET", "POST"])
def version_promote(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm (GET) and promote (POST) a version, with a note."""
    candidate = get_object_or_404(ModelVersion, pk=pk)
    form = PromoteForm(request.POST) if request.method == "POST" else PromoteForm()
    if request.method == "POST" and form.is_valid():
        try:
            promotion = model_version_promote(
                version=candidate, by=_actor(request), note=form.cleaned_data["note"]
            )
        except ValidationError as error:
            for text in _error_messages(error):
                form.add_error(None, text)
        else:
            if promotion is None:
                messages.info(request, f"{candidate.name} is already in production.")
            else:
                logger.info("%s promoted %s to production", request.user, candidate.name)
                messages.success(request, f"{candidate.name} is now in production.")
            return redirect("dashboard:version", pk=candidate.pk)
    production = model_version_get_production()
    context = {
        "section": "versions",
        "candidate": candidate,
        "production": production,
        "form": form,
        "deltas": _deltas(production, candidate) if production else [],
        "shared_datasets": _shared_datasets(production, candidate) if production else [],
        "is_production": production is not None and production.pk == candidate.pk,
    }
    status = 400 if request.method == "POST" else 200
    return render(request, "dashboard/versions/promote.html", context, status=status)


def _delta(metric_better: str, old: float | None, new: float | None) -> dict[str, Any]:
    if old is None or new is None:
        return {"text": MISSING, "verdict": ""}
    change = new - old
    percent = f" ({change / old * 100:+.1f}%)" if old else ""
    verdict = ""
    if metric_better and change:
        improved = change < 0 if metric_better == "lower" else change > 0
        verdict = "better" if improved else "worse"
    return {"text": f"{change:+,.4g}{percent}", "verdict": verdict}


def _deltas(production: ModelVersion, candidate: ModelVersion) -> list[dict[str, Any]]:
    return [
        {
            "label": metric.label,
            "production": metric.display(production),
            "candidate": metric.display(candidate),
            **_delta(metric.better, metric.value(production), metric.value(candidate)),
        }
        for metric in METRICS
    ]


def _shared_datasets(production: ModelVersion, candidate: ModelVersion) -> list[dict[str, Any]]:
    """Eval loss on every dataset both versions were measured on: the fair
    comparison, as losses on different data do not compare."""
    old_by, new_by = _eval_by_dataset(production), _eval_by_dataset(candidate)
    rows = []
    for name in sorted(set(old_by) & set(new_by)):
        old = old_by[name].get("eval_loss") if isinstance(old_by[name], dict) else None
        new = new_by[name].get("eval_loss") if isinstance(new_by[name], dict) else None
        old, new = (old if _is_number(old) else None), (new if _is_number(new) else None)
        rows.append(
            {
                "label": f"Eval loss on {name}",
                "production": MISSING if old is None else f"{old:.4f}",
                "candidate": MISSING if new is None else f"{new:.4f}",
                **_delta("lower", old, new),
            }
        )
    return rows


@permission_required(PROMOTE)
@require_POST
def rollback(request: HttpRequest) -> HttpResponseRedirect:
    """Put back the version that production replaced last."""
    form = RollbackForm(request.POST)
    target = _next_url(request, reverse("dashboard:promotions"))
    if not form.is_valid():
        messages.error(request, "The note is too long.")
        return HttpResponseRedirect(target)
    try:
        promotion = model_version_rollback(by=_actor(request), note=form.cleaned_data["note"])
    except ValidationError as error:
        for text in _error_messages(error):
            messages.error(request, text)
    else:
        logger.info("%s rolled production back to %s", request.user, promotion.to_version)
        messages.success(request, f"Rolled back: {promotion.to_version.name} is in production.")
    return HttpResponseRedirect(target)


@permission_required(PROMOTE)
def _canary_post(request: HttpRequest) -> HttpResponse:
    form = CanaryForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            canary = canary_start(
                version=data["version"],
                percent=data["percent"],
                by=_actor(request),
                note=data["note"],
            )
        except ValidationError as error:
            for text in _error_messages(error):
                form.add_error(None, text)
        else:
            logger.info("%s set canary %s at %s%%", request.user, canary.version, canary.percent)
            messages.success(
                request,
                f"Canary {canary.version.name} answers {canary.percent}% of conversations.",
            )
            return HttpResponseRedirect(_next_url(request, reverse("dashboard:canary")))
    context = {"section": "versions", **_canary_context(request, form)}
    return render(request, "dashboard/versions/canary.html", context, status=400)


@staff_required
@require_http_methods(["GET", "POST"])
def canary(request: HttpRequest) -> HttpResponse:
    """The canary panel (GET); start a canary or change its share (POST)."""
    if request.method == "POST":
        return _canary_post(request)
    context = {"section": "versions", **_canary_context(request)}
    return render(request, "dashboard/versions/canary.html", context)


@permission_required(PROMOTE)
@require_POST
def canary_end(request: HttpRequest) -> HttpResponseRedirect:
    """Stop the running canary: every conversation goes to production."""
    stopped = canary_stop(by=_actor(request))
    if stopped is None:
        messages.info(request, "No canary was running.")
    else:
        logger.info("%s stopped canary %s", request.user, stopped.version)
        messages.success(request, f"Canary {stopped.version.name} stopped.")
    return HttpResponseRedirect(_next_url(request, reverse("dashboard:canary")))


@staff_required
@require_GET
def promotions(request: HttpRequest) -> HttpResponse:
    """The audit history: promotions and canaries, newest first."""
    promotion_page = Paginator(
        Promotion.objects.select_related("from_version", "to_version", "by"), PAGE_SIZE
    ).get_page(request.GET.get("page"))
    canary_page = Paginator(
        Canary.objects.select_related("version", "started_by", "ended_by"), PAGE_SIZE
    ).get_page(request.GET.get("canaries"))
    context = {
        "section": "promotions",
        "promotion_page": promotion_page,
        "canary_page": canary_page,
        "production": model_version_get_production(),
        "rollback_target": _rollback_target(),
    }
    return render(request, "dashboard/versions/promotions.html", context)


# --- "ask all": one question, every compared version, streamed --------------


@dataclass(frozen=True)
class _Run:
    version_id: int
    generation_id: str


async def _staff_refusal(request: HttpRequest) -> HttpResponseBase | None:
    """``staff_required`` for a coroutine view, answering in JSON."""
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not user_is_staff(user):
        return JsonResponse({"error": "The dashboard is for staff accounts."}, status=403)
    return None


def _json_error(message: str, status: int = 400, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def _ask_submit(body: dict[str, Any]) -> list[_Run] | JsonResponse:
    """Validate the question and queue one greedy (or chosen-temperature)
    generation per version; return the runs, or the error to answer."""
    form = CompareAskForm(body)
    if not isinstance(body.get("question", ""), str):
        return _json_error("The question must be text.", errors={"question": ["Not text."]})
    if not form.is_valid():
        errors = {name: list(texts) for name, texts in form.errors.items()}
        first = next(iter(errors.values()))[0]
        return _json_error(str(first), errors=errors)
    data = form.cleaned_data
    try:
        if workers_live_count() == 0:
            return _json_error("No inference worker is running.", status=503)
        runs: list[_Run] = []
        try:
            for version in data["versions"]:
                generation_id = generation_submit(
                    messages=form.messages(),
                    params={
                        "max_new_tokens": data["max_tokens"],
                        "temperature": data["temperature"],
                    },
                    model_version_id=version.pk,
                )
                runs.append(_Run(version.pk, generation_id))
        except BaseException:
            for run in runs:
                generation_cancel(run.generation_id)
            raise
    except SamplingError as error:
        return _json_error(str(error))
    except redis.RedisError as error:
        logger.warning("Could not queue the compare question: %s", error)
        return _json_error("The generation queue is unreachable.", status=503)
    return runs


def _ask_event(run: _Run, event: StreamEvent) -> dict[str, Any] | None:
    """What the page gets of one generation event; None to skip it."""
    base = {"version": run.version_id, "type": event.type}
    if event.type == "start":
        return {**base, "model_version": event.data.get("model_version", "")}
    if event.type == "text":
        return {**base, "text": event.text}
    if event.type == "done":
        usage = event.data.get("usage") or {}
        timings = event.data.get("timings") or {}
        completion = usage.get("completion_tokens")
        return {
            **base,
            "finish_reason": event.data.get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": completion,
            "ttft_s": timings.get("ttft_s"),
            "total_s": timings.get("total_s"),
            "tokens_per_s": answer_tokens_per_s(completion, timings),
        }
    if event.type == "error":
        return {**base, "error": event.data.get("error") or "The generation failed."}
    return None  # "queued": the page shows a spinner until "start" anyway


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _ask_stream(runs: list[_Run]) -> AsyncIterator[str]:
    """Merge the generations' events as they come; end with ``end``.

    Each generation is read by its own task into one queue. When the
    reader goes away (the browser closed the page or pressed stop), the
    generations still running are cancelled so their slots free up.
    """
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    finished: set[str] = set()

    async def read(run: _Run) -> None:
        try:
            async for event in generation_events(
                run.generation_id, idle_timeout_s=ASK_IDLE_TIMEOUT_S
            ):
                if event.final:
                    finished.add(run.generation_id)
                payload = _ask_event(run, event)
                if payload is not None:
                    queue.put_nowait(payload)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("Reading compare generation %s failed: %r", run.generation_id, error)
            message = (
                f"No answer for {ASK_IDLE_TIMEOUT_S:.0f} s."
                if isinstance(error, TimeoutError)
                else "The answer's stream broke."
            )
            queue.put_nowait({"version": run.version_id, "type": "error", "error": message})
        finally:
            queue.put_nowait(None)

    readers = [asyncio.create_task(read(run)) for run in runs]
    try:
        remaining = len(readers)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
                continue
            yield _sse(item)
        yield _sse({"type": "end"})
    finally:
        for task in readers:
            task.cancel()
        for run in runs:
            if run.generation_id in finished:
                continue
            try:
                generation_cancel(run.generation_id)
            except redis.RedisError as error:
                logger.warning("Could not cancel generation %s: %s", run.generation_id, error)
        await asyncio.gather(*readers, return_exceptions=True)


async def compare_ask(request: HttpRequest) -> HttpResponseBase:
    """POST ``{"versions": [ids], "question", "system", "max_tokens",
    "temperature"}``; answer a ``text/event-stream`` of every version's
    answer as it is written, or a JSON error."""
    refusal = await _staff_refusal(request)
    if refusal is not None:
        return refusal
    if request.method != "POST":
        response = _json_error("POST a JSON body.", status=405)
        response["Allow"] = "POST"
        return response
    try:
        body = json_body(request, max_bytes=ASK_BODY_MAX_BYTES)
    except BodyError as exc:
        return _json_error(exc.message, status=exc.status)
    if not isinstance(body, dict):
        return _json_error("The body must be a JSON object.")
    runs = await sync_to_async(_ask_submit)(body)
    if isinstance(runs, JsonResponse):
        return runs
    stream = StreamingHttpResponse(_ask_stream(runs), content_type="text/event-stream")
    stream["Cache-Control"] = "no-cache"
    stream["X-Accel-Buffering"] = "no"  # let proxies pass events at once
    return stream


urlpatterns = [
    path("", versions, name="versions"),
    path("<int:pk>/", version_detail, name="version"),
    path("<int:pk>/promote/", version_promote, name="version-promote"),
    path("compare/", compare, name="compare"),
    path("compare/ask/", compare_ask, name="compare-ask"),
    path("rollback/", rollback, name="rollback"),
    path("canary/", canary, name="canary"),
    path("canary/stop/", canary_end, name="canary-stop"),
    path("promotions/", promotions, name="promotions"),
]
