"""Command group: managing runs — config diff, rename, tag, note, archive, delete to the trash, list/restore/empty the trash."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from carviz.core import trash
from carviz.core.store import Store
from carviz.views.formatting import format_size, format_time


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    rename = sub.add_parser("rename", help="give a run a new display name ('' goes back to its config's name)")
    rename.add_argument("run")
    rename.add_argument("name")

    tag = sub.add_parser("tag", help="add tags to a run (or --remove them); with no TAG, list its tags")
    tag.add_argument("run")
    tag.add_argument("tags", nargs="*", metavar="TAG")
    tag.add_argument("--remove", action="store_true", help="remove these tags instead")

    note = sub.add_parser("note", help="set a run's free-text note ('' clears it); with no TEXT, print it")
    note.add_argument("run")
    note.add_argument("text", nargs="?")

    archive = sub.add_parser("archive", help="hide runs from the default lists (nothing is deleted)")
    archive.add_argument("runs", nargs="+", metavar="RUN")
    archive.add_argument("--undo", action="store_true", help="show them again")

    delete = sub.add_parser("delete", help="move finished runs to the run trash (restorable until emptied)")
    delete.add_argument("runs", nargs="+", metavar="RUN")

    deleted = sub.add_parser("deleted", help="list the run trash with the space it holds; restore or empty it")
    action = deleted.add_mutually_exclusive_group()
    action.add_argument("--restore", nargs="+", metavar="ID", help="move these runs back")
    action.add_argument("--empty", action="store_true", help="delete every trashed run for good")
    diff = sub.add_parser("diff", help="the config fields that differ between runs, side by side")
    diff.add_argument("runs", nargs="+", metavar="RUN")
    diff.add_argument("--all", action="store_true", help="every field, identical ones too")
    return {"diff": cmd_diff, "rename": cmd_rename, "tag": cmd_tag, "note": cmd_note, "archive": cmd_archive,
            "delete": cmd_delete, "deleted": cmd_deleted}


def cmd_rename(args: argparse.Namespace) -> int:
    run = Store().find_run(args.run)
    run.annotate(name=args.name)
    print(f"run {run.id} is now named {run.display_name()!r}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    run = Store().find_run(args.run)
    tags = run.annotations().get("tags", [])
    if args.tags:
        from carviz.core.annotations import normalize_tags

        given = normalize_tags(args.tags)
        tags = [t for t in tags if t not in given] if args.remove else tags + [t for t in given if t not in tags]
        tags = run.annotate(tags=tags)["tags"]
    print(f"run {run.id} tags: {', '.join(tags) if tags else '(none)'}")
    return 0


def cmd_note(args: argparse.Namespace) -> int:
    run = Store().find_run(args.run)
    if args.text is not None:
        run.annotate(note=args.text)
    print(run.annotations().get("note") or "(no note)")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    store = Store()
    for ref in args.runs:
        run = store.find_run(ref)
        run.annotate(archived=not args.undo)
        print(f"run {run.id} {'shown again' if args.undo else 'archived'}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = Store()
    runs = [store.find_run(ref) for ref in args.runs]  # all found before any is moved
    for run in runs:
        item = trash.trash_run(store, run)
        print(f"run {item.id} ({item.name or 'unnamed'}) moved to the trash, {format_size(item.size_bytes)}; "
              f"`deleted --restore {item.id}` brings it back")
    return 0


def cmd_deleted(args: argparse.Namespace) -> int:
    store = Store()
    if args.restore:
        for run_id in args.restore:
            run = trash.restore_run(store, run_id)
            print(f"run {run.id} restored")
        return 0
    if args.empty:
        print(f"trash emptied: {format_size(trash.empty_trash(store))} freed")
        return 0
    items = trash.list_trash(store)
    if not items:
        print("the run trash is empty")
        return 0
    for item in items:
        print(f"{item.id:<23} {format_time(item.trashed_at):>12} {format_size(item.size_bytes):>9}  {item.name}")
    print(f"{len(items)} run{'' if len(items) == 1 else 's'}, {format_size(sum(i.size_bytes for i in items))}; "
          "`deleted --empty` frees it")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from carviz.views.config_diff import DIFFERS, FIELD, config_diff

    store = Store()
    runs = [store.find_run(ref) for ref in args.runs]
    if len(runs) < 2:
        raise ValueError("diff needs two or more runs")
    table = config_diff([(f"{run.display_name() or run.id} ({run.id[-6:]})", run.config_dict()) for run in runs],
                        show_identical=args.all)
    if table.empty:
        print("the configs are identical")
        return 0
    columns = [column for column in table.columns if column not in (FIELD, DIFFERS)]
    widths = [max(len(FIELD), *(len(str(v)) for v in table[FIELD]))] + [
        min(40, max(len(column), *(len(str(v)) for v in table[column]))) for column in columns]
    print("  ".join(text.ljust(width) for text, width in zip([FIELD, *columns], widths)))
    for _, row in table.iterrows():
        cells = [str(row[FIELD])] + [str(row[column])[:40] for column in columns]
        mark = "" if row[DIFFERS] else "  (same)"
        print("  ".join(text.ljust(width) for text, width in zip(cells, widths)) + mark)
    return 0
