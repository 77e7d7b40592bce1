"""Celery tasks of the privacy queue: building a user's data export, and
the daily retention run (scheduled by Celery beat). Each takes ids and
calls one service."""

from __future__ import annotations

import logging

from celery import shared_task

from chat.models import DataExport
from chat.services.data_export import export_build

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def data_export_task(export_id: int) -> None:
    export = DataExport.objects.filter(pk=export_id).select_related("user").first()
    if export is None or export.state not in (DataExport.State.QUEUED, DataExport.State.RUNNING):
        return  # the account went, or another run finished it
    export_build(export)


@shared_task(ignore_result=True)
def retention_task() -> None:
    from chat.services.retention import retention_run

    retention_run()
