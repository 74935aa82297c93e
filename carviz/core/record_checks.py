"""Record checks: what makes a run's record damaged ("broken"), one sentence per problem; never raises."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from carviz.core.config import ConfigError, TrainConfig
from carviz.core.jobs.record import LAUNCH_FILE, PROGRESS_FILE, STATUS_FILE
from carviz.core.jobs.status import Status
from carviz.core.run_files import (
    CLASSES_FILE,
    CONFIG_FILE,
    EVALUATION_FILE,
    INFO_FILE,
    SPLIT_FILE,
    SWEEP_CONTEXT_FILE,
)


BROKEN = "broken"  # the word shown instead of a run's status when its record is damaged; never a job Status


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return _is_real(value) and math.isfinite(value)


def _shown(value: Any) -> str:
    """A value as it stands in the file, cut short: for messages."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")


_TEXT = (lambda v: isinstance(v, str), "text")
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_NUMBER = (_is_real, "a number")
_WHOLE = (lambda v: is_int(v) and v >= 0, "a whole number")
_POSITIVE = (lambda v: is_int(v) and v > 0, "a positive integer")

# What each record file must hold, field by field (null is allowed where the writers write it).
_STATUS_FIELDS = {"pid": _POSITIVE, "pid_create_time": _NUMBER, "error": _TEXT, "created_at": _TEXT,
                  "started_at": _TEXT, "ended_at": _TEXT, "updated_at": _TEXT, "host": _TEXT, "backend": _TEXT,
                  "pruned_at_epoch": _WHOLE, "pruned_reason": _TEXT}  # epoch 0: its configuration was pruned
_LAUNCH_FIELDS = {"pid": _POSITIVE, "pid_create_time": _NUMBER, "backend": _TEXT, "host": _TEXT}
_PROGRESS_FIELDS = {"phase": _TEXT, "epoch": _WHOLE, "epochs": _WHOLE, "step": _WHOLE, "steps_per_epoch": _WHOLE,
                    "images_per_second": _NUMBER, "eta_seconds": _NUMBER, "loss": _NUMBER, "accuracy": _NUMBER}
_INFO_FIELDS = {"device": _OBJECT, "model": _OBJECT, "feature_cache": _OBJECT, "parent": _OBJECT, "val_images": _WHOLE,
                "train_images": _WHOLE, "test_images": _WHOLE, "resumes": (lambda v: isinstance(v, list), "an array")}
_EVALUATION_FIELDS = {"accuracy": _NUMBER, "loss": _NUMBER, "images": _WHOLE}
_EVALUATION_EXTRA_FIELDS = {"test": _OBJECT, "test_accuracy": _NUMBER}  # only when the run has a test split
_CONFIG_KINDS = {str: _TEXT, bool: (lambda v: isinstance(v, bool), "true or false"),
                 int: (is_int, "an integer"), float: (is_number, "a number")}


def _config_fields() -> dict[str, tuple[Any, str]]:
    """What each TrainConfig field of config.json must be, from the field's default."""
    fields: dict[str, tuple[Any, str]] = {}
    for field in dataclasses.fields(TrainConfig):
        if field.name == "freeze":
            fields[field.name] = (lambda v: (is_int(v) and v >= 1) or v == "all"
                                  or (isinstance(v, str) and v.isdigit() and int(v) >= 1),
                                  "a layer number or 'all'")
        elif field.name == "augmentation":
            fields[field.name] = _OBJECT
        elif field.default is not dataclasses.MISSING and type(field.default) in _CONFIG_KINDS:
            fields[field.name] = _CONFIG_KINDS[type(field.default)]
    return fields


CONFIG_FIELDS = _config_fields()


def _field_problems(name: str, data: dict[str, Any], spec: dict[str, tuple[Any, str]], null_ok: bool = True,
                    required: tuple[str, ...] = ()) -> list[str]:
    problems = [f"{name} has no {key}" for key in required if data.get(key) is None]
    for key, (ok, what) in spec.items():
        if key not in data or (data[key] is None and (null_ok or key in required)):
            continue  # absent, or a null where null is allowed (a required one is reported above)
        if not ok(data[key]):
            problems.append(f"{name}: {key} is {_shown(data[key])}, not {what}")
    return problems


