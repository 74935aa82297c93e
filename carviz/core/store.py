"""The store: the one owner of the record layout (runs, sweeps, LR range tests), both ways.

Create, get, list and find records; the writers a job uses (metrics, progress, info, split, model); forgiving
readers (a torn or wrong-typed file reads as missing, never raises). Nobody else joins paths under runs/.
No TensorFlow here: a model is saved through its own .save().
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from carviz.core import settings
from carviz.core.config import ConfigError, SweepConfig, TrainConfig, expand
from carviz.core.jobs.record import (
    JobRecord,
    atomic_write_json,
    atomic_write_text,
    make_record_dir,
    new_id,
    now_iso,
    read_json,
    read_json_object,
)
from carviz.core.jobs.state import derive_state
from carviz.core.jobs.status import JobState, Status

__all__ = [
    "METRIC_COLUMNS", "LRTest", "MetricsWriter", "Run", "RunState", "Status", "Store", "Sweep", "atomic_write_json",
    "create_run", "find_run", "list_runs", "new_id", "now_iso", "read_json", "read_metrics", "summarize",
]

RunState = JobState  # a run's derived state is a job's

METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")

# A run folder (besides the job files of record.py):
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
INFO_FILE = "run.json"
EVALUATION_FILE = "evaluation.json"
CLASSES_FILE = "classes.json"
SPLIT_FILE = "split.json"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoint"
TENSORBOARD_DIR = "tensorboard"
SWEEP_CONTEXT_FILE = "sweep_context.json"  # what a sweep's run needs to know of its sweep (pruning, peers)
# Under runs/:
SWEEPS_DIR = ".sweeps"
SWEEP_FILE = "sweep.json"
FEEDER_LOG = "feeder.log"
LR_TESTS_DIR = ".lr_range"
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"


# ---------------------------------------------------------------- metrics


def _to_number(text: str) -> float | int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


_metrics_cache: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.csv, one per epoch. A truncated last line or an undecodable byte is skipped; a repeated
    epoch keeps the last row. Parsed rows are cached by (mtime, size): a polling dashboard re-reads only changes."""
    try:
        stat = path.stat()
    except OSError:
        return []
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _metrics_cache.get(path)
    if cached and cached[0] == key:
        return [dict(row) for row in cached[1]]
    try:
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    if not raw.endswith("\n"):
        raw = raw[: raw.rfind("\n") + 1]  # the last line is still being written
    by_epoch: dict[int, dict[str, Any]] = {}
    reader = csv.reader(io.StringIO(raw))
    header = next(reader, None) or []
    for values in reader:
        if len(values) != len(header):
            continue
        row = {key_: _to_number(value) for key_, value in zip(header, values)}
        epoch = row.get("epoch")
        if isinstance(epoch, int):
            by_epoch[epoch] = row
    rows = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    if len(_metrics_cache) > 5000:
        _metrics_cache.clear()
    _metrics_cache[path] = (key, rows)
    return [dict(row) for row in rows]


class MetricsWriter:
    """Appends one row per finished epoch to metrics.csv, fsynced, so a kill loses at most the running epoch.

    On creation it rewrites what a resumed run keeps (epochs up to keep_through_epoch), so every epoch appears
    exactly once."""

    def __init__(self, path: Path, keep_through_epoch: int) -> None:
        self.path = path
        kept = [row for row in read_metrics(path) if row["epoch"] <= keep_through_epoch]
        lines = [",".join(METRIC_COLUMNS)]
        lines += [",".join(_csv_value(row.get(col)) for col in METRIC_COLUMNS) for row in kept]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow([_csv_value(row.get(col)) for col in METRIC_COLUMNS])
            handle.flush()
            os.fsync(handle.fileno())


# ---------------------------------------------------------------- records


