from __future__ import annotations

import json
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from models_admin.models import Dataset, ModelVersion, TrainingJob
from models_admin.services.training import (
    PARAMS,
    training_job_claim,
    training_job_create,
    training_job_run,
)


def _version(name: str | None) -> ModelVersion | None:
    if not name:
        return None
    version = ModelVersion.objects.filter(name=name).first()
    if version is None:
        raise CommandError(f"No model version named {name!r}.")
    return version


class Command(BaseCommand):
    help = (
        "Start a fine-tune or distill job. It runs on the Celery training queue; "
        "--wait follows it, --inline runs it in this process instead."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("kind", choices=TrainingJob.Kind.values)
        parser.add_argument("--dataset", required=True, help="dataset name")
        parser.add_argument("--base", help="version trained, or the teacher (default: production)")
        parser.add_argument("--student", help="distill into this existing version")
        parser.add_argument("--wait", action="store_true", help="follow the job until it ends")
        parser.add_argument("--inline", action="store_true", help="run here, not on Celery")
        for name, (kind_type, default, _low, _high, kinds) in PARAMS.items():
            flag = "--" + name.replace("_", "-")
            help_text = f"{'/'.join(kinds)} (default {default})"
            if kind_type is bool:
                parser.add_argument(
                    flag, dest=name, action="store_true", default=None, help=help_text
                )
            else:
                parser.add_argument(flag, dest=name, type=kind_type, help=help_text)

    def handle(self, *args: Any, **options: Any) -> None:
        dataset = Dataset.objects.filter(name=options["dataset"]).first()
        if dataset is None:
            raise CommandError(
                f"No dataset named {options['dataset']!r}: see `manage.py dataset list`."
            )
        params = {
            name: options[name]
            for name, spec in PARAMS.items()
            if options.get(name) is not None and options["kind"] in spec[4]
        }
        try:
            job = training_job_create(
                kind=options["kind"],
                dataset=dataset,
                base_version=_version(options["base"]),
                student_version=_version(options["student"]),
                params=params,
                enqueue=not options["inline"],
            )
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        self.stdout.write(
            f"Job {job.pk} queued: {job.kind} of {job.base_version.name} on {dataset.name}"
        )
        if options["inline"]:
            claimed = training_job_claim(job_id=job.pk)
            if claimed is not None:
                training_job_run(job=claimed)
        if options["wait"] or options["inline"]:
            self._follow(job)

    def _follow(self, job: TrainingJob) -> None:
        shown = 0
        while True:
            job.refresh_from_db()
            for point in job.curve[shown:]:
                self.stdout.write(json.dumps(point))
            shown = len(job.curve)
            if job.finished:
                break
            time.sleep(2)
        for version in job.checkpoints.order_by("step"):
            self.stdout.write(
                f"checkpoint {version.step}: {version.name} {json.dumps(version.metrics)}"
            )
        self.stdout.write(f"Job {job.pk} {job.state}{': ' + job.error if job.error else ''}")
