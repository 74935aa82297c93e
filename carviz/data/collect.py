"""Glue shared by the Data page and the CLI for collecting images: form text -> crawl specs, import and review helpers.

Pure functions over the crawl (carviz.data.crawl: spec, job) and the importer (carviz.data.importer); no Streamlit here.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from carviz.core import settings
from carviz.data.crawl.spec import ClassRequest, CrawlSpec
from carviz.data.importer import ImportReport, dataset_path, import_zip, is_image_file, safe_class_name

if TYPE_CHECKING:
    from carviz.data.crawl.job import CrawlState

ENGINE_CHOICES = ("bing", "duckduckgo", "generic")
# GenericEngine arguments, in the order the forms show them; thumb_attributes is a comma-separated list
GENERIC_OPTIONS = ("search_url_template", "thumb_selector", "full_link_selector", "full_link_attribute",
                   "more_button_selector", "thumb_attributes", "consent_selector")
REQUIRED_GENERIC = ("search_url_template", "thumb_selector")
THUMB_SIDE = 160


# ---------------------------------------------------------------- crawl requests


def dataset_name(text: str) -> str:
    """A dataset name typed by a user, stripped and checked like a class name (one safe path component)."""
    name = (text or "").strip()
    if not name:
        raise ValueError("give the dataset a name")
    try:
        return safe_class_name(name)
    except ValueError as exc:
        raise ValueError(f"dataset name: {exc}") from None


def _split_queries(text: str) -> list[str]:
    return [q.strip() for q in text.split(";") if q.strip()]


def parse_class_line(line: str, target: int, separator: str = ":") -> ClassRequest:
    """`name: query one; query two` -> ClassRequest (no separator: the name is the query too)."""
    name, sep, queries = line.partition(separator)
    name = name.strip()
    if not name:
        raise ValueError(f"{line.strip()!r}: the class name is missing before {separator!r}")
    query_list = _split_queries(queries) if sep else [name]
    if not query_list:
        raise ValueError(f"class {name!r}: give at least one search query after {separator!r}")
    return ClassRequest(name=name, queries=tuple(query_list), target=target)


def parse_class_lines(text: str, target: int) -> list[ClassRequest]:
    """One class per line, `class name: query one; query two`; blank lines and `#` comments skipped.

    ValueError names the line at fault (bad class name, no query, a class given twice, no class at all).
    """
    requests: list[ClassRequest] = []
    seen: dict[str, int] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            request = parse_class_line(line, target)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        if request.name in seen:
            raise ValueError(f"line {number}: class {request.name!r} already given on line {seen[request.name]}")
        seen[request.name] = number
        requests.append(request)
    if not requests:
        raise ValueError("give at least one class, one per line: `class name: query one; query two`")
    return requests


def class_lines(spec: CrawlSpec) -> str:
    """The form text for a spec (inverse of parse_class_lines)."""
    return "\n".join(f"{c.name}: {'; '.join(c.queries)}" for c in spec.classes)


def parse_engine_options(pairs: Iterable[str] | dict[str, Any]) -> dict[str, Any]:
    """GenericEngine options from `key=value` strings (CLI) or a dict of form fields; empty values left out."""
    if isinstance(pairs, dict):
        items = list(pairs.items())
    else:
        items = []
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"engine option {pair!r}: expected key=value")
            items.append((key.strip(), value))
    options: dict[str, Any] = {}
    for key, value in items:
        if key not in GENERIC_OPTIONS:
            raise ValueError(f"unknown engine option {key!r} (known: {', '.join(GENERIC_OPTIONS)})")
        value = value.strip() if isinstance(value, str) else value
        if value in ("", None):
            continue
        if key == "thumb_attributes" and isinstance(value, str):
            value = [a.strip() for a in value.split(",") if a.strip()]
        options[key] = value
    return options


def build_spec(classes: Sequence[ClassRequest], engine: str = "bing", engine_options: dict[str, Any] | None = None,
               **settings: Any) -> CrawlSpec:
    """A CrawlSpec (validated); engine options only for the generic engine, where two are required."""
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"unknown engine {engine!r} (choose from {', '.join(ENGINE_CHOICES)})")
    options = dict(engine_options or {})
    if engine == "generic":
        missing = [k for k in REQUIRED_GENERIC if not options.get(k)]
        if missing:
            raise ValueError(f"the generic engine needs {' and '.join(missing)}")
    else:
        options = {}
    return CrawlSpec(classes=tuple(classes), engine=engine, engine_options=options, **settings)


def generic_defaults() -> dict[str, str]:
    """The generic engine's optional defaults as form text."""
    return {"full_link_attribute": "href", "thumb_attributes": "data-src, src"}