class Run(JobRecord):
    """A training run's folder: its job files plus config, metrics, info, split, classes, evaluation, model."""

    MARKER = CONFIG_FILE

    # --- reading ------------------------------------------------------------------
    def config(self) -> TrainConfig:
        return TrainConfig.load(self.file(CONFIG_FILE))

    def config_dict(self) -> dict[str, Any]:
        return read_json_object(self.file(CONFIG_FILE))

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.file(METRICS_FILE))

    def info(self) -> dict[str, Any]:
        return read_json_object(self.file(INFO_FILE))

    def evaluation(self) -> dict[str, Any] | None:
        return read_json_object(self.file(EVALUATION_FILE)) or None

    def classes(self) -> list[str] | None:
        data = read_json(self.file(CLASSES_FILE))
        return data if isinstance(data, list) and all(isinstance(c, str) for c in data) else None

    def split(self) -> dict[str, Any] | None:
        return read_json_object(self.file(SPLIT_FILE)) or None

    def sweep_context(self) -> dict[str, Any]:
        """What the sweep wrote into this run: sweep id, pruning settings, peer run ids, the sweep's freeze points."""
        return read_json_object(self.file(SWEEP_CONTEXT_FILE))

    def state(self) -> JobState:
        return derive_state(self)

    def status(self) -> Status:
        return self.state().status

    def model_path(self) -> Path:
        return self.file(MODEL_FILE)

    def has_model(self) -> bool:
        return self.model_path().is_file()

    def tensorboard_dir(self) -> Path:
        return self.file(TENSORBOARD_DIR)

    def checkpoint(self) -> tuple[Path, int] | None:
        """(the whole-model checkpoint file, the epochs it holds), or None when there is none."""
        state = read_json_object(self.file(CHECKPOINT_DIR) / "state.json")
        path = self.file(CHECKPOINT_DIR) / "last.keras"
        epochs = state.get("epochs_done")
        if not path.is_file() or not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
            return None
        return path, epochs

    # --- writing (the run's job only) ------------------------------------------------
    def metrics_writer(self, keep_through_epoch: int) -> MetricsWriter:
        return MetricsWriter(self.file(METRICS_FILE), keep_through_epoch)

    def update_info(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into run.json (device, versions, dataset, model, cache use, …); returns the whole info."""
        info = self.info()
        info.update(fields)
        atomic_write_json(self.file(INFO_FILE), info)
        return info

    def write_classes(self, classes: list[str]) -> None:
        atomic_write_json(self.file(CLASSES_FILE), classes)

    def write_split(self, split: dict[str, Any]) -> None:
        atomic_write_json(self.file(SPLIT_FILE), split)

    def write_evaluation(self, evaluation: dict[str, Any]) -> None:
        atomic_write_json(self.file(EVALUATION_FILE), {**evaluation, "evaluated_at": now_iso()})

    def _save_whole_model(self, model: Any, destination: Path) -> None:
        tmp = destination.with_name(f"tmp-{destination.name}")
        try:
            model.save(tmp)
            os.replace(tmp, destination)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk: the partial file goes before the error is recorded
            raise

    def save_model(self, model: Any) -> None:
        """The finished model (Keras' .save), replaced atomically."""
        self._save_whole_model(model, self.model_path())

    def save_checkpoint(self, model: Any, epochs_done: int) -> None:
        """Whole model with optimizer state, replaced atomically, then the epoch it holds."""
        folder = self.file(CHECKPOINT_DIR)
        folder.mkdir(exist_ok=True)
        self._save_whole_model(model, folder / "last.keras")
        atomic_write_json(folder / "state.json", {"epochs_done": epochs_done, "saved_at": now_iso()})


class Sweep(JobRecord):
    """A sweep's folder (runs/.sweeps/<id>): its definition, its runs' ids in launch order, and the backend its
    runs go to. The folder is also the record of the sweep's feeder job. Raises LookupError when unreadable."""

    MARKER = SWEEP_FILE

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        data = read_json_object(self.file(SWEEP_FILE))
        try:
            self.config = SweepConfig.from_dict(data["definition"])
            self.run_ids: tuple[str, ...] = tuple(str(run_id) for run_id in data["run_ids"])
        except (KeyError, TypeError, ValueError, ConfigError) as error:
            raise LookupError(f"no readable sweep in {self.path} ({type(error).__name__}: {error})") from error
        self.created_at: str = str(data.get("created_at", ""))
        self.backend: str = data.get("backend") if data.get("backend") in ("local", "ray") else "local"
        self.runs_root = self.path.parent.parent

    def runs(self) -> list[Run]:
        return [Run(self.runs_root / run_id) for run_id in self.run_ids]

    def feeder_state(self) -> JobState:
        return derive_state(self)


class LRTest(JobRecord):
    """An LR range test's folder (runs/.lr_range/<id>): config, parameters, live progress and the result."""

    MARKER = CONFIG_FILE

    def config_dict(self) -> dict[str, Any]:
        return read_json_object(self.file(CONFIG_FILE))

    def config(self) -> TrainConfig:
        return TrainConfig.load(self.file(CONFIG_FILE))

    def params(self) -> dict[str, Any]:
        return read_json_object(self.file(PARAMS_FILE))

    def result(self) -> dict[str, Any] | None:
        return read_json_object(self.file(RESULT_FILE)) or None

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.file(RESULT_FILE), result)

    def state(self) -> JobState:
        return derive_state(self)


# ---------------------------------------------------------------- the store


def _valid_id(record_id: str) -> bool:
    return bool(record_id) and isinstance(record_id, str) and "/" not in record_id and not record_id.startswith(".") \
        and record_id not in ("..",) and "\x00" not in record_id


def _unique_match(kind: str, ref: str, records: list[Any], name_of: Any) -> Any:
    exact = [r for r in records if r.id == ref]
    matches = exact or [r for r in records if r.id.startswith(ref)] or [r for r in records if name_of(r) == ref]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no {kind} matches {ref!r}")
    raise LookupError(f"{ref!r} matches {len(matches)} {kind}s: {', '.join(r.id for r in matches[:5])}")


class Store:
    """The records under one runs root (default: settings.runs_dir()): runs, sweeps and LR range tests."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else settings.runs_dir()

    # --- runs -----------------------------------------------------------------------
    def create_run(self, config: TrainConfig) -> Run:
        """A new run folder (id made here, never from the display name) with its config and status queued."""
        run = Run(make_record_dir(self.root))
        atomic_write_text(run.file(CONFIG_FILE), config.to_json())
        run.write_status(Status.QUEUED, created_at=now_iso())
        return run

    def get_run(self, run_id: str) -> Run:
        """The run with exactly this id; LookupError when there is none."""
        if not _valid_id(run_id) or not (self.root / run_id / CONFIG_FILE).is_file():
            raise LookupError(f"no run {run_id!r} in {self.root}")
        return Run(self.root / run_id)

    def list_runs(self) -> list[Run]:
        """Every run folder, newest first (ids sort by creation time)."""
        if not self.root.is_dir():
            return []
        runs = [Run(entry.path) for entry in os.scandir(self.root)
                if entry.is_dir() and not entry.name.startswith(".")
                and os.path.exists(os.path.join(entry.path, CONFIG_FILE))]
        return sorted(runs, key=lambda run: run.id, reverse=True)

    def find_run(self, ref: str) -> Run:
        """A run by id, unique id prefix, or exact display name."""
        return _unique_match("run", ref, self.list_runs(), lambda run: run.config_dict().get("name"))

    # --- sweeps ---------------------------------------------------------------------
    def create_sweep(self, sweep: SweepConfig, backend: str = "local") -> Sweep:
        """The sweep's folder, a queued run per grid point (each told its sweep context), then sweep.json."""
        path = make_record_dir(self.root / SWEEPS_DIR)
        runs = [self.create_run(config) for config in expand(sweep, path.name)]
        run_ids = [run.id for run in runs]
        for run, config in zip(runs, expand(sweep, path.name)):
            atomic_write_json(run.file(SWEEP_CONTEXT_FILE), {
                "sweep_id": path.name,
                "prune": sweep.prune.to_dict() if sweep.prune else None,
                "peer_run_ids": [other for other in run_ids if other != run.id],
                "freeze_points": list(sweep.points_for(config.backbone)),
            })
        atomic_write_json(path / SWEEP_FILE, {"id": path.name, "created_at": now_iso(), "backend": backend,
                                              "definition": sweep.to_dict(), "run_ids": run_ids})
        return Sweep(path)

    def get_sweep(self, sweep_id: str) -> Sweep:
        """The sweep with exactly this id; LookupError when it is missing or unreadable."""
        if not _valid_id(sweep_id):
            raise LookupError(f"no sweep {sweep_id!r}")
        return Sweep(self.root / SWEEPS_DIR / sweep_id)

    def list_sweeps(self) -> list[Sweep]:
        """Every readable sweep, newest first (a half-created or foreign folder is passed over)."""
        folder = self.root / SWEEPS_DIR
        if not folder.is_dir():
            return []
        sweeps = []
        for entry in sorted(os.listdir(folder), reverse=True):
            try:
                sweeps.append(self.get_sweep(entry))
            except LookupError:
                continue
        return sweeps

    def find_sweep(self, ref: str) -> Sweep:
        """A sweep by id, unique id prefix, or exact name."""
        return _unique_match("sweep", ref, self.list_sweeps(), lambda sweep: sweep.config.name)

    # --- LR range tests -------------------------------------------------------------
    def create_lr_test(self, config: TrainConfig, params: dict[str, Any]) -> LRTest:
        test = LRTest(make_record_dir(self.root / LR_TESTS_DIR))
        atomic_write_text(test.file(CONFIG_FILE), config.to_json())
        atomic_write_json(test.file(PARAMS_FILE), params)
        test.write_status(Status.QUEUED, created_at=now_iso())
        return test

    def get_lr_test(self, test_id: str) -> LRTest:
        if not _valid_id(test_id) or not (self.root / LR_TESTS_DIR / test_id / CONFIG_FILE).is_file():
            raise LookupError(f"no LR range test {test_id!r}")
        return LRTest(self.root / LR_TESTS_DIR / test_id)

    def list_lr_tests(self) -> list[LRTest]:
        """Every LR range test, newest first."""
        folder = self.root / LR_TESTS_DIR
        if not folder.is_dir():
            return []
        found = [LRTest(entry) for entry in folder.iterdir() if entry.is_dir() and (entry / CONFIG_FILE).exists()]
        return sorted(found, key=lambda test: test.id, reverse=True)


# ---------------------------------------------------------------- module-level shortcuts (default root)


def create_run(config: TrainConfig, runs_root: Path | None = None) -> Run:
    return Store(runs_root).create_run(config)


def list_runs(runs_root: Path | None = None) -> list[Run]:
    return Store(runs_root).list_runs()


def find_run(ref: str, runs_root: Path | None = None) -> Run:
    return Store(runs_root).find_run(ref)


def summarize(run: Run, config: dict[str, Any] | None = None,
              metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One row for a runs table: config essentials, status, best/final metrics, duration, where it ran.
    A caller that has read the config or metrics already passes them in (each file is read once)."""
    config = run.config_dict() if config is None else config
    state = run.state()
    metrics = run.metrics() if metrics is None else metrics
    val_acc = [row["val_accuracy"] for row in metrics if isinstance(row.get("val_accuracy"), (int, float))]
    best_index = max(range(len(val_acc)), key=val_acc.__getitem__) if val_acc else None
    best_row = [row for row in metrics if isinstance(row.get("val_accuracy"), (int, float))][best_index] \
        if best_index is not None else None
    return {
        "id": run.id,
        "name": config.get("name", ""),
        "dataset": config.get("dataset"),
        "backbone": config.get("backbone"),
        "weights": config.get("weights"),
        "learning_rate": config.get("learning_rate"),
        "freeze": config.get("freeze"),
        "head": config.get("head"),
        "epochs": config.get("epochs"),
        "status": state.status.value,
        "epochs_done": len(metrics),
        "best_val_accuracy": val_acc[best_index] if best_index is not None else None,
        "best_epoch": best_row["epoch"] if best_row is not None else None,
        "final_val_accuracy": val_acc[-1] if val_acc else None,
        "final_val_loss": metrics[-1].get("val_loss") if metrics else None,
        "seconds": sum(row.get("seconds") or 0 for row in metrics),
        "created_at": state.created_at,
        "error": state.error,
        "backend": state.backend,
        "host": state.host,
    }
