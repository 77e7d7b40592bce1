"""Celery tasks of the training, evaluation and knowledge queues. Each takes ids,
fetches the rows and calls one service; a worker killed mid-job gets its task again (late
acknowledgement) or, when a worker starts, stale jobs are queued again, and
the job resumes from its last checkpoint."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from models_admin.models import TrainingJob
from models_admin.services.compression import compression_run
from models_admin.services.evaluations import evaluation_run
from models_admin.services.knowledge import knowledge_index_build, knowledge_source_fetch
from models_admin.services.training import (
    JobBusy,
    training_job_claim,
    training_job_finish,
    training_job_log,
    training_job_run,
    training_jobs_recover,
)

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def training_job_run_task(self: Any, job_id: int) -> str:
    try:
        job = training_job_claim(job_id=job_id)
    except JobBusy:
        # Another worker runs it, or ran it and died moments ago (a killed
        # pool process gets its task back at once): look again once the
        # lease has run out, so a dead worker's job is resumed.
        raise self.retry(countdown=settings.TRAINING_LEASE_S) from None
    if job is None:
        return "skipped"
    try:
        return training_job_run(job=job).state
    except Exception as exc:
        # A job that fails on its own (bad data, a model that cannot load)
        # fails once, with the reason; it is not retried forever.
        logger.exception("Training job %s failed", job_id)
        training_job_log(job_id=job_id, line=f"Failed: {exc}")
        training_job_finish(job_id=job_id, state=TrainingJob.State.FAILED, error=str(exc))
        return TrainingJob.State.FAILED


@shared_task(acks_late=True, reject_on_worker_lost=True)
def model_version_evaluate_task(evaluation_id: int) -> str:
    evaluation = evaluation_run(evaluation_id=evaluation_id)
    return evaluation.state if evaluation is not None else "skipped"


@shared_task(acks_late=True, reject_on_worker_lost=True)
def compression_run_task(compression_id: int) -> str:
    compression = compression_run(compression_id=compression_id)
    return compression.state if compression is not None else "skipped"


@worker_ready.connect
def _jobs_recover(**_kwargs: Any) -> None:
    recovered = training_jobs_recover()
    if recovered:
        logger.info("Queued again training jobs %s whose worker stopped", recovered)


# No result is kept: queuing never waits on the result store.
@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def knowledge_source_fetch_task(source_id: int) -> str:
    source = knowledge_source_fetch(source_id=source_id)
    return source.status if source is not None else "skipped"


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def knowledge_index_build_task(base_id: int) -> str:
    index = knowledge_index_build(base_id=base_id)
    return f"v{index.version}" if index is not None else "skipped"
