"""A user's data as one archive of JSON files, built by a Celery task.

The archive holds the account, every conversation with every branch (each
message names its parent), feedback, API key metadata (never the key),
API usage, widget identities, and the privacy log about the account. The
owner downloads it from a secret address until it expires.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from chat.models import (
    ApiKey,
    ApiRequest,
    Conversation,
    DataExport,
    Feedback,
    Message,
    PrivacyEvent,
)
from chat.services.privacy import (
    privacy_event_record,
    training_allowed,
    training_choice,
    user_conversations,
    user_visitors,
)

logger = logging.getLogger(__name__)

#: How often progress is written while conversations are added.
PROGRESS_EVERY_S = 0.5

README = """Your data, as this site holds it.

account.json             your account and privacy choices
conversations/<id>.json  each conversation with every message of every
                         branch: "parent" links a message to the one before
                         it, "current_leaf" ends the branch shown last
feedback.json            your ratings of answers
api_keys.json            your API keys (names and dates, never the key)
api_usage.json           your API calls: tokens, timings, how they ended
widget_identities.json   chat widget identities with your email address
privacy_log.json         exports and choices recorded for your account
"""


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def export_dir() -> Path:
    folder = Path(settings.DATA_EXPORT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export_file_remove(file_name: str) -> None:
    if file_name:
        (Path(settings.DATA_EXPORT_DIR) / file_name).unlink(missing_ok=True)


def export_request(
    *, user: AbstractBaseUser, requested_by: AbstractBaseUser | None = None, queue: bool = True
) -> DataExport:
    """Start building an archive of the user's data. One at a time: an
    export still being built is refused."""
    requested_by = requested_by or user
    with transaction.atomic():
        busy = (
            DataExport.objects.select_for_update()
            .filter(user_id=user.pk, state__in=[DataExport.State.QUEUED, DataExport.State.RUNNING])
            .exists()
        )
        if busy:
            raise ValidationError(gettext("An export of this account is already being built."))
        export = DataExport.objects.create(
            user_id=user.pk,
            requested_by_id=requested_by.pk,
            token=secrets.token_urlsafe(32),
            progress={"phase": "queued", "done": 0, "total": 0},
        )
        privacy_event_record(
            actor=requested_by,
            subject=user,
            action=PrivacyEvent.Action.EXPORT_REQUESTED,
            detail=f"export {export.pk}",
        )
    if queue:
        from chat.tasks import data_export_task

        transaction.on_commit(lambda: data_export_task.delay(export.pk))
    return export


def _progress(export: DataExport, phase: str, done: int, total: int) -> None:
    export.progress = {"phase": phase, "done": done, "total": total}
    DataExport.objects.filter(pk=export.pk).update(progress=export.progress)


def _account(user: Any) -> dict[str, Any]:
    return {
        "id": user.pk,
        "username": user.get_username(),
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "date_joined": _iso(user.date_joined),
        "last_login": _iso(user.last_login),
        "is_staff": user.is_staff,
        "train_on_chats": {
            "chosen": training_choice(user=user),
            "in_effect": training_allowed(user=user),
        },
    }


def _message(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "parent": message.parent_id,
        "role": message.role,
        "author": "staff" if message.author_id else None,
        "content": message.content,
        "status": message.status,
        "model_version": message.model_version_name or None,
        "finish_reason": message.finish_reason or None,
        "error": message.error or None,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "knowledge": message.knowledge or None,
        "created_at": _iso(message.created_at),
        "finished_at": _iso(message.finished_at),
    }


def _conversation(conversation: Conversation) -> dict[str, Any]:
    messages = conversation.messages.order_by("created_at", "pk")
    version, base = conversation.model_version, conversation.knowledge_base
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "source": conversation.source,
        "widget_site": conversation.site.name if conversation.site else None,
        "system_prompt": conversation.system_prompt,
        "settings": {
            "temperature": conversation.temperature,
            "top_p": conversation.top_p,
            "max_tokens": conversation.max_tokens,
            "strategy": conversation.strategy,
        },
        "model_version": version.name if version else None,
        "knowledge_base": base.name if base else None,
        "handoff": conversation.handoff,
        "pinned": conversation.pinned_at is not None,
        "current_leaf": conversation.current_leaf_id,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "messages": [_message(m) for m in messages.iterator()],
    }


def _rows(user: Any) -> dict[str, list[dict[str, Any]]]:
    feedback = [
        {
            "message": f.message_id,
            "conversation": f.message.conversation_id,
            "rating": "up" if f.rating == Feedback.Rating.UP else "down",
            "reason": f.reason,
            "created_at": _iso(f.created_at),
        }
        for f in Feedback.objects.filter(user_id=user.pk).select_related("message")
    ]
    keys = [
        {
            "name": k.name,
            "prefix": k.prefix,
            "created_at": _iso(k.created_at),
            "last_used_at": _iso(k.last_used_at),
            "revoked_at": _iso(k.revoked_at),
            "rate_limit_per_minute": k.rate_limit_per_minute,
            "monthly_token_quota": k.monthly_token_quota,
        }
        for k in ApiKey.objects.filter(user_id=user.pk)
    ]
    usage = [
        {
            "at": _iso(r.created_at),
            "key": r.key.prefix if r.key else None,
            "model": r.model_name,
            "conversation": r.conversation_id,
            "stream": r.stream,
            "status": r.status_code,
            "finish_reason": r.finish_reason or None,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "ttft_s": r.ttft_s,
            "duration_s": r.duration_s,
            "end_user": r.end_user or None,
        }
        for r in ApiRequest.objects.filter(user_id=user.pk).select_related("key").iterator()
    ]
    visitors = [
        {
            "site": v.site.name,
            "external_id": v.external_id,
            "email": v.email,
            "created_at": _iso(v.created_at),
            "last_seen_at": _iso(v.last_seen_at),
        }
        for v in user_visitors(user=user).select_related("site")
    ]
    log = [
        {
            "at": _iso(e.created_at),
            "action": e.get_action_display(),
            "by": "you" if e.actor_id == user.pk else "staff" if e.actor_id else e.actor_name,
            "detail": e.detail,
        }
        for e in PrivacyEvent.objects.filter(subject_id=user.pk).order_by("created_at")
    ]
    return {
        "feedback": feedback,
        "api_keys": keys,
        "api_usage": usage,
        "widget_identities": visitors,
        "privacy_log": log,
    }


def export_build(export: DataExport) -> DataExport:
    """Write the archive and mark the export ready (or failed, with the
    reason). Progress is stored as conversations are added."""
    user = export.user
    DataExport.objects.filter(pk=export.pk).update(state=DataExport.State.RUNNING)
    conversations = user_conversations(user=user).order_by("pk")
    total = conversations.count()
    name = f"export-{export.pk}-{secrets.token_hex(6)}.zip"
    path = export_dir() / name
    partial = path.with_suffix(".part")
    counts: dict[str, int] = {"conversations": 0, "messages": 0}
    try:
        _progress(export, "conversations", 0, total)
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("README.txt", README)
            archive.writestr("account.json", json.dumps(_account(user), indent=2))
            written_at = time.monotonic()
            for done, conversation in enumerate(
                conversations.select_related("site", "model_version", "knowledge_base").iterator(),
                start=1,
            ):
                record = _conversation(conversation)
                counts["conversations"] += 1
                counts["messages"] += len(record["messages"])
                archive.writestr(
                    f"conversations/{conversation.pk}.json",
                    json.dumps(record, indent=2, ensure_ascii=False),
                )
                if time.monotonic() - written_at >= PROGRESS_EVERY_S or done == total:
                    _progress(export, "conversations", done, total)
                    written_at = time.monotonic()
            _progress(export, "account", total, total)
            for kind, rows in _rows(user).items():
                counts[kind] = len(rows)
                archive.writestr(f"{kind}.json", json.dumps(rows, indent=2, ensure_ascii=False))
        partial.rename(path)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        logger.exception("Export %s failed", export.pk)
        if DataExport.objects.filter(pk=export.pk).update(
            state=DataExport.State.FAILED,
            error=gettext("The archive could not be written: %(error)s.")
            % {"error": type(exc).__name__},
            finished_at=timezone.now(),
        ):
            export.refresh_from_db()
        return export
    now = timezone.now()
    stored = DataExport.objects.filter(pk=export.pk).update(
        state=DataExport.State.READY,
        file_name=name,
        size_bytes=path.stat().st_size,
        counts=counts,
        progress={"phase": "done", "done": total, "total": total},
        finished_at=now,
        expires_at=now + timedelta(hours=settings.DATA_EXPORT_HOURS),
    )
    if not stored:
        path.unlink(missing_ok=True)  # the account went meanwhile
        return export
    export.refresh_from_db()
    return export


def export_expire(export: DataExport) -> None:
    """Delete an export's file and mark it expired."""
    export_file_remove(export.file_name)
    DataExport.objects.filter(pk=export.pk).update(state=DataExport.State.EXPIRED, file_name="")
    export.state, export.file_name = DataExport.State.EXPIRED, ""


def exports_expire_due() -> int:
    """Expire every ready export past its time; return how many."""
    due = DataExport.objects.filter(state=DataExport.State.READY, expires_at__lte=timezone.now())
    count = 0
    for export in due:
        export_expire(export)
        count += 1
    return count


def export_download_path(*, export: DataExport) -> Path | None:
    """The archive's file while the link is valid, else None (and an
    expired export is cleared). The download is logged."""
    if export.state != DataExport.State.READY:
        return None
    if export.expires_at is not None and export.expires_at <= timezone.now():
        export_expire(export)
        return None
    path = Path(settings.DATA_EXPORT_DIR) / export.file_name
    if not path.is_file():
        return None
    DataExport.objects.filter(pk=export.pk).update(downloaded_at=timezone.now())
    privacy_event_record(
        actor=export.user,
        subject=export.user,
        action=PrivacyEvent.Action.EXPORT_DOWNLOADED,
        detail=f"export {export.pk}",
    )
    return path
