"""Forms of the knowledge area: a base's settings, files to upload, web
addresses to fetch, and the test box's question.

The services decide whether a base or a source is acceptable; their
errors come back next to the fields they name. The upload form refuses a
file over ``KNOWLEDGE_MAX_FILE_BYTES`` by its size, before anything reads
it; the addresses are checked one by one so that every bad line is named.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.validators import URLValidator
from django.utils.translation import gettext, gettext_lazy

from models_admin.dashboard.forms.common import ServiceForm, text_with
from models_admin.knowledge.documents import EXTENSIONS
from models_admin.models import KnowledgeBase
from models_admin.models.knowledge import NOTHING_FOUND_TEXT
from models_admin.selectors.knowledge import embedding_model
from models_admin.services.knowledge import MAX_URLS

#: Files one upload may carry.
MAX_FILES = 50
#: Longest question the test box searches for.
QUESTION_MAX_CHARS = 2000
#: The base fields the form edits, as the services take them.
BASE_FIELDS = (
    "name",
    "description",
    "in_chat",
    "passages",
    "min_match",
    "min_similarity",
    "nothing_found",
)


def size_text(size: int) -> str:
    """A size in bytes for people, in the decimal units the settings use
    (the 20 MB limit is 20,000,000 bytes)."""
    if size < 1000:
        return f"{size:,} byte{'' if size == 1 else 's'}"
    unit, scale = next(
        ((unit, scale) for unit, scale in (("KB", 1e3), ("MB", 1e6)) if size < scale * 1000),
        ("GB", 1e9),
    )
    value = size / scale
    number = f"{value:.0f}" if value >= 100 else f"{value:.1f}".removesuffix(".0")
    return f"{number} {unit}"


class KnowledgeBaseForm(ServiceForm):
    """A base's settings. A valid form's ``base_data()`` is what
    ``knowledge_base_create`` and ``knowledge_base_update`` take.

    ``read_only=True`` shows a base to staff who may not change it; the
    help of the two thresholds says which one applies now: the similarity
    while the embedding model is in use, the match otherwise.
    """

    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=200,
        help_text=gettext_lazy("Unique. Members see it when they pick a base in the chat."),
    )
    description = forms.CharField(
        label=gettext_lazy("Description"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=gettext_lazy("What the documents cover, for staff and members."),
    )
    in_chat = forms.BooleanField(
        required=False,
        label=gettext_lazy("Members may use it in the chat"),
        help_text=(
            gettext_lazy(
                "Members may pick it for a conversation and name it in API calls. Widget sites "
                "and API keys use the base staff attach to them either way."
            )
        ),
    )
    passages = forms.IntegerField(
        min_value=1,
        max_value=10,
        initial=4,
        label=gettext_lazy("Passages"),
        help_text=gettext_lazy(
            "How many passages a question retrieves (1 to 10); those that fit the "
            "prompt's budget go to the model."
        ),
    )
    min_similarity = forms.FloatField(
        min_value=-1.0,
        max_value=1.0,
        initial=0.35,
        label=gettext_lazy("Lowest similarity"),
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    min_match = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        initial=0.3,
        label=gettext_lazy("Lowest match"),
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    nothing_found = forms.CharField(
        required=False,
        max_length=2000,
        label=gettext_lazy("Nothing found reply"),
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy(
            "What an answer says, without asking the model, when no passage is close "
            "enough. Empty: the default text."
        ),
    )

    def __init__(self, *args: Any, read_only: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        #: Ranking is by meaning as well as words (the embedding model is in use).
        self.dense = embedding_model() is not None
        now = gettext("Applies now.")
        self.fields["min_similarity"].help_text = " ".join(
            [
                gettext(
                    "With the embedding model (ranking by meaning): how close in meaning, "
                    "from -1 to 1, the best passage must be for the question to count as "
                    "found."
                ),
                now if self.dense else gettext("Not used now. The embedding model is not in use."),
            ]
        )
        self.fields["min_match"].help_text = " ".join(
            [
                gettext(
                    "By words alone: the share of the question's words (rare words weigh more), "
                    "from 0 to 1, that the best passage must hold for the question to count as "
                    "found."
                ),
                gettext("Not used now. The embedding model is in use.") if self.dense else now,
            ]
        )
        if read_only:
            for field in self.fields.values():
                field.disabled = True

    @classmethod
    def initial_for(cls, base: KnowledgeBase) -> dict[str, Any]:
        return {name: getattr(base, name) for name in BASE_FIELDS}

    def base_data(self) -> dict[str, Any]:
        """The cleaned settings as the services take them."""
        data = {name: self.cleaned_data[name] for name in BASE_FIELDS}
        if not data["nothing_found"].strip():
            # The default reply, in the language of the page that saves it.
            data["nothing_found"] = gettext(NOTHING_FOUND_TEXT)
        return data


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Every file chosen in one input."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        clean_one = super().clean
        if isinstance(data, list | tuple):
            if not data and self.required:
                raise ValidationError(self.error_messages["required"], code="required")
            return [clean_one(item, initial) for item in data]
        return [clean_one(data, initial)]


class KnowledgeUploadForm(forms.Form):
    """Documents to import. A valid form has ``documents`` (those to read)
    and ``refused``: ``(name, reason)`` of each file too large to be read
    at all."""

    documents = MultipleFileField(
        label=gettext_lazy("Files"),
        widget=MultipleFileInput(
            attrs={"accept": ",".join([*EXTENSIONS, "text/markdown", "text/plain", "text/html"])}
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.limit = int(settings.KNOWLEDGE_MAX_FILE_BYTES)
        self.fields["documents"].help_text = gettext(
            "Markdown, text, HTML or PDF; up to %(count)s files at once, each at most "
            "%(size)s. A file of a name already in the base replaces it."
        ) % {"count": MAX_FILES, "size": size_text(self.limit)}
        self.refused: list[tuple[str, str]] = []

    def clean_documents(self) -> list[UploadedFile]:
        uploads: list[UploadedFile] = self.cleaned_data["documents"]
        if len(uploads) > MAX_FILES:
            raise ValidationError(
                gettext("At most %(max_files)s files at a time (%(uploads)s chosen).")
                % {"max_files": MAX_FILES, "uploads": len(uploads)},
                code="too_many",
            )
        readable = []
        for upload in uploads:
            size = upload.size or 0
            if size > self.limit:
                # Refused by the size the upload declares, before reading.
                self.refused.append(
                    (
                        upload.name or "",
                        f"The file is {size_text(size)} ({size:,} bytes); the limit is "
                        f"{size_text(self.limit)}.",
                    )
                )
            else:
                readable.append(upload)
        return readable


class KnowledgeUrlsForm(forms.Form):
    """Web pages to fetch, one address a line. A valid form's ``urls`` is
    the list of addresses; an invalid one names every bad line."""

    urls = forms.CharField(
        label=gettext_lazy("Web addresses"),
        max_length=MAX_URLS * 2100,
        widget=forms.Textarea(
            attrs={
                "rows": 4,
                "spellcheck": "false",
                "class": "mono",
                "placeholder": "https://shop.example/help/returns",
            }
        ),
        help_text=text_with(
            gettext_lazy(
                "One http(s) address a line, at most %(max_urls)s. Each page is fetched in the "
                "background; an address already in the base is fetched again."
            ),
            max_urls=MAX_URLS,
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean_urls(self) -> list[str]:
        lines = [
            (number, line.strip())
            for number, line in enumerate(self.cleaned_data["urls"].splitlines(), start=1)
            if line.strip()
        ]
        if not lines:
            raise ValidationError(gettext("Give at least one address."))
        if len(lines) > MAX_URLS:
            raise ValidationError(
                gettext("At most %(max_urls)s addresses at a time (%(lines)s given).")
                % {"max_urls": MAX_URLS, "lines": len(lines)}
            )
        check = URLValidator(schemes=["http", "https"])
        problems = []
        for number, url in lines:
            try:
                check(url)
            except ValidationError:
                problems.append(
                    f"Line {number}: \u201c{url[:200]}\u201d is not an http(s) address."
                )
            else:
                if len(url) > 2000:
                    problems.append(f"Line {number}: addresses are limited to 2,000 characters.")
        if problems:
            raise ValidationError(problems)
        return [url for _number, url in lines]


class KnowledgeTestForm(forms.Form):
    """The test box: a question to search the base for."""

    q = forms.CharField(
        label=gettext_lazy("Question"),
        max_length=QUESTION_MAX_CHARS,
        widget=forms.TextInput(
            attrs={
                "type": "search",
                "placeholder": gettext_lazy("What a customer would ask"),
                "autocomplete": "off",
            }
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
