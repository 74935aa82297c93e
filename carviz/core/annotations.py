"""A run's user annotations (rename, tags, note, archived): what is valid, and reading them forgivingly."""

from __future__ import annotations

from typing import Any

ANNOTATION_FIELDS = ("name", "tags", "note", "archived")
MAX_NAME = 120
MAX_TAG = 40
MAX_TAGS = 20
MAX_NOTE = 10_000


def normalize_tags(tags: Any) -> list[str]:
    """Tags trimmed, lower-cased, de-duplicated in order; ValueError for a non-list, an empty, overlong or
    comma-holding tag, or too many."""
    if isinstance(tags, str):
        tags = [part for part in tags.split(",")]
    if not isinstance(tags, (list, tuple)):
        raise ValueError("tags must be a list of words")
    cleaned: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"a tag must be text, got {tag!r}")
        tag = " ".join(tag.split()).lower()
        if not tag:
            continue
        if len(tag) > MAX_TAG:
            raise ValueError(f"tag {tag[:20]!r}… is longer than {MAX_TAG} characters")
        if tag not in cleaned:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per run")
    return cleaned


def check_annotations(changes: dict[str, Any]) -> dict[str, Any]:
    """The changes made valid (name trimmed, tags normalized); ValueError saying what is wrong."""
    checked: dict[str, Any] = {}
    if "name" in changes:
        name = changes["name"]
        if name is not None and not isinstance(name, str):
            raise ValueError("a run's name must be text")
        name = " ".join((name or "").split())
        if len(name) > MAX_NAME:
            raise ValueError(f"a run's name is at most {MAX_NAME} characters")
        checked["name"] = name  # "" goes back to the config's name
    if "tags" in changes:
        checked["tags"] = normalize_tags(changes["tags"])
    if "note" in changes:
        note = changes["note"] if changes["note"] is not None else ""
        if not isinstance(note, str):
            raise ValueError("a note must be text")
        if len(note) > MAX_NOTE:
            raise ValueError(f"a note is at most {MAX_NOTE} characters")
        checked["note"] = note.strip()
    if "archived" in changes:
        if not isinstance(changes["archived"], bool):
            raise ValueError("archived must be true or false")
        checked["archived"] = changes["archived"]
    return checked


def clean_annotations(data: dict[str, Any]) -> dict[str, Any]:
    """What of a read annotations.json is valid (a hand-edited bad field is dropped, never raised)."""
    clean: dict[str, Any] = {}
    for field in ANNOTATION_FIELDS:
        if field in data:
            try:
                clean.update(check_annotations({field: data[field]}))
            except ValueError:
                continue
    return clean


def matches(row: dict[str, Any], text: str) -> bool:
    """Whether a summarize() row's name, id, tags or note contain the text (case-insensitive); "" matches all."""
    needle = text.strip().lower()
    if not needle:
        return True
    haystack = [str(row.get("name") or ""), str(row.get("config_name") or ""), str(row.get("id") or ""),
                str(row.get("note") or ""), *[str(tag) for tag in row.get("tags") or []]]
    return any(needle in part.lower() for part in haystack)


def filter_rows(rows: list[dict[str, Any]], text: str = "", tags: list[str] | None = None, status: str | None = None,
                include_archived: bool = False) -> list[dict[str, Any]]:
    """The summarize() rows that match the text, carry every tag, are in that state (its display word, e.g.
    "broken", counts too), and are not archived unless asked."""
    wanted = normalize_tags(tags or [])
    kept = []
    for row in rows:
        if row.get("archived") and not include_archived:
            continue
        if status and status not in (row.get("status"), "broken" if row.get("problems") else None):
            continue
        if not set(wanted) <= set(row.get("tags") or []):
            continue
        if matches(row, text):
            kept.append(row)
    return kept
