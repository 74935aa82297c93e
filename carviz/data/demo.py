"""The demo dataset: four kinds of drawn vehicles on varied backgrounds, generated offline in a second or two."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

DEMO_CLASSES = ("sedan", "suv", "bus", "sports car")



def demo_class_names(classes: int = len(DEMO_CLASSES)) -> list[str]:
    """The first `classes` names: the four kinds, then "sedan 2", "suv 2", … (the kinds again, for size tests)."""
    return [DEMO_CLASSES[i % 4] + (f" {i // 4 + 1}" if i >= 4 else "") for i in range(classes)]


def generate_demo_dataset(root: str | Path, per_class: int = 60, image_size: int = 96, seed: int = 0,
                          classes: int = len(DEMO_CLASSES)) -> Path:
    """Draw side views of sedans, SUVs, buses and sports cars as root/<class>/<class>_<i:03d>.jpg.

    Deterministic per (seed, class, i); existing files are left alone, so calling it again only fills gaps.
    More than four classes repeat the kinds under new names with their own images (benchmarks at the seed study's
    196 classes); such classes are not meant to be told apart.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for class_index, name in enumerate(demo_class_names(classes)):
        class_dir = root / name
        class_dir.mkdir(exist_ok=True)
        for i in range(per_class):
            target = class_dir / f"{name}_{i:03d}.jpg"
            if target.exists():
                continue
            rng = np.random.default_rng([seed & 0xFFFFFFFF, class_index, i])
            image = _draw_scene(DEMO_CLASSES[class_index % 4], image_size, rng)
            tmp = class_dir / f".{target.name}.{os.getpid()}.tmp"  # hidden, so a crash never leaves a half image
            image.save(tmp, "JPEG", quality=90)
            os.replace(tmp, target)
    return root


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))  # type: ignore[return-value]


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(float(rng.random()), float(rng.uniform(*sat)), float(rng.uniform(*val)))
    return int(r * 255), int(g * 255), int(b * 255)


def _background(size: int, rng: np.random.Generator) -> tuple[Image.Image, float]:
    """Sky (solid, gradient or noisy) over a road band; returns the image and the ground line (fraction of height)."""
    # pale skies and grey roads, so the saturated vehicle stands out as it would in a product photo
    top, bottom = (np.array(_hsv(rng, (0.0, 0.35), (0.7, 1.0)), float) for _ in range(2))
    style = rng.integers(3)
    if style == 0:
        sky = np.broadcast_to(top, (size, size, 3)).copy()
    else:
        t = np.linspace(0, 1, size)[:, None, None]
        sky = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()
    if style == 2:
        sky += rng.normal(0, 10, (size, size, 3))
    ground = float(rng.uniform(0.68, 0.88))
    g = int(ground * size)
    road = rng.uniform(70, 130) + rng.normal(0, 5, 3)
    sky[g:] = road + rng.normal(0, 8, (size - g, size, 3))
    image = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.6:  # lane markings
        y = g + (size - g) * 0.6
        dash = size / 10
        x = -rng.uniform(0, 2 * dash)
        while x < size:
            draw.rectangle([x, y, x + dash, y + max(1, size / 80)], fill=(230, 230, 220))
            x += 2 * dash
    return image, ground


# Side-view bodies in vehicle units: x along the length (0..1), y up from the ground, in lengths.
# Each: (body polygon, window polygons, wheel xs, wheel radius, length range as a fraction of the image).
def _shape(kind: str, rng: np.random.Generator) -> tuple[list, list, list[float], float, tuple[float, float]]:
    def j(value: float, spread: float = 0.015) -> float:  # small per-image variation
        return value + float(rng.uniform(-spread, spread))

    if kind == "sedan":
        hood, roof = j(0.26), j(0.40)
        body = [(0, 0.07), (0, j(0.22)), (0.22, hood), (0.34, roof), (0.64, roof), (0.80, hood), (1, j(0.24)),
                (1, 0.07)]
        windows = [[(0.26, hood + 0.01), (0.36, roof - 0.025), (0.48, roof - 0.025), (0.48, hood + 0.01)],
                   [(0.51, hood + 0.01), (0.51, roof - 0.025), (0.62, roof - 0.025), (0.75, hood + 0.01)]]
        return body, windows, [0.2, 0.8], 0.085, (0.86, 0.97)
    if kind == "suv":
        hood, roof = j(0.36), j(0.58)
        body = [(0, 0.10), (0, hood), (0.18, hood + 0.02), (0.27, roof), (0.97, roof), (1, roof - 0.04), (1, 0.10)]
        windows = [[(0.23, hood + 0.05), (0.30, roof - 0.04), (0.52, roof - 0.04), (0.52, hood + 0.05)],
                   [(0.55, hood + 0.05), (0.55, roof - 0.04), (0.94, roof - 0.04), (0.94, hood + 0.05)]]
        return body, windows, [0.19, 0.81], 0.11, (0.80, 0.92)
    if kind == "bus":
        top = j(0.47, 0.02)
        body = [(0, 0.06), (0, top - 0.02), (0.02, top), (1, top), (1, 0.06)]
        n = int(rng.integers(5, 8))
        width = 0.86 / n
        windows = [[(0.07 + k * width, top - 0.20), (0.07 + k * width, top - 0.04),
                    (0.07 + (k + 0.8) * width, top - 0.04), (0.07 + (k + 0.8) * width, top - 0.20)] for k in range(n)]
        windows.append([(0.005, top - 0.045), (0.005, 0.16), (0.045, 0.16), (0.045, top - 0.045)])  # door
        wheels = [0.14, 0.78] if rng.random() < 0.5 else [0.14, 0.72, 0.86]
        return body, windows, wheels, 0.06, (0.92, 0.98)
    # sports car: long low wedge, small bubble cabin, big wheels
    hood, roof = j(0.15, 0.01), j(0.24, 0.01)
    body = [(0, 0.05), (0, 0.10), (0.30, hood), (0.44, roof), (0.64, roof), (0.86, j(0.18, 0.01)),
            (1, 0.17), (1, 0.05)]
    windows = [[(0.36, hood + 0.01), (0.46, roof - 0.02), (0.62, roof - 0.02), (0.74, hood + 0.01)]]
    return body, windows, [0.19, 0.80], 0.08, (0.88, 0.98)


