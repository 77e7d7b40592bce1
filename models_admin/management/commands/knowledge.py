from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from models_admin.models import KnowledgeBase, KnowledgeSource
from models_admin.selectors.knowledge import knowledge_index_state, knowledge_search
from models_admin.services.knowledge import (
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_demo_create,
    knowledge_file_add,
    knowledge_index_build,
    knowledge_source_delete,
    knowledge_source_fetch,
    knowledge_urls_add,
)


def _errors(exc: ValidationError) -> str:
    return "; ".join(exc.messages)


class Command(BaseCommand):
    help = (
        "Knowledge bases that answers are grounded in: create one, import files (Markdown, "
        "text, HTML, PDF) or web pages, list, search, rebuild the index, delete; the demo "
        "shop's help center."
    )

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a knowledge base")
        create.add_argument("name")
        create.add_argument("--description", default="")
        create.add_argument(
            "--in-chat", action="store_true", help="members may use it in the chat and the API"
        )
        imported = sub.add_parser("import", help="import files into a base (same name: replaced)")
        imported.add_argument("base")
        imported.add_argument("files", nargs="+", type=Path)
        urls = sub.add_parser("urls", help="add web pages to a base and fetch them")
        urls.add_argument("base")
        urls.add_argument("urls", nargs="+")
        urls.add_argument(
            "--now", action="store_true", help="fetch here and now instead of on the queue"
        )
        sub.add_parser("list", help="list the bases and their sources")
        search = sub.add_parser("search", help="show the passages a question finds")
        search.add_argument("base")
        search.add_argument("question")
        search.add_argument("--k", type=int, default=None)
        rebuild = sub.add_parser("rebuild", help="build a base's index here and now")
        rebuild.add_argument("base")
        delete = sub.add_parser("delete", help="delete a base, or one source of it")
        delete.add_argument("base")
        delete.add_argument("--source", type=int, help="the source's id")
        sub.add_parser("demo", help="create the demo shop's help center and index it")

    def _base(self, name: str) -> KnowledgeBase:
        base = KnowledgeBase.objects.filter(name=name).first()
        if base is None and name.isdigit():
            base = KnowledgeBase.objects.filter(pk=int(name)).first()
        if base is None:
            raise CommandError(f"No knowledge base named {name!r}.")
        return base

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            getattr(self, f"_{action}")(options)
        except ValidationError as exc:
            raise CommandError(_errors(exc)) from None

    def _create(self, options: dict[str, Any]) -> None:
        base = knowledge_base_create(
            name=options["name"], description=options["description"], in_chat=options["in_chat"]
        )
        self.stdout.write(f"Created knowledge base {base.name} (id {base.pk}).")

    def _import(self, options: dict[str, Any]) -> None:
        base = self._base(options["base"])
        limit = settings.KNOWLEDGE_MAX_FILE_BYTES
        failed = 0
        for path in options["files"]:
            try:
                size = path.stat().st_size
            except OSError as exc:
                self.stderr.write(f"{path}: {exc.strerror}")
                failed += 1
                continue
            if size > limit:
                self.stderr.write(f"{path}: {size:,} bytes; the limit is {limit:,} bytes.")
                failed += 1
                continue
            try:
                with transaction.atomic():
                    source = knowledge_file_add(
                        base=base, filename=path.name, data=path.read_bytes(), queue=False
                    )
            except ValidationError as exc:
                self.stderr.write(f"{path}: {_errors(exc)}")
                failed += 1
                continue
            self.stdout.write(
                f"{path.name}: {source.chunk_count} passages (version {source.version})."
            )
        knowledge_index_build(base_id=base.pk)
        if failed:
            raise CommandError(f"{failed} file(s) could not be imported; the others were.")

    def _urls(self, options: dict[str, Any]) -> None:
        base = self._base(options["base"])
        if options["now"]:
            sources = knowledge_urls_add(base=base, urls=options["urls"], queue=False)
            for source in sources:
                done = knowledge_source_fetch(source_id=source.pk)
                if done is None:
                    continue
                if done.status == KnowledgeSource.Status.FAILED:
                    self.stderr.write(f"{done.url}: {done.error}")
                else:
                    self.stdout.write(f"{done.url}: {done.chunk_count} passages.")
            knowledge_index_build(base_id=base.pk)
            return
        sources = knowledge_urls_add(base=base, urls=options["urls"])
        self.stdout.write(f"Queued {len(sources)} page(s) for fetching.")

    def _list(self, options: dict[str, Any]) -> None:
        for base in KnowledgeBase.objects.order_by("name"):
            state = knowledge_index_state(base=base)
            stale = " (index out of date)" if state["stale"] else ""
            self.stdout.write(
                f"{base.pk}  {base.name}: index v{state['version']}, "
                f"{state['chunks']} passages{stale}"
            )
            for source in base.sources.order_by("title", "pk"):
                where = source.url or source.filename
                error = f" - {source.error}" if source.error else ""
                self.stdout.write(
                    f"    {source.pk}  {source.title or where} [{source.status}] "
                    f"{source.chunk_count} passages, {where}{error}"
                )

    def _search(self, options: dict[str, Any]) -> None:
        base = self._base(options["base"])
        retrieval = knowledge_search(base=base, query=options["question"], k=options["k"])
        how = "meaning and words" if retrieval.dense else "words"
        verdict = "found" if retrieval.found else "nothing relevant"
        self.stdout.write(
            f"{verdict} (by {how}, {retrieval.seconds * 1000:.1f} ms, index "
            f"v{retrieval.index_version})"
        )
        for number, passage in enumerate(retrieval.passages, start=1):
            card = passage.card(number)
            similarity = "" if card["similarity"] is None else f" cos {card['similarity']:.2f}"
            self.stdout.write(
                f"[{number}] {passage.title} > {passage.heading} (bm25 {card['score']:.2f}, "
                f"match {card['match']:.2f}{similarity})\n    {card['excerpt']}"
            )

    def _rebuild(self, options: dict[str, Any]) -> None:
        base = self._base(options["base"])
        index = knowledge_index_build(base_id=base.pk)
        if index is not None:
            self.stdout.write(
                f"Index v{index.version}: {index.chunk_count} passages in "
                f"{index.build_seconds:.2f} s."
            )

    def _delete(self, options: dict[str, Any]) -> None:
        base = self._base(options["base"])
        if options["source"] is None:
            knowledge_base_delete(base=base)
            self.stdout.write(f"Deleted knowledge base {base.name}.")
            return
        source = base.sources.filter(pk=options["source"]).first()
        if source is None:
            raise CommandError(f"{base.name} has no source {options['source']}.")
        knowledge_source_delete(source=source, queue=False)
        knowledge_index_build(base_id=base.pk)
        self.stdout.write(f"Deleted {source}.")

    def _demo(self, options: dict[str, Any]) -> None:
        base = knowledge_demo_create(queue=False)
        index = knowledge_index_build(base_id=base.pk)
        chunks = index.chunk_count if index is not None else 0
        self.stdout.write(f"{base.name}: {base.sources.count()} articles, {chunks} passages.")
