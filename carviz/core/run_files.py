"""The names of the files and folders in a run's record and under runs/ (the store and its checks use them)."""

# A run folder (besides the job files of record.py):
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
INFO_FILE = "run.json"
EVALUATION_FILE = "evaluation.json"
CALIBRATION_FILE = "calibration.json"  # the temperature fitted on validation (core/calibration.py), when there is one
CLASSES_FILE = "classes.json"
SPLIT_FILE = "split.json"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoint"  # for resuming: the last checkpoint, its state.json, and the best epoch's weights
CHECKPOINT_FILE = "last.npz"  # in CHECKPOINT_DIR: the whole model's weights and optimizer state (ml/checkpoints.py)
BEST_WEIGHTS = "best-{epoch:04d}.weights.npz"  # in CHECKPOINT_DIR: the whole model's weights at the best epoch so far
LEGACY_CHECKPOINT_FILE = "last.keras"  # what runs checkpointed before the .npz form wrote (still resumable)
LEGACY_BEST_WEIGHTS = "best-{epoch:04d}.weights.h5"
TENSORBOARD_DIR = "tensorboard"
SWEEP_CONTEXT_FILE = "sweep_context.json"  # what a sweep's run needs to know of its sweep (pruning, peers)
RESUME_REQUEST_FILE = "resume_request.json"  # how the user asked to resume (written by the UI/CLI, read by the job)
ANNOTATIONS_FILE = "annotations.json"  # the user's: display name, tags, note, archived (never read by the job)
EXPORTS_DIR = "exports"  # exports/<format>/: a SavedModel or .tflite of model.keras, made on request
EXPORT_CHECK_FILE = "check.json"  # beside each export: its agreement with the Keras model
# Under runs/:
SWEEPS_DIR = ".sweeps"
TRASH_DIR = ".trash"  # deleted runs, restorable until the trash is emptied
TRASH_INFO_FILE = "trashed.json"
SWEEP_FILE = "sweep.json"
WORKERS_DIR = "workers"  # in a sweep's folder: one record per warm worker (workers/<id>/worker.json)
WORKER_FILE = "worker.json"
LR_TESTS_DIR = ".lr_range"
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
