"""Session-state keys that more than one page reads or writes, defined once."""

TRAIN_FORM = "train_form_values"  # the Train form's values: survive page switches (widget state does not)
TRAIN_PREFILL = "train_prefill"  # the Layers page's backbone, image size and freeze point, for Train and Sweeps
SWEEP_LR_PREFILL = "sweep_lr_prefill"  # the LR test's "Use this learning rate", for the Sweeps form
PREDICT_RUN = "predict_run"  # the run the Predict page shows (the Runs and Sweeps pages open it)
DEFAULT_TRAIN_PRESET = "demo quick"  # the Train form's values before any visit