def crawl_rows(state: CrawlState) -> list[dict[str, Any]]:
    """One row per class for a table or progress bars."""
    return [{"class": name, "saved": p.saved, "target": p.target, "fraction": p.fraction, "seen": p.candidates,
             "broken": p.failed, "rejected": p.rejected, "state": p.state} for name, p in state.classes.items()]


def crawl_headline(state: CrawlState) -> str:
    """A one-line summary: status, images saved / wanted, current class and query."""
    if state.status is None:
        return "never crawled" if state.spec is None else "not started"
    text = f"{state.status.value} · {state.saved}/{state.target} images"
    if state.current.get("class"):
        text += f" · now: {state.current['class']} ← “{state.current.get('query', '')}”"
    if state.stop_requested and state.active:
        text += " · stop requested"
    return text


# ---------------------------------------------------------------- import


def report_summary(report: ImportReport) -> str:
    """`Added 12 images (cats 5, dogs 7); 3 already present, skipped; dropped 2.` for a message line."""
    counts = report.by_class()
    added = f"Added {len(report.added)} image{'s' if len(report.added) != 1 else ''}"
    if counts:
        added += " (" + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) + ")"
    if report.skipped:
        added += f"; {len(report.skipped)} already present, skipped"
    return added + f"; dropped {len(report.dropped)}" + (f"; {len(report.notes)} note(s)" if report.notes else "") + "."


UPLOAD_TYPES = (".zip",)  # what the importer takes as an upload (a folder is given by its path)


def upload_problem(file_name: str) -> str | None:
    """Why an uploaded file cannot be imported, naming it and the accepted types; None when its type is accepted."""
    if file_name.lower().endswith(UPLOAD_TYPES):
        return None
    return (f"`{file_name}` cannot be imported: the importer takes a {' or '.join(UPLOAD_TYPES)} file of class "
            f"folders (`class/image.jpg`). Zip the folder of class folders, or give its path below.")


def import_upload(stream: IO[bytes] | bytes, dataset: str | Path, **caps: Any) -> ImportReport:
    """Import an uploaded zip: copied to a temporary file first (seekable, not held in memory), then import_zip
    (recorded under the upload's name when it has one)."""
    if "source" not in caps and isinstance(getattr(stream, "name", None), str):
        caps["source"] = stream.name
    source: IO[bytes] = io.BytesIO(stream) if isinstance(stream, bytes) else stream
    if hasattr(source, "seek"):
        source.seek(0)
    fd, tmp = tempfile.mkstemp(prefix="carviz-upload-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        return import_zip(tmp, dataset, **caps)
    finally:
        os.unlink(tmp)


# ---------------------------------------------------------------- review


def class_folders(dataset: str | Path) -> list[str]:
    """Class folders of a dataset (hidden ones such as .trash and .crawl skipped)."""
    root = dataset_path(dataset) if isinstance(dataset, str) else Path(dataset)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def class_images(dataset: str | Path, class_name: str) -> list[Path]:
    """Every image file of a class folder, broken ones included (so they can be reviewed), sorted by name."""
    root = dataset_path(dataset) if isinstance(dataset, str) else Path(dataset)
    folder = settings.safe_join(root, safe_class_name(class_name))
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p) and p.is_file() and not p.is_symlink())


def page_count(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))


def paginate(items: Sequence[Any], page: int, per_page: int) -> list[Any]:
    """Items of 1-based page `page` (clamped to the pages there are)."""
    page = min(max(1, page), page_count(len(items), per_page))
    return list(items[(page - 1) * per_page: page * per_page])


def thumbnail(path: str | Path, side: int = THUMB_SIDE) -> bytes | None:
    """A small JPEG of an image for review grids; None when it does not decode."""
    from PIL import Image, ImageOps

    from carviz.data import datasets

    try:
        with Image.open(path) as image:
            if image.width * image.height > datasets.MAX_PIXELS:  # the scanner sets it aside: not decoded here either
                return None
            image.draft("RGB", (side * 2, side * 2))  # JPEG: decode at a reduced scale
            image = ImageOps.exif_transpose(image) or image
            image.thumbnail((side, side))
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=85)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