def _status_problems(data: Any) -> list[str]:
    state = data.get("state")
    problems = []
    if state is None:
        problems.append("status.json has no state")
    elif state not in {status.value for status in Status}:
        problems.append(f"status.json: state is {_shown(state)}, not a job state")
    return problems + _field_problems("status.json", data, _STATUS_FIELDS)


def _config_problems(data: Any) -> list[str]:
    problems = _field_problems("config.json", data, CONFIG_FIELDS, null_ok=False)
    if problems:
        return problems
    try:
        TrainConfig.from_dict({key: value for key, value in data.items() if key in CONFIG_FIELDS})
    except (ConfigError, TypeError, ValueError) as error:
        return [f"config.json: {error}"]
    return []


def _classes_problems(data: Any) -> list[str]:
    odd = [item for item in data if not isinstance(item, str)]
    return [f"classes.json: {_shown(odd[0])} is not a class name"] if odd else []


def _split_problems(data: Any) -> list[str]:
    problems = []
    for key, ok, what in (("classes", lambda v: isinstance(v, str), "class names"),
                          ("train_paths", lambda v: isinstance(v, str), "paths"),
                          ("val_paths", lambda v: isinstance(v, str), "paths"),
                          ("train_labels", is_int, "class numbers"), ("val_labels", is_int, "class numbers")):
        value = data.get(key)
        if not isinstance(value, list) or not all(ok(item) for item in value):
            problems.append(f"split.json: {key} is not a list of {what}" if key in data
                            else f"split.json has no {key}")
    for key, ok, what in (("test_paths", lambda v: isinstance(v, str), "paths"),
                          ("test_labels", is_int, "class numbers")):  # absent in a split.json older than test parts
        value = data.get(key)
        if key in data and (not isinstance(value, list) or not all(ok(item) for item in value)):
            problems.append(f"split.json: {key} is not a list of {what}")
    return problems


# file name -> (required, the JSON type it holds, its check of the parsed content)
RUN_FILES: dict[str, tuple[bool, type, Any]] = {
    STATUS_FILE: (True, dict, _status_problems),
    CONFIG_FILE: (True, dict, _config_problems),
    LAUNCH_FILE: (False, dict, lambda data: _field_problems("launch.json", data, _LAUNCH_FIELDS)),
    PROGRESS_FILE: (False, dict, lambda data: _field_problems("progress.json", data, _PROGRESS_FIELDS)),
    INFO_FILE: (False, dict, lambda data: _field_problems("run.json", data, _INFO_FIELDS)),
    EVALUATION_FILE: (False, dict, lambda data: _field_problems("evaluation.json", data,
                                                                {**_EVALUATION_FIELDS, **_EVALUATION_EXTRA_FIELDS},
                                                                required=tuple(_EVALUATION_FIELDS))),
    CLASSES_FILE: (False, list, _classes_problems),
    SPLIT_FILE: (False, dict, _split_problems),
    SWEEP_CONTEXT_FILE: (False, dict, lambda data: []),
}
_file_checks: dict[Path, tuple[tuple[int, int, int], list[str]]] = {}


def json_file_problems(path: Path, required: bool, kind: type, check: Any) -> list[str]:
    """What is wrong with one JSON record file: missing (when required), unreadable, not UTF-8, not JSON, not the
    JSON type it must hold, or a field of the wrong type. Cached by (inode, mtime, size): files are replaced whole."""
    name = path.name
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [f"{name} is missing"] if required else []
    except OSError as error:
        return [f"{name} unreadable ({error.strerror or type(error).__name__})"]
    key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _file_checks.get(path)
    if cached and cached[0] == key:
        return list(cached[1])
    problems: list[str]
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        problems = [f"{name} unreadable ({error.strerror or type(error).__name__})"]
    except UnicodeDecodeError as error:
        problems = [f"{name} has undecodable bytes (not UTF-8 at byte {error.start})"]
    except ValueError as error:
        problems = [f"{name} is not valid JSON ({getattr(error, 'msg', error)})"]
    else:
        if not isinstance(data, kind):
            problems = [f"{name} is not a JSON {'object' if kind is dict else 'array'} "
                        f"(it holds {_json_kind(data)}: {_shown(data)})"]
        else:
            problems = check(data)
    if len(_file_checks) > 20000:
        _file_checks.clear()
    _file_checks[path] = (key, problems)
    return list(problems)