def _draw_scene(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    scale = 2  # draw large, then downsample: cheap anti-aliasing
    big = size * scale
    image, ground = _background(big, rng)
    draw = ImageDraw.Draw(image)
    body, windows, wheels, radius, (lo, hi) = _shape(kind, rng)

    length = big * float(rng.uniform(lo, hi))
    x0 = float(rng.uniform(0.01 * big, big * 0.99 - length))
    y_ground = ground * big + float(rng.uniform(-0.02, 0.04)) * big

    def pt(x: float, y: float) -> tuple[float, float]:
        return x0 + x * length, y_ground - y * length

    colour = _hsv(rng, (0.5, 1.0), (0.45, 0.95))
    outline = tuple(c // 3 for c in colour)
    line = max(1, big // 48)
    (sx0, sy), (sx1, _) = pt(-0.02, 0.0), pt(1.02, 0.0)
    draw.ellipse([sx0, sy - big * 0.012, sx1, sy + big * 0.012], fill=(40, 40, 40))
    draw.polygon([pt(*p) for p in body], fill=colour, outline=outline, width=line)
    # one typical detail per class, so small from-scratch networks find local cues as well as the silhouette
    if kind == "sedan":  # chrome trim along the doors
        draw.line([pt(0.04, 0.17), pt(0.96, 0.17)], fill=(225, 225, 230), width=line)
    elif kind == "suv":  # black cladding along the sills and roof rails
        draw.rectangle([*pt(0.0, 0.16), *pt(1.0, 0.10)], fill=(35, 35, 35))
        for rail_x in (0.35, 0.85):
            draw.rectangle([*pt(rail_x - 0.01, body[4][1] + 0.05), *pt(rail_x + 0.01, body[4][1])], fill=(35, 35, 35))
        draw.line([pt(0.3, body[4][1] + 0.04), pt(0.9, body[4][1] + 0.04)], fill=(35, 35, 35), width=line)
    elif kind == "bus":  # destination board above the windscreen
        draw.rectangle([*pt(0.0, body[3][1] - 0.01), *pt(0.3, body[3][1] - 0.035)], fill=(250, 170, 20))
    else:  # racing stripes
        stripe = (250, 250, 250) if sum(colour) < 450 else (20, 20, 20)
        for y in (0.085, 0.115):
            draw.line([pt(0.02, y), pt(0.98, y)], fill=stripe, width=line)
        draw.rectangle([*pt(0.0, 0.17), *pt(0.08, 0.145)], fill=outline)  # rear spoiler
    glass = _colour(rng, 25, 80) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(150, 215, 3))
    for window in windows:
        draw.polygon([pt(*p) for p in window], fill=glass)
    # head and tail lights
    hx, hy = pt(0.985, 0.14 if kind != "sports car" else 0.12)
    draw.ellipse([hx - big * 0.012, hy - big * 0.01, hx + big * 0.006, hy + big * 0.01], fill=(255, 240, 170))
    tx, ty = pt(0.0, 0.14 if kind != "sports car" else 0.09)
    draw.rectangle([tx, ty - big * 0.008, tx + big * 0.012, ty + big * 0.008], fill=(200, 20, 20))
    r = radius * length
    tyre, rim = _colour(rng, 10, 45), _colour(rng, 150, 230)
    for wx in wheels:
        cx, cy = pt(wx, radius)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tyre)
        draw.ellipse([cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5], fill=rim)

    image = image.resize((size, size), Image.Resampling.LANCZOS)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.6))))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    return image
