"""Cached features on their way to training: held in memory when they fit; else read in shuffled contiguous blocks,
every training row once per epoch, a new order each epoch, and a run that trains from such a cut."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from carviz.core import store as runs
from carviz.core.config import TrainConfig
from carviz.data import datasets
from carviz.ml import feature_rows, train


class CountingRows:
    """A 2-D array that records every slice read from it (what a memory-mapped file would read)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape = values.shape
        self.dtype = values.dtype
        self.reads: list[tuple[int, int]] = []

    def __getitem__(self, index: slice) -> np.ndarray:
        assert isinstance(index, slice) and index.step is None, "only contiguous slices may be read"
        self.reads.append((index.start, index.stop))
        return self.values[index]


def _epoch(source: CountingRows, rows: list[int], labels: list[int], seed: int | None,
           batch: int = 8) -> tuple[list[int], list[int], list[int]]:
    blocks = feature_rows.blocks_of(rows, labels, row_bytes=source.values[0].nbytes, block_bytes=5 * 4 * 3)
    rng = np.random.default_rng(seed) if seed is not None else None
    seen, seen_labels, sizes = [], [], []
    for x, y in feature_rows.block_order_batches(source, blocks, batch, rng, buffer_blocks=2):
        seen += [int(v) for v in x[:, 0]]
        seen_labels += [int(v) for v in y]
        sizes.append(len(x))
    return seen, seen_labels, sizes


def test_block_reader_gives_every_row_once_per_epoch_in_a_new_order() -> None:
    values = np.repeat(np.arange(100, dtype=np.float32)[:, None], 3, axis=1)  # row r holds r
    rows = [r for r in range(100) if r % 3]  # a split's rows: spread over the file
    labels = [r % 7 for r in rows]
    source = CountingRows(values)
    first, first_labels, sizes = _epoch(source, rows, labels, seed=1)
    assert sorted(first) == rows and first_labels == [r % 7 for r in first]  # each row once, with its label
    assert sizes[:-1] == [8] * (len(sizes) - 1) and sizes[-1] == len(rows) - 8 * (len(sizes) - 1)
    assert first != sorted(first)  # shuffled
    second, _, _ = _epoch(source, rows, labels, seed=2)
    assert sorted(second) == rows and second != first  # a new order each epoch
    assert all(stop - start <= 5 * 2 for start, stop in source.reads)  # blocks of 5 rows: short contiguous reads
    ordered, _, _ = _epoch(source, rows, labels, seed=None)
    assert ordered == rows  # evaluation: file order


def test_the_next_buffer_is_read_while_this_ones_batches_are_consumed() -> None:
    values = np.repeat(np.arange(40, dtype=np.float32)[:, None], 3, axis=1)
    source = CountingRows(values)
    blocks = feature_rows.blocks_of(list(range(40)), [0] * 40, row_bytes=values[0].nbytes, block_bytes=5 * 4 * 3)
    batches = feature_rows.block_order_batches(source, blocks, 5, None, buffer_blocks=2)  # 4 buffers of 10 rows
    next(batches)  # the first buffer's first batch: the second buffer is being read meanwhile
    deadline = time.monotonic() + 10
    while len(source.reads) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(source.reads) == [(0, 5), (5, 10), (10, 15), (15, 20)]  # one buffer ahead, no further
    assert [int(x[0, 0]) for x, _ in batches] == [5, 10, 15, 20, 25, 30, 35]  # the rest, in file order
    batches.close()


def test_memory_mapped_features_are_held_in_memory_when_they_fit(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.arange(24, dtype=np.float32).reshape(4, 6))
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    held, in_memory = feature_rows.hold(mapped, budget=1024)
    assert in_memory and not isinstance(held, np.memmap) and np.array_equal(held, mapped)
    same, in_memory = feature_rows.hold(mapped, budget=10)
    assert not in_memory and same is mapped


TINY = TrainConfig(dataset="demo", backbone="mobilenet", alpha=0.25, weights="none", image_size=32, epochs=2,
                   batch_size=8, learning_rate=1e-3, freeze=71, precision="float32")


