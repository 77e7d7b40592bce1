from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from chat.services.exports import dataset_export
from chat.services.preferences import preference_dataset_create
from models_admin.dataset_format import DatasetFormatError
from models_admin.models import Dataset
from models_admin.selectors import dataset_preview
from models_admin.services.dataset_cleaning import dataset_clean, dataset_clean_preview
from models_admin.services.datasets import (
    DEMO_NAME,
    DEMO_PREFERENCES_NAME,
    dataset_demo_create,
    dataset_demo_preferences_create,
    dataset_upload,
)


def _date(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else timezone.make_aware(parsed)


class Command(BaseCommand):
    help = (
        "Datasets for training: import a JSONL file (conversations or preference pairs), create "
        "the demos, export conversations, make preference pairs from feedback, clean with the "
        "filter rules, list."
    )

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        imported = sub.add_parser("import", help="store a JSONL file in the training format")
        imported.add_argument("file", type=Path)
        imported.add_argument("--name", required=True)
        imported.add_argument("--eval-fraction", type=float, default=0.1)
        imported.add_argument(
            "--pairs",
            action="store_true",
            help='preference pairs, one {"prompt", "chosen", "rejected"} a line',
        )
        demo = sub.add_parser("demo", help="create the demo customer-service dataset")
        demo.add_argument("--name")
        demo.add_argument(
            "--preferences", action="store_true", help="the demo preference pairs instead"
        )
        preferences = sub.add_parser(
            "preferences",
            help="make a preference dataset from feedback: ratings, regenerations and staff "
            "handoff replies",
        )
        preferences.add_argument("--name", required=True)
        preferences.add_argument("--from", dest="date_from", type=_date)
        preferences.add_argument("--to", dest="date_to", type=_date)
        preferences.add_argument("--source", choices=["chat", "widget", "api"], default="")
        preferences.add_argument("--eval-fraction", type=float, default=0.1)
        exported = sub.add_parser("export", help="make a dataset from stored conversations")
        exported.add_argument("--name", required=True)
        exported.add_argument("--from", dest="date_from", type=_date)
        exported.add_argument("--to", dest="date_to", type=_date)
        exported.add_argument("--thumbs-up-only", action="store_true")
        exported.add_argument("--source", choices=["chat", "widget", "api"], default="")
        exported.add_argument("--site", type=int, default=None, help="a widget site's id")
        exported.add_argument("--eval-fraction", type=float, default=0.1)
        clean = sub.add_parser(
            "clean",
            help="apply the content filter rules: preview what they drop or mask, or store "
            "the cleaned copy as a new dataset",
        )
        clean.add_argument("source_name", metavar="dataset")
        clean.add_argument("--name", help="store the cleaned copy under this name")
        clean.add_argument("--surface", choices=["chat", "widget", "api"], default="chat")
        clean.add_argument("--drop-duplicates", action="store_true")
        sub.add_parser("list", help="list datasets with their statistics")
        show = sub.add_parser("show", help="statistics and the first examples of a dataset")
        show.add_argument("name")
        show.add_argument("--examples", type=int, default=3)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "import":
                dataset = dataset_upload(
                    kind=Dataset.Kind.PREFERENCES
                    if options["pairs"]
                    else Dataset.Kind.CONVERSATIONS,
                    name=options["name"],
                    data=options["file"].read_bytes(),
                    eval_fraction=options["eval_fraction"],
                )
            elif action == "demo" and options["preferences"]:
                dataset = dataset_demo_preferences_create(
                    name=options["name"] or DEMO_PREFERENCES_NAME
                )
            elif action == "demo":
                dataset = dataset_demo_create(name=options["name"] or DEMO_NAME)
            elif action == "preferences":
                dataset = preference_dataset_create(
                    name=options["name"],
                    date_from=options["date_from"],
                    date_to=options["date_to"],
                    source=options["source"],
                    eval_fraction=options["eval_fraction"],
                )
            elif action == "export":
                dataset = dataset_export(
                    name=options["name"],
                    date_from=options["date_from"],
                    date_to=options["date_to"],
                    thumbs_up_only=options["thumbs_up_only"],
                    source=options["source"],
                    site_id=options["site"],
                    eval_fraction=options["eval_fraction"],
                )
            elif action == "clean":
                original = Dataset.objects.filter(name=options["source_name"]).first()
                if original is None:
                    raise CommandError(f"No dataset named {options['source_name']!r}.")
                if not options["name"]:
                    self._clean_preview(original, options["surface"])
                    return
                dataset = dataset_clean(
                    dataset=original,
                    name=options["name"],
                    surface=options["surface"],
                    drop_duplicates=options["drop_duplicates"],
                )
                self.stdout.write(f"Cleaned copy: {json.dumps(dataset.filters)}")
            elif action == "show":
                shown = Dataset.objects.filter(name=options["name"]).first()
                if shown is None:
                    raise CommandError(f"No dataset named {options['name']!r}.")
                self.stdout.write(f"{shown.name} ({shown.source}): {json.dumps(shown.stats)}")
                for example in dataset_preview(dataset=shown, limit=options["examples"]):
                    self.stdout.write(json.dumps(example, ensure_ascii=False, indent=2))
                return
            else:
                for row in Dataset.objects.all():
                    self.stdout.write(f"{row.name}\t{row.source}\t{json.dumps(row.stats)}")
                return
        except DatasetFormatError as exc:
            raise CommandError("\n".join(str(error) for error in exc.errors)) from None
        except (ValidationError, OSError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Dataset {dataset.name}: {json.dumps(dataset.stats)}")

    def _clean_preview(self, dataset: Dataset, surface: str) -> None:
        preview = dataset_clean_preview(dataset=dataset, surface=surface)
        counts = preview.counts
        self.stdout.write(
            f"{dataset.name}: {counts['keep']} kept, {counts['mask']} masked, "
            f"{counts['drop']} dropped by the {surface} rules"
        )
        for example in preview.changed:
            for reason in example.reasons:
                self.stdout.write(
                    f"  example {example.index} ({example.action}): turn {reason.turn + 1} "
                    f"({reason.role}) {reason.rule} -> {reason.action}: {reason.excerpt}"
                )
        for group in preview.duplicates:
            self.stdout.write(f"  near duplicates: examples {', '.join(map(str, group))}")
        self.stdout.write("Store the cleaned copy with --name NAME.")
