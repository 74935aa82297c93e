"""Grad-CAM: a tiny model trained on where a red patch sits looks at that patch; heatmaps, overlays and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carviz.cli import main
from carviz.ml.gradcam import colorize, explainer, gradcam, gradcam_images, overlay, target_layer
from carviz.ml.predict import Predictor

pytestmark = pytest.mark.slow  # trains a tiny model (about 15 s on two CPU cores)

SIZE, PATCH, CLASSES = 64, 16, ["top left", "top right", "bottom left", "bottom right"]


def patch_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Noisy dark images, each with a red patch in the quadrant of its class and a blue patch (as bright, and
    meaningless) in another quadrant: (images, labels, top-left corner of each red patch)."""
    images = rng.integers(0, 60, (count, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 4, count)
    half = SIZE // 2

    def corner(quadrant: int) -> tuple[int, int]:
        return (quadrant // 2) * half + int(rng.integers(0, half - PATCH + 1)), \
            (quadrant % 2) * half + int(rng.integers(0, half - PATCH + 1))

    corners = []
    for index, label in enumerate(labels):
        row, col = corner(int(label))
        images[index, row:row + PATCH, col:col + PATCH] = (230, 40, 40)
        corners.append((row, col))
        row, col = corner(int((label + rng.integers(1, 4)) % 4))
        images[index, row:row + PATCH, col:col + PATCH] = (40, 40, 230)
    return images, labels, corners


@pytest.fixture(scope="module")
def quadrants() -> tuple[Predictor, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """A small_cnn with the seed head trained in-process on patch images (64 px), and held-out images.

    The seed head (convolutions, then Flatten) can learn where the patch is from the patch itself; a global average
    pooling head can only tell positions apart by the zero padding at the borders, and its Grad-CAM (truthfully)
    points there."""
    import keras

    from carviz.core.config import TrainConfig
    from carviz.ml.model import build_model

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(1)
    images, labels, _ = patch_images(160, rng)
    model, _ = build_model(TrainConfig(backbone="small_cnn", weights="none", image_size=SIZE, head="seed",
                                       precision="float32", learning_rate=1e-3, freeze=1), len(CLASSES))
    model.fit(images, keras.utils.to_categorical(labels, len(CLASSES)), epochs=6, batch_size=32, verbose=0)
    held_out, held_labels, corners = patch_images(40, rng)
    return Predictor(model=model, classes=CLASSES, image_size=SIZE), held_out, held_labels, corners


def test_gradcam_finds_what_matters(quadrants) -> None:
    predictor, images, labels, corners = quadrants
    result = gradcam(predictor, images)
    assert (result.top_indices() == labels).mean() >= 0.9  # the model learnt the task: its evidence is the red patch
    on_patch = [row <= peak[0] < row + PATCH and col <= peak[1] < col + PATCH
                for heatmap, (row, col) in zip(result.heatmaps, corners)
                for peak in [np.unravel_index(heatmap.argmax(), heatmap.shape)]]
    assert np.mean(on_patch) >= 0.7, f"the heatmap peaks on the red patch in {np.mean(on_patch):.0%} of images"
    assert list(result.class_indices) == list(result.top_indices())  # no class given: the top class is explained


def test_heatmaps_shape_range_layer_and_probabilities(quadrants) -> None:
    predictor, images, labels, _ = quadrants
    result = gradcam(predictor, images[:5], class_indices=[3, 2, 1, 0, 3], batch_size=2)
    assert result.heatmaps.shape == (5, SIZE, SIZE) and result.heatmaps.dtype == np.float32
    assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1
    assert all(heatmap.max() in (0.0, 1.0) for heatmap in result.heatmaps)  # scaled to a peak of 1 (or empty)
    assert list(result.class_indices) == [3, 2, 1, 0, 3]
    assert result.layer == "block3_conv" and result.map_size == (16, 16)  # the last conv map, not its pooled copy
    assert target_layer(predictor.model) == (6, "block3_conv")  # 1-based, the InputLayer is 1
    np.testing.assert_allclose(result.probabilities, predictor.predict_batch(images[:5]), atol=1e-5)
    assert explainer(predictor.model) is explainer(predictor.model)  # built once per model
    top = gradcam(predictor, images[:5])
    same = [i for i in range(5) if top.class_indices[i] == result.class_indices[i]]
    other = [i for i in range(5) if top.class_indices[i] != result.class_indices[i]]
    np.testing.assert_allclose(top.heatmaps[same], result.heatmaps[same], atol=1e-5)
    assert other and not np.allclose(top.heatmaps[other], result.heatmaps[other])  # another class, another map
    raw = gradcam_images(predictor, [image.astype(np.uint8) for image in images[:2]])  # raw pixels: same preprocessing
    np.testing.assert_allclose(raw.heatmaps, top.heatmaps[:2], atol=1e-5)
    with pytest.raises(ValueError, match="class indices"):
        gradcam(predictor, images[:1], class_indices=[4])


def test_mixed_precision_model_gives_float32_heatmaps() -> None:
    import keras

    from carviz.core.config import TrainConfig
    from carviz.ml.model import build_model

    try:
        model, summary = build_model(TrainConfig(backbone="small_cnn", weights="none", image_size=32, head="seed",
                                                 precision="mixed_float16"), 3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    predictor = Predictor(model=model, classes=["a", "b", "c"], image_size=32)
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    result = gradcam(predictor, images, class_indices=[0, 1, 2])
    assert summary.precision == "mixed_float16" and explainer(model).to_map.output.dtype == "float16"  # its own dtype
    assert result.heatmaps.dtype == np.float32 and 0 <= result.heatmaps.min() and result.heatmaps.max() <= 1
    np.testing.assert_allclose(result.probabilities, predictor.predict_batch(images), atol=1e-6)


def test_colours_and_overlay() -> None:
    ramp = colorize(np.array([[0.0, 0.5, 1.0]]))
    assert ramp.shape == (1, 3, 3) and ramp.dtype == np.uint8
    assert ramp[0, 0, 2] > ramp[0, 0, 0] and ramp[0, 2, 0] > ramp[0, 2, 2]  # cold is blue, hot is red
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    heatmap = np.zeros((8, 8), dtype=np.float32)
    heatmap[:, 4:] = 1.0  # the right half is hot
    assert np.array_equal(np.asarray(overlay(image, heatmap, 0.0)), np.asarray(image))
    full = np.asarray(overlay(image, heatmap, 1.0))
    assert full.shape == (30, 40, 3)  # stretched to the image
    assert np.array_equal(full[:, 0], np.tile(colorize(np.zeros((1, 1)))[0], (30, 1)))
    assert np.array_equal(full[:, -1], np.tile(colorize(np.ones((1, 1)))[0], (30, 1)))
    half = np.asarray(overlay(np.asarray(image), heatmap, 0.5)).astype(int)
    expected = (np.asarray(image).astype(float) + full) / 2
    assert np.abs(half - expected).max() <= 1
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, heatmap, 1.5)


def test_gradcam_command_writes_the_overlay(tiny_trained, tmp_path, monkeypatch, capsys) -> None:
    home, run_dir = tiny_trained
    monkeypatch.setenv("CARVIZ_HOME", str(home))
    for name in ("CARVIZ_RUNS", "CARVIZ_DATA", "CARVIZ_CACHE"):
        monkeypatch.delenv(name, raising=False)
    image = next((home / "data" / "demo" / "bus").glob("*.jpg"))
    out = tmp_path / "cam" / "bus.png"
    assert main(["gradcam", run_dir.name, str(image), "--out", str(out), "--opacity", "0.4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    classes = ["bus", "sedan", "sports car", "suv"]
    assert lines[0].startswith("top class: ") and lines[0].split(": ")[1].rsplit(" (", 1)[0] in classes
    assert lines[1].split(": ")[1].rsplit(" (", 1)[0] == lines[0].split(": ")[1].rsplit(" (", 1)[0]
    assert lines[2] == "layer: block3_conv (backbone, 8x8 feature map)" and lines[-1] == f"wrote {out}"
    with Image.open(out) as written, Image.open(image) as original:
        assert written.format == "PNG" and written.size == original.size
    assert main(["gradcam", run_dir.name, str(image), "--out", str(out), "--class", "suv"]) == 0
    assert "explained: suv (" in capsys.readouterr().out
    assert main(["gradcam", run_dir.name, str(image), "--out", str(out), "--class", "tram"]) == 2
    assert "no class 'tram'; the run's classes: bus, sedan, sports car, suv" in capsys.readouterr().err
    assert main(["gradcam", run_dir.name, str(image), "--out", str(Path(tmp_path) / "cam.jpg")]) == 2
    assert "--out must name a .png file" in capsys.readouterr().err
