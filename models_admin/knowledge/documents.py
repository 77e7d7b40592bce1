"""Reading a document into a title and headed sections.

Markdown keeps its ATX and setext headings (not inside code fences);
HTML its ``h1``-``h6`` headings and block structure, without scripts,
styles, navigation and page furniture; a PDF gives one section per page;
plain text one section per heading-less file. Anything that is not what
it claims to be is refused with a ``DocumentError`` that says why.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath

#: The kinds of document read, by file extension.
EXTENSIONS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
KINDS = ("markdown", "text", "html", "pdf")
#: The most pages a PDF source may have (reading one costs time per page).
MAX_PDF_PAGES = 2000
#: Control characters (other than tab and line breaks) that mark binary data.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class DocumentError(ValueError):
    """A document that cannot be read; the message says why."""


@dataclass
class Section:
    """Text under a path of headings (outermost first)."""

    headings: list[str]
    text: str


@dataclass
class Document:
    title: str
    kind: str
    sections: list[Section] = field(default_factory=list)

    @property
    def words(self) -> int:
        return sum(len(section.text.split()) for section in self.sections)


def document_kind(*, filename: str = "", content_type: str = "", data: bytes = b"") -> str:
    """The kind of a document, from its content type, its name, or what it
    starts with; a ``DocumentError`` when none of the kinds read fits."""
    mime = content_type.split(";")[0].strip().lower()
    by_type = {
        "text/markdown": "markdown",
        "text/x-markdown": "markdown",
        "text/plain": "text",
        "text/html": "html",
        "application/xhtml+xml": "html",
        "application/pdf": "pdf",
    }
    head = data[:1024].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return "pdf"
    suffix = PurePosixPath(filename.lower()).suffix
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if mime in by_type:
        return by_type[mime]
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    what = f"“{suffix}” files" if suffix else (f"“{mime}”" if mime else "this kind of file")
    raise DocumentError(
        f"Knowledge sources are Markdown, text, HTML or PDF files; {what} cannot be read."
    )


def _text_decode(data: bytes, *, charset: str = "") -> str:
    """Bytes as text: UTF-8 (with or without a byte-order mark), UTF-16
    with one, the declared charset, else Windows-1252 if the result reads
    as text. Binary data is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise DocumentError("The file claims UTF-16 but is not valid UTF-16.") from None
    else:
        candidates = ["utf-8-sig"]
        if charset:
            candidates.append(charset)
        candidates.append("cp1252")
        text = ""
        for encoding in candidates:
            try:
                text = data.decode(encoding)
                break
            except (UnicodeDecodeError, LookupError):
                continue
        else:
            raise DocumentError("The file is not text in UTF-8 or a known encoding.")
    if "\x00" in text or len(_CONTROL.findall(text[:20_000])) > max(len(text[:20_000]) // 100, 3):
        raise DocumentError("The file holds binary data, not text.")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _title_from(filename: str) -> str:
    stem = PurePosixPath(filename).stem if filename else ""
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or "Untitled"


# --- Markdown and text ----------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_sections(text: str) -> tuple[str, list[Section]]:
    """The first level-1 heading (or "") and the sections under each
    heading; text before the first heading is a section with no heading."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    title = ""
    fence = ""

    def close() -> None:
        body = "\n".join(lines).strip()
        if body:
            sections.append(Section([h for _, h in path], body))
        lines.clear()

    def open_heading(level: int, heading: str) -> None:
        nonlocal title
        close()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))
        if level == 1 and not title:
            title = heading

    for line in text.split("\n"):
        marker = _FENCE.match(line)
        if fence:
            lines.append(line)
            if marker and marker.group(1) == fence:
                fence = ""
            continue
        if marker:
            fence = marker.group(1)
            lines.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            open_heading(len(atx.group(1)), atx.group(2).strip())
            continue
        setext = _SETEXT.match(line)
        if setext and lines and lines[-1].strip() and not lines[-1].lstrip().startswith("-"):
            heading = lines.pop().strip()
            open_heading(1 if setext.group(1)[0] == "=" else 2, heading)
            continue
        lines.append(line)
    close()
    return title, sections


# --- HTML -----------------------------------------------------------------

_SKIPPED = {"script", "style", "noscript", "template", "svg", "nav", "footer", "header", "aside"}
_VOID = {"br", "hr", "img", "input", "meta", "link", "source", "wbr", "area", "col", "embed"}
_BLOCKS = {
    "p", "div", "section", "article", "main", "li", "ul", "ol", "table", "tr", "pre",
    "blockquote", "dd", "dt", "dl", "figure", "figcaption", "form", "br", "hr", "td", "th",
}  # fmt: skip


class _HtmlReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.in_title = False
        self.skipping: list[str] = []
        self.heading: tuple[int, list[str]] | None = None
        self.blocks: list[tuple[int, str]] = []  # (heading level or 0, text)
        self.buffer: list[str] = []
        self.has_main = False
        self.main_depth = 0
        self.main_blocks: list[tuple[int, str]] = []

    def _flush(self) -> None:
        text = re.sub(r"[ \t\u00a0]+", " ", "".join(self.buffer)).strip()
        self.buffer.clear()
        if text:
            self.blocks.append((0, text))
            if self.main_depth:
                self.main_blocks.append((0, text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skipping:
            if tag not in _VOID:
                self.skipping.append(tag)
            return
        if tag in _SKIPPED:
            self._flush()
            self.skipping.append(tag)
            return
        if tag == "title":
            self.in_title = True
        elif tag in ("main", "article") and not self.main_depth:
            self._flush()
            self.has_main = True
            self.main_depth = 1
        elif self.main_depth and tag not in _VOID:
            self.main_depth += 1
        if re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading = (int(tag[1]), [])
        elif tag in _BLOCKS:
            self._flush()
            if tag == "li":
                self.buffer.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            self.skipping.pop()
            return
        if tag == "title":
            self.in_title = False
        if self.heading is not None and tag == f"h{self.heading[0]}":
            text = re.sub(r"\s+", " ", "".join(self.heading[1])).strip()
            if text:
                self.blocks.append((self.heading[0], text))
                if self.main_depth:
                    self.main_blocks.append((self.heading[0], text))
            self.heading = None
        elif tag in _BLOCKS:
            self._flush()
        if self.main_depth and tag not in _VOID:
            self.main_depth -= 1
            if not self.main_depth:
                self._flush()

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.in_title:
            self.title += data
        elif self.heading is not None:
            self.heading[1].append(data)
        else:
            self.buffer.append(data)


def html_sections(text: str) -> tuple[str, list[Section]]:
    """The page's title and its sections. When the page marks its content
    (``main`` or ``article``), only that is read."""
    reader = _HtmlReader()
    try:
        reader.feed(text)
        reader.close()
    except Exception as exc:  # HTMLParser is lenient; a failure is rare
        raise DocumentError(f"The HTML could not be read: {exc}") from None
    reader._flush()
    blocks = reader.main_blocks if reader.has_main and reader.main_blocks else reader.blocks
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    first_h1 = ""

    def close() -> None:
        if body:
            sections.append(Section([h for _, h in path], "\n\n".join(body)))
            body.clear()

    for level, block in blocks:
        if level:
            close()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, block))
            if level == 1 and not first_h1:
                first_h1 = block
        else:
            body.append(block)
    close()
    title = re.sub(r"\s+", " ", reader.title).strip() or first_h1
    return title, sections


# --- PDF ------------------------------------------------------------------


def pdf_sections(data: bytes) -> tuple[str, list[Section]]:
    """The PDF's title (from its metadata) and one section per page with
    text, headed "Page N"."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("The PDF is encrypted with a password.")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise DocumentError(
                f"The PDF has {len(reader.pages):,} pages; knowledge sources take up to "
                f"{MAX_PDF_PAGES:,}. Split it."
            )
        title = ""
        metadata = reader.metadata
        if metadata is not None and metadata.title:
            title = str(metadata.title).strip()
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").replace("\x00", "").strip()
            if text:
                sections.append(Section([f"Page {number}"], text))
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise DocumentError(f"The PDF could not be read: {exc}") from None
    except Exception as exc:  # pypdf raises many kinds on corrupt input
        raise DocumentError(f"The PDF could not be read ({type(exc).__name__}).") from None
    return title, sections


def document_parse(data: bytes, *, kind: str, filename: str = "", charset: str = "") -> Document:
    """Read ``data`` as a document of ``kind``; a ``DocumentError`` when it
    cannot be read or holds no text."""
    if kind == "pdf":
        if not data.lstrip().startswith(b"%PDF-"):
            raise DocumentError("The file is not a PDF (it does not start with %PDF-).")
        title, sections = pdf_sections(data)
    elif kind == "html":
        title, sections = html_sections(_text_decode(data, charset=charset))
    elif kind == "markdown":
        title, sections = markdown_sections(_text_decode(data, charset=charset))
    elif kind == "text":
        body = _text_decode(data, charset=charset).strip()
        title, sections = "", [Section([], body)] if body else []
    else:
        raise DocumentError(f"Unknown document kind {kind!r}.")
    document = Document(title=title or _title_from(filename), kind=kind, sections=sections)
    if not document.words:
        raise DocumentError("The document holds no text to answer from.")
    return document
