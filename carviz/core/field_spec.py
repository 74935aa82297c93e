"""One definition per config field: its range, help, command-line flag and form widget, as dataclass metadata.

A field declared with `setting(...)` carries a FieldSpec. Validation (check_fields), the command-line flags
(cli/common.py) and the Train form (views/config_form.py, app_pages/_config_form.py) are all derived from it,
so a new field is one declaration, and tests/unit/test_config_fields.py fails when a field reaches neither.

Dataclass metadata rather than pydantic: the configs are frozen dataclasses whose records (config.json) and
cross-field rules already exist; metadata adds the one source without a second model layer or a new dependency.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

SPEC = "carviz.spec"  # the metadata key
WIDGETS = ("text", "select", "number", "slider", "checkbox", "radio", "none")


@dataclass(frozen=True)
class FieldSpec:
    """How one config field is checked, set on the command line and shown in the Train form.

    choices: the only valid values (also the CLI's choices and the select's options).
    low/high (open or closed ends): the valid range; integer: the value must be an int.
    options, form_min/form_max/step: what the form offers when narrower than the valid range.
    flag: the command-line flag ("" derives --field-name; None: no flag of its own, `cli` names the one that sets
    it); const: the flag takes no value and sets this one (store_const), for booleans; parse: from text.
    widget: the form's widget kind; "none" with a reason in `form` when the field is not in the form.
    """

    label: str
    help: str = ""
    widget: str = "number"
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    max_length: int | None = None
    options: tuple[Any, ...] = ()
    form_min: float | None = None
    form_max: float | None = None
    step: float | None = None
    number_format: str | None = None
    flag: str | None = ""
    aliases: tuple[str, ...] = ()
    const: Any = None
    metavar: str | None = None
    form_key: str = ""
    cli: str = ""  # the flag set elsewhere (e.g. "--dataset / --dataset-path"), when flag is None
    form: str = ""  # why the field has no form widget, when widget is "none"
    parse: Callable[[Any], Any] | None = None  # text (a flag's, a text box's) to value; ConfigError when wrong
    nested: type | None = None  # a dataclass whose own fields are this field's parts (e.g. Augmentation)

    def __post_init__(self) -> None:
        if self.widget not in WIDGETS:
            raise ValueError(f"unknown widget kind {self.widget!r}")


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            **spec: Any) -> Any:
    """A dataclass field with its FieldSpec (keyword arguments of FieldSpec)."""
    metadata = {SPEC: FieldSpec(**spec)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def spec_of(field: dataclasses.Field) -> FieldSpec | None:
    return field.metadata.get(SPEC)


def specs(cls: type) -> Iterator[tuple[str, FieldSpec]]:
    """(field name, spec) of every field of dataclass `cls` declared with setting(), in declaration order."""
    for field in dataclasses.fields(cls):
        spec = spec_of(field)
        if spec is not None:
            yield field.name, spec


@dataclass(frozen=True)
class Leaf:
    """A field of a config, or of a dataclass nested in it (path ("augmentation", "zoom")), with its spec."""

    path: tuple[str, ...]
    spec: FieldSpec
    default: Any

    @property
    def name(self) -> str:
        return self.path[-1]


def leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """Every field of dataclass `cls` declared with setting(), a nested dataclass's fields in place of its field."""
    defaults = cls()
    found: list[Leaf] = []
    for name, spec in specs(cls):
        if spec.nested is not None:
            found += leaves(spec.nested, prefix + (name,))
        else:
            found.append(Leaf(prefix + (name,), spec, getattr(defaults, name)))
    return found


def replace_paths(config: Any, values: dict[tuple[str, ...], Any]) -> Any:
    """A copy of frozen dataclass `config` with the values at these paths (nested dataclasses copied too)."""
    changes: dict[str, Any] = {}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            changes[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, parts in nested.items():
        changes[name] = replace_paths(getattr(config, name), parts)
    return dataclasses.replace(config, **changes)


def flag_name(name: str, spec: FieldSpec) -> str | None:
    """The field's command-line flag, or None when it has none of its own."""
    if spec.flag is None:
        return None
    return spec.flag or "--" + name.replace("_", "-")


def range_text(spec: FieldSpec) -> str:
    """The valid range as people write it: "in [0, 1)", "an integer >= 1", "an integer in 32..1024"."""
    if spec.integer:
        if spec.high is None:
            return f"an integer >= {_number(spec.low)}"
        return f"an integer in {_number(spec.low)}..{_number(spec.high)}"
    if spec.high is None:
        return f"{'>' if spec.low_open else '>='} {_number(spec.low)}"
    return (f"in {'(' if spec.low_open else '['}{_number(spec.low)}, {_number(spec.high)}"
            f"{')' if spec.high_open else ']'}")


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def check_value(name: str, value: Any, spec: FieldSpec) -> str | None:
    """Why `value` is not valid for the field, or None when it is."""
    if spec.choices:
        if value not in spec.choices:
            return f"{name} must be one of {', '.join(str(c) for c in spec.choices)}; got {value!r}"
        return None
    if spec.widget == "checkbox" and not isinstance(value, bool):
        return f"{name} must be true or false, got {value!r}"
    if spec.max_length is not None and (not isinstance(value, str) or len(value) > spec.max_length):
        return f"{name} must be text of at most {spec.max_length} characters"
    if spec.low is None and spec.high is None and not spec.integer:
        return None
    wrong = f"{name} must be {range_text(spec)}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return wrong
    if spec.integer and not isinstance(value, int):
        return wrong
    if not math.isfinite(value):
        return wrong
    if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
        return wrong
    if spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high):
        return wrong
    return None


def check_fields(instance: Any, error: type[Exception], prefix: str = "") -> None:
    """Raise `error` for the first field of dataclass `instance` whose value its spec rejects."""
    for name, spec in specs(type(instance)):
        problem = check_value(prefix + name, getattr(instance, name), spec)
        if problem:
            raise error(problem)
