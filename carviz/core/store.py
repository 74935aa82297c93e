"""The store: the one owner of the record layout (runs, sweeps, LR range tests), both ways.

Create, get, list and find records; the writers a job uses (metrics, progress, info, split, model); forgiving
readers (a torn or wrong-typed file reads as missing, never raises). Nobody else joins paths under runs/.
No TensorFlow here: a model is saved through its own .save().
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
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
from carviz.core.jobs.registry import NAMES as BACKEND_NAMES
from carviz.core.jobs.state import derive_state
from carviz.core.run_info import VERSION as RUN_INFO_VERSION
from carviz.core.run_info import RunInfo, as_dict
from carviz.core.run_info import field_names as run_info_fields
from carviz.core.metrics_file import METRIC_COLUMNS, MetricsWriter, metrics_problems, read_metrics
from carviz.core.annotations import ANNOTATION_FIELDS, check_annotations, clean_annotations
from carviz.core.record_checks import BROKEN, RUN_FILES, is_int, is_number, json_file_problems
from carviz.core.run_files import (  # noqa: F401 - the layout's names are the store's
    CONFIG_FILE,
    METRICS_FILE,
    INFO_FILE,
    EVALUATION_FILE,
    CALIBRATION_FILE,
    CLASSES_FILE,
    SPLIT_FILE,
    MODEL_FILE,
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    LEGACY_BEST_WEIGHTS,
    LEGACY_CHECKPOINT_FILE,
    BEST_WEIGHTS,
    TENSORBOARD_DIR,
    SWEEP_CONTEXT_FILE,
    RESUME_REQUEST_FILE,
    ANNOTATIONS_FILE,
    SWEEPS_DIR,
    WORKER_FILE,
    WORKERS_DIR,
    SWEEP_FILE,
    LR_TESTS_DIR,
    PARAMS_FILE,
    RESULT_FILE,
)
from carviz.core.jobs.status import JobState, Status
from carviz.core.summaries import (  # noqa: F401 - the row summaries stay importable from the store
    KEPT_LAST, KEPT_RULE, config_value, display_status, kept_label, summarize)

__all__ = [
    "BROKEN", "KEPT_LAST", "KEPT_RULE", "METRIC_COLUMNS", "LRTest", "MetricsWriter", "Run", "RunState", "Status",
    "Store", "Sweep", "atomic_write_json", "create_run", "display_status", "find_run", "kept_label", "list_runs",
    "metrics_problems", "new_id", "now_iso", "read_json", "read_metrics", "summarize",
]

RunState = JobState  # a run's derived state is a job's



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

    def calibration(self) -> dict[str, Any] | None:
        """calibration.json when it holds a usable temperature (a positive number), else None."""
        data = read_json_object(self.file(CALIBRATION_FILE))
        temperature = data.get("temperature")
        return data if is_number(temperature) and 0 < temperature < 1e6 else None

    def write_calibration(self, calibration: dict[str, Any]) -> None:
        """The job at its end, or later the UI/CLI (like exports: once the job has ended)."""
        atomic_write_json(self.file(CALIBRATION_FILE), {**calibration, "calibrated_at": now_iso()})

    def classes(self) -> list[str] | None:
        data = read_json(self.file(CLASSES_FILE))
        return data if isinstance(data, list) and all(isinstance(c, str) for c in data) else None

    def split(self) -> dict[str, Any] | None:
        return read_json_object(self.file(SPLIT_FILE)) or None

    def sweep_context(self) -> dict[str, Any]:
        """What the sweep wrote into this run: sweep id, pruning settings, peer run ids, the sweep's freeze points."""
        return read_json_object(self.file(SWEEP_CONTEXT_FILE))

    def annotations(self) -> dict[str, Any]:
        """The user's words on this run: {"name", "tags", "note", "archived"}, wrong-typed values dropped."""
        return clean_annotations(read_json_object(self.file(ANNOTATIONS_FILE)))

    def annotate(self, **changes: Any) -> dict[str, Any]:
        """Merge changes (name, tags, note, archived) into the annotations; ValueError for a bad value."""
        unknown = set(changes) - set(ANNOTATION_FIELDS)
        if unknown:
            raise ValueError(f"unknown annotation field(s): {', '.join(sorted(unknown))}")
        merged = {**self.annotations(), **check_annotations(changes)}
        atomic_write_json(self.file(ANNOTATIONS_FILE), merged)
        return merged

    def display_name(self, config: dict[str, Any] | None = None) -> str:
        """The name to show: the user's rename, else the config's name."""
        config = self.config_dict() if config is None else config
        return self.annotations().get("name") or config_value(config, "name") or ""

    def resume_request(self) -> dict[str, Any]:
        """Options of the latest resume request (e.g. accept_dataset_changes); {} for a first start."""
        return read_json_object(self.file(RESUME_REQUEST_FILE))

    def state(self) -> JobState:
        return derive_state(self)

    def status(self) -> Status:
        return self.state().status

    def problems(self, config: dict[str, Any] | None = None, metrics: list[dict[str, Any]] | None = None,
                 state: JobState | None = None) -> list[str]:
        """What is wrong with this run's record, one sentence each; [] for a sound run. A damaged file (not UTF-8,
        not JSON, not the JSON type it must be, a field of the wrong type), a malformed metrics.csv, or a
        metrics.csv short of the epochs a succeeded run must have trained. Callers that read the config, metrics or
        state already pass them in."""
        problems: list[str] = []
        for name, (required, kind, check) in RUN_FILES.items():
            problems += json_file_problems(self.file(name), required, kind, check)
        problems += metrics_problems(self.file(METRICS_FILE))
        state = self.state() if state is None else state
        if state.status == Status.SUCCEEDED:
            config = self.config_dict() if config is None else config
            metrics = self.metrics() if metrics is None else metrics
            epochs = config.get("epochs")
            patience = config.get("early_stopping_patience")
            early_stop = is_int(patience) and patience > 0
            pruned = is_int(self.raw_status().get("pruned_at_epoch"))
            if is_int(epochs) and len(metrics) < epochs and not (early_stop or pruned):
                problems.append(f"metrics.csv has {len(metrics)} epoch{'' if len(metrics) == 1 else 's'} but "
                                f"status.json says succeeded after {epochs}")
        return problems

    def model_path(self) -> Path:
        return self.file(MODEL_FILE)

    def has_model(self) -> bool:
        return self.model_path().is_file()

    def tensorboard_dir(self) -> Path:
        return self.file(TENSORBOARD_DIR)

    def checkpoint(self) -> tuple[Path, int] | None:
        """(the checkpoint file, the epochs it holds), or None when there is none. The file is CHECKPOINT_FILE, or
        an older run's whole-model LEGACY_CHECKPOINT_FILE (state.json names which)."""
        state = read_json_object(self.file(CHECKPOINT_DIR) / "state.json")
        name = state.get("file") if state.get("file") in (CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE) else \
            LEGACY_CHECKPOINT_FILE
        path = self.file(CHECKPOINT_DIR) / name
        epochs = state.get("epochs_done")
        if not path.is_file() or not is_int(epochs) or epochs < 0:
            return None
        return path, epochs

    def best_weights_path(self, epoch: int) -> Path:
        """The file holding the whole model's weights after `epoch`, the best epoch so far (KeepBest writes it): an
        older run's .weights.h5 where that is what exists."""
        path = self.file(CHECKPOINT_DIR) / BEST_WEIGHTS.format(epoch=epoch)
        legacy = self.file(CHECKPOINT_DIR) / LEGACY_BEST_WEIGHTS.format(epoch=epoch)
        return legacy if not path.is_file() and legacy.is_file() else path

    def checkpoint_best(self) -> tuple[Path, int, float] | None:
        """(its weights file, the epoch, its val_accuracy): the best epoch up to the checkpoint, as the checkpoint
        recorded it; None when there is no checkpoint, it recorded no best (made before carviz kept the best
        epoch), or the file is gone."""
        if self.checkpoint() is None:
            return None
        state = read_json_object(self.file(CHECKPOINT_DIR) / "state.json")
        epoch, value = state.get("best_epoch"), state.get("best_val_accuracy")
        if not is_int(epoch) or epoch < 1 or not is_number(value) or not self.best_weights_path(epoch).is_file():
            return None
        return self.best_weights_path(epoch), epoch, float(value)

    def _best_files(self) -> list[tuple[int, Path]]:
        found = []
        for pattern in (BEST_WEIGHTS, LEGACY_BEST_WEIGHTS):
            for path in self.file(CHECKPOINT_DIR).glob(pattern.replace("{epoch:04d}", "*")):
                number = path.name.split("-", 1)[1].split(".", 1)[0]
                if number.isdigit():
                    found.append((int(number), path))
        return sorted(found)

    def discard_best(self, after: int, keep: int | None = None) -> None:
        """Remove best-weights files of epochs after `after` (left by an attempt that stopped before its next
        checkpoint: a resume trains those epochs again) and, with `keep`, those of any other epoch before it."""
        for epoch, path in self._best_files():
            if epoch > after or (keep is not None and epoch != keep):
                path.unlink(missing_ok=True)

    def request_resume(self, accept_dataset_changes: bool = False) -> None:
        """What the UI/CLI write before relaunching a run: how it may continue."""
        atomic_write_json(self.file(RESUME_REQUEST_FILE), {"accept_dataset_changes": bool(accept_dataset_changes),
                                                           "requested_at": now_iso()})

    # --- writing (the run's job only) ------------------------------------------------
    def metrics_writer(self, keep_through_epoch: int) -> MetricsWriter:
        return MetricsWriter(self.file(METRICS_FILE), keep_through_epoch)

    def run_info(self) -> RunInfo:
        """run.json, typed and forgiving (core/run_info.py): what readers use."""
        return RunInfo.read(self.info())

    def update_info(self, **fields: Any) -> dict[str, Any]:
        """Merge fields of the RunInfo schema (values or its dataclasses) into run.json, stamped with the schema's
        version; returns the whole info. The job's, only."""
        unknown = set(fields) - set(run_info_fields())
        if unknown:
            raise ValueError(f"run.json has no field {', '.join(sorted(unknown))} (core/run_info.py)")
        info = self.info()
        info.update({key: as_dict(value) for key, value in fields.items()}, version=RUN_INFO_VERSION)
        atomic_write_json(self.file(INFO_FILE), info)
        return info

    def write_classes(self, classes: list[str]) -> None:
        atomic_write_json(self.file(CLASSES_FILE), classes)

    def write_split(self, split: dict[str, Any]) -> None:
        atomic_write_json(self.file(SPLIT_FILE), split)

    def write_evaluation(self, evaluation: dict[str, Any]) -> None:
        atomic_write_json(self.file(EVALUATION_FILE), {**evaluation, "evaluated_at": now_iso()})

    def clear_stale_temp_files(self) -> None:
        """Besides the job files' temp files: partial model and checkpoint files of a process killed mid-save."""
        super().clear_stale_temp_files()
        for pattern in (f"tmp-{MODEL_FILE}", f"{CHECKPOINT_DIR}/tmp-*", f"{CHECKPOINT_DIR}/.*.tmp"):
            for entry in self.path.glob(pattern):
                entry.unlink(missing_ok=True)

    @staticmethod
    def _write_replacing(destination: Path, write: Callable[[Path], None]) -> None:
        """write(temp path) beside destination, then replace it: readers see the old file or the new, whole."""
        tmp = destination.with_name(f"tmp-{destination.name}")  # keeps the suffix, as Keras and numpy require
        try:
            write(tmp)
            os.replace(tmp, destination)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk: the partial file goes before the error is recorded
            raise

    def save_model(self, model: Any) -> None:
        """The finished model (Keras' .save), replaced atomically."""
        self._write_replacing(self.model_path(), model.save)

    def save_checkpoint(self, write: Callable[[Path], None], epochs_done: int,
                        best: tuple[int, float] | None = None) -> None:
        """The checkpoint (write(path) writes its contents: ml/checkpoints.save), replaced atomically, then the epoch
        it holds and the best epoch so far (epoch, val_accuracy; its weights are in best_weights_path(epoch)), so a
        resumed run still knows it."""
        folder = self.file(CHECKPOINT_DIR)
        folder.mkdir(exist_ok=True)
        self._write_replacing(folder / CHECKPOINT_FILE, write)
        state: dict[str, Any] = {"epochs_done": epochs_done, "file": CHECKPOINT_FILE, "saved_at": now_iso()}
        if best is not None:
            state.update(best_epoch=int(best[0]), best_val_accuracy=float(best[1]))
        atomic_write_json(folder / "state.json", state)
        (folder / LEGACY_CHECKPOINT_FILE).unlink(missing_ok=True)  # a resumed older run's: superseded
        if best is not None:  # older bests are no longer needed once the checkpoint names this one
            self.discard_best(after=epochs_done, keep=int(best[0]))

    def save_best(self, write: Callable[[Path], None], epoch: int) -> None:
        """The whole model's weights after `epoch` (the best so far; write(path) writes them), replaced atomically."""
        self.file(CHECKPOINT_DIR).mkdir(exist_ok=True)
        self._write_replacing(self.file(CHECKPOINT_DIR) / BEST_WEIGHTS.format(epoch=epoch), write)


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
        self.backend: str = data.get("backend") if data.get("backend") in BACKEND_NAMES else "local"
        self.runs_root = self.path.parent.parent

    def runs(self) -> list[Run]:
        return [Run(self.runs_root / run_id) for run_id in self.run_ids]

    def feeder_state(self) -> JobState:
        return derive_state(self)

    def workers(self) -> list["Worker"]:
        """The sweep's warm workers, oldest first (each a job record of its own)."""
        folder = self.file(WORKERS_DIR)
        if not folder.is_dir():
            return []
        return [Worker(folder / name) for name in sorted(os.listdir(folder))
                if (folder / name / WORKER_FILE).is_file()]

    def create_worker(self) -> "Worker":
        """A new worker record (queued; its backend launches it)."""
        path = make_record_dir(self.file(WORKERS_DIR))
        atomic_write_json(path / WORKER_FILE, {"sweep": self.id, "created_at": now_iso()})
        worker = Worker(path)
        worker.write_status(Status.QUEUED, created_at=now_iso())
        return worker


