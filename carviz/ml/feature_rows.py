"""How cached features reach training: held in process memory when they fit, else read in shuffled contiguous blocks.

Why not simply train from the memory-mapped file: its pages are page cache, which the kernel may drop between two
reads of a row an epoch apart (some machines, this project's VMs among them, page out file pages unused for about a
minute), and then an epoch re-reads the cut from disk in random row order. Rows copied into the process's own
memory stay there. A cut too large for memory is read block by block (contiguous rows, blocks in shuffled order,
rows shuffled within a buffer of blocks), so an epoch costs one sequential pass over the file at worst, never
random reads that thrash.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RAM_SHARE = 0.5  # of the memory available when the run starts
RAM_ENV = "CARVIZ_FEATURE_RAM_BYTES"  # overrides the budget (tests force the block reader with a small one)
BLOCK_BYTES = 8 * 2**20  # rows read together from the file
BUFFER_BYTES = 256 * 2**20  # rows shuffled together


def ram_budget() -> int:
    """Bytes of features a run may hold in memory: CARVIZ_FEATURE_RAM_BYTES, else half the memory available to this
    process: the machine's, or less where its memory cgroup (a container, a cluster worker) allows less."""
    override = os.environ.get(RAM_ENV, "").strip()
    if override:
        return max(0, int(float(override)))
    import psutil

    available = psutil.virtual_memory().available
    room = cgroup_memory_room()
    return int((available if room is None else min(available, room)) * RAM_SHARE)


def cgroup_memory_room(proc: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process's memory cgroup still allows: its limit less what it uses beyond reclaimable page cache
    (inactive files); None without a limit (or where it cannot be read). cgroup v2 and v1."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: memory.max, memory.current, memory.stat's inactive_file
            found = _read_cgroup(mount, path, "memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            found = _read_cgroup(mount / "memory", path, "memory.limit_in_bytes", "memory.usage_in_bytes",
                                 "total_inactive_file")
        else:
            continue
        if found is not None:
            return found
    return None


def _read_cgroup(mount: Path, path: str, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    """limit - (usage - inactive files) of the cgroup at path under mount (a container sees its own cgroup at the
    mount's root, under a path it is not told: the path is tried whole, then without its leading parts)."""
    parts = [p for p in path.split("/") if p]
    for start in range(len(parts) + 1):
        folder = mount.joinpath(*parts[start:])
        try:
            limit_text = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text())
            stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines() if " " in line)
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 2**60:  # no limit
            return None
        return max(0, int(limit_text) - usage + int(stat.get(inactive_key, 0)))
    return None


def hold(features: np.ndarray, budget: int | None = None) -> tuple[np.ndarray, bool]:
    """(the features in process memory, True) when they fit the budget, else (the features as given, False)."""
    if not isinstance(features, np.memmap):
        return features, True  # in memory already
    if features.nbytes <= (ram_budget() if budget is None else budget):
        return np.array(features), True  # one sequential read of the file
    return features, False


def blocks_of(rows: Sequence[int], labels: Sequence[int], row_bytes: int,
              block_bytes: int = BLOCK_BYTES) -> list[tuple[np.ndarray, np.ndarray]]:
    """The rows (with their labels) sorted and cut into blocks of about block_bytes of the file each."""
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    sorted_rows = np.asarray(rows, dtype=np.int64)[order]
    sorted_labels = np.asarray(labels, dtype=np.int64)[order]
    per_block = max(1, block_bytes // max(1, row_bytes))
    return [(sorted_rows[i:i + per_block], sorted_labels[i:i + per_block])
            for i in range(0, len(sorted_rows), per_block)]


def block_order_batches(features: np.ndarray, blocks: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int,
                        rng: np.random.Generator | None, buffer_blocks: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (feature rows, labels) batches: blocks in rng's order (in file order without rng), each read as
    one contiguous slice, rows shuffled within buffers of buffer_blocks blocks; only the epoch's last batch is short.
    The next buffer is read in a thread while this one's batches are consumed, so reading overlaps training."""
    order = rng.permutation(len(blocks)) if rng is not None else np.arange(len(blocks))
    groups = [order[start:start + buffer_blocks] for start in range(0, len(order), buffer_blocks)]
    carry_x: list[np.ndarray] = []
    carry_y: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="carviz-block-reader") as reader:
        pending = reader.submit(_read_blocks, features, blocks, groups[0]) if groups else None
        for number in range(len(groups)):
            xs, ys = pending.result()  # type: ignore[union-attr]
            if number + 1 < len(groups):
                pending = reader.submit(_read_blocks, features, blocks, groups[number + 1])
            x, y = np.concatenate(carry_x + xs), np.concatenate(carry_y + ys)
            if rng is not None:  # only this thread draws from rng: the order stays the seed's
                shuffle = rng.permutation(len(x))
                x, y = x[shuffle], y[shuffle]
            full = len(x) // batch_size * batch_size
            for i in range(0, full, batch_size):
                yield x[i:i + batch_size], y[i:i + batch_size]
            carry_x, carry_y = [x[full:]], [y[full:]]
    if carry_x and len(carry_x[0]):
        yield carry_x[0], carry_y[0]


def _read_blocks(features: np.ndarray, blocks: Sequence[tuple[np.ndarray, np.ndarray]],
                 indices: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The rows and labels of the given blocks, each block read as one contiguous slice of the file."""
    xs, ys = [], []
    for index in indices:
        rows, labels = blocks[index]
        first = int(rows[0])
        chunk = np.asarray(features[first:int(rows[-1]) + 1])  # contiguous: read ahead, never seek per row
        xs.append(chunk[rows - first])
        ys.append(labels)
    return xs, ys


def block_pipeline(features: np.ndarray, rows: Sequence[int], labels: Sequence[int], num_classes: int,
                   batch_size: int, training: bool, seed: int, dtype: Any = "float32") -> "Any":
    """A tf.data pipeline of one-hot batches read block by block (block_order_batches); training epochs shuffle
    afresh (seeded by seed and the epoch), evaluation reads in file order."""
    import tensorflow as tf

    row_shape = tuple(int(d) for d in features.shape[1:])
    row_bytes = int(np.prod(row_shape)) * features.dtype.itemsize
    blocks = blocks_of(rows, labels, row_bytes)
    buffer_blocks = max(1, BUFFER_BYTES // BLOCK_BYTES)
    tf_dtype = tf.as_dtype(dtype)
    epochs = iter(range(2**62))

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, next(epochs)]) if training else None
        for x, y in block_order_batches(features, blocks, batch_size, rng, buffer_blocks):
            yield x.astype(tf_dtype.as_numpy_dtype, copy=False), y

    signature = (tf.TensorSpec((None, *row_shape), tf_dtype), tf.TensorSpec((None,), tf.int64))
    steps = -(-len(rows) // batch_size)
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes, dtype=tf.float32)))
    from carviz.ml.pipelines import steady

    return steady(ds.prefetch(2))