@pytest.mark.parametrize("budget", ["0", ""])
def test_a_run_trains_from_a_cut_larger_than_its_memory_budget(carviz_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                               budget: str) -> None:
    datasets.generate_demo_dataset(carviz_home / "data" / "demo", per_class=8, image_size=32)
    monkeypatch.setenv(feature_rows.RAM_ENV, budget)
    run = runs.create_run(TINY)
    assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
    info = run.info()["feature_cache"]
    assert info["used"] and info["read"].startswith("in memory" if budget == "" else "from disk in shuffled blocks")
    metrics = run.metrics()
    assert len(metrics) == 2 and all(np.isfinite(row["val_accuracy"]) for row in metrics)
    assert run.evaluation()["images"] == run.info()["val_images"]


def test_the_train_form_says_when_a_cut_will_not_fit_the_cache_or_memory() -> None:
    from carviz.ml.backbones import list_layers
    from carviz.core.feature_cache import CacheSettings
    from carviz.views.cache_report import cut_fit_warning, cut_size

    layers = list_layers("mobilenet", 224, 1.0)
    config = TrainConfig(dataset="big", backbone="mobilenet", weights="imagenet", image_size=224, freeze=73)
    layer, needed = cut_size(config, layers, 8132, 6000, "float32")
    from carviz.ml import features
    from carviz.ml.model import build_model

    model, _ = build_model(config.replace(weights="none"), 4)
    assert layer == features.position_name(model, features.cache_position(model, 73))  # what training caches
    assert needed == 8132 * 14 * 14 * 512 * 4  # the study's 8,132 photos: 3.2 GB
    assert cut_size(config, layers, 8132, 6000, "float16")[1] == needed // 2
    roomy = CacheSettings(max_gb=10)
    assert cut_fit_warning(config, layers, 8132, 6000, roomy, memory_budget=8 * 2**30) is None
    too_small = cut_fit_warning(config, layers, 8132, 6000, CacheSettings(max_gb=2), memory_budget=8 * 2**30)
    assert "3 GiB" in too_small and "cache limit (2 GiB)" in too_small and "train on images" in too_small
    no_room = cut_fit_warning(config, layers, 8132, 6000, roomy, memory_budget=2**30)
    assert "free memory (1 GiB)" in no_room and "shuffled blocks" in no_room
    pooled = cut_size(config.replace(freeze="all"), layers, 8132, 6000, "float32")
    assert pooled == ("head_pool", 8132 * 1024 * 4)
    assert cut_size(config.replace(feature_cache=False), layers, 8132, 6000, "float32") is None


def _cgroup(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_the_memory_budget_respects_a_memory_cgroup_v1_and_v2(tmp_path: Path) -> None:
    # v2, seen from inside a container: /proc says /job/a, the mount shows the cgroup at its root.
    proc = tmp_path / "proc-v2"
    proc.write_text("0::/job/a\n")
    _cgroup(tmp_path / "v2", {"memory.max": "4294967296\n", "memory.current": "3221225472\n",
                              "memory.stat": "anon 1073741824\ninactive_file 1073741824\n"})
    assert feature_rows.cgroup_memory_room(proc, tmp_path / "v2") == 2 * 2**30  # 4 GiB - (3 - 1 reclaimable)
    (tmp_path / "v2" / "memory.max").write_text("max\n")
    assert feature_rows.cgroup_memory_room(proc, tmp_path / "v2") is None
    # v1, at its full path under the memory hierarchy.
    proc = tmp_path / "proc-v1"
    proc.write_text("5:cpu,cpuacct:/\n4:memory:/ray/worker\n0::/\n")
    _cgroup(tmp_path / "v1" / "memory" / "ray" / "worker",
            {"memory.limit_in_bytes": str(2**30), "memory.usage_in_bytes": str(2**29),
             "memory.stat": "cache 1\ntotal_inactive_file 0\n"})
    assert feature_rows.cgroup_memory_room(proc, tmp_path / "v1") == 2**29
    (tmp_path / "v1" / "memory" / "ray" / "worker" / "memory.limit_in_bytes").write_text("9223372036854771712")
    assert feature_rows.cgroup_memory_room(proc, tmp_path / "v1") is None
    assert feature_rows.cgroup_memory_room(tmp_path / "no-such-file") is None