class Worker(JobRecord):
    """A sweep's warm worker (runs/.sweeps/<sweep>/workers/<id>): a long-lived job that runs the sweep's runs one
    after another in one process. Its own record holds its status, heartbeat, launch and log; each run it hosts
    keeps its own record, as if it had a process of its own."""

    MARKER = WORKER_FILE

    def sweep(self) -> Sweep:
        """The sweep it works for (LookupError when unreadable)."""
        return Sweep(self.path.parent.parent)

    def state(self) -> JobState:
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


def _unique_match(kind: str, ref: str, records: list[Any], names_of: Any) -> Any:
    exact = [r for r in records if r.id == ref]
    matches = exact or [r for r in records if r.id.startswith(ref)] or [r for r in records if ref in names_of(r)]
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
        """A new run folder (id made here, never from the display name) with its config and status queued.

        When it cannot be made (a full disk), the half-made folder is removed and an OSError of the same errno says
        where and why."""
        path: Path | None = None
        try:
            path = make_record_dir(self.root)
            run = Run(path)
            atomic_write_text(run.file(CONFIG_FILE), config.to_json())
            run.write_status(Status.QUEUED, created_at=now_iso())
        except OSError as error:
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
            raise OSError(error.errno, f"could not create a run in {self.root}: {error.strerror or error}") from error
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
        """A run by id, unique id prefix, or exact name (the user's rename or the config's)."""
        return _unique_match("run", ref, self.list_runs(),
                             lambda run: (run.annotations().get("name"), run.config_dict().get("name")))

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
        return _unique_match("sweep", ref, self.list_sweeps(), lambda sweep: (sweep.config.name,))

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
