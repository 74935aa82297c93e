"""carviz: an experiment dashboard for transfer-learning image classifiers (the core, no UI)."""

__version__ = "0.1.0"
