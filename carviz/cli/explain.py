"""Command group: explaining a run's predictions — gradcam, a Grad-CAM overlay of one image written as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from carviz.core.store import Store
from carviz.views.formatting import format_accuracy


def opacity_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"opacity must be a number in 0..1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"opacity must lie in 0..1, got {text}")
    return value


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    gradcam = sub.add_parser("gradcam", help="where a run's model looks in an image: a Grad-CAM heatmap over it, "
                                             "written as a PNG")
    gradcam.add_argument("run")
    gradcam.add_argument("file", metavar="FILE", type=Path)
    gradcam.add_argument("--out", type=Path, required=True, metavar="PNG", help="the overlay image to write")
    gradcam.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                         help="the class to explain (default: the most likely one)")
    gradcam.add_argument("--opacity", type=opacity_arg, default=0.5,
                         help="heatmap opacity over the image, 0 (image only) to 1 (heatmap only); default 0.5")
    return {"gradcam": cmd_gradcam}


def cmd_gradcam(args: argparse.Namespace) -> int:
    from carviz.ml.gradcam import class_index, gradcam_images, overlay, pixels_like_training
    from carviz.ml.predict import load_model

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {str(out)!r}")
    run = Store().find_run(args.run)
    predictor = load_model(run)
    wanted = class_index(predictor, args.class_name) if args.class_name is not None else None
    pixels = pixels_like_training(Path(args.file).read_bytes(), str(args.file))
    result = gradcam_images(predictor, [pixels], None if wanted is None else [wanted])
    probabilities = result.probabilities[0]
    top, explained = int(result.top_indices()[0]), int(result.class_indices[0])
    picture = overlay(pixels, result.heatmaps[0], args.opacity)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, format="PNG")
    classes = predictor.classes
    print(f"top class: {classes[top]} ({format_accuracy(float(probabilities[top]))})")
    print(f"explained: {classes[explained]} ({format_accuracy(float(probabilities[explained]))})")
    height, width = result.map_size
    print(f"layer: {result.layer} (backbone, {height}x{width} feature map)")
    if not result.heatmaps[0].any():
        print(f"note: no part of the image raises the score of {classes[explained]}: the heatmap is empty")
    print(f"wrote {out}")
    return 0
