"""Synthetic Pascal-VOC-layout detection folders, for testing a detector on data it was not
tuned on.

:func:`write_voc_folder` writes ``JPEGImages/*.jpg``, ``Annotations/*.xml`` and
``ImageSets/Main/{train,val}.txt``, readable as VOC2007 by :mod:`jaxdet.data.voc`; boxes are
VOC's 1-based inclusive indices of each object's full extent. Styles (:data:`STYLES`,
256 x 256): ``"shapes"`` (1-5 solid shapes, 16-128 px, gradient, JPEG 90), ``"textures"``
(2-8 patterned shapes, 12-110 px, patterned background, JPEG 75), ``"clutter"`` (1-12
shapes, 8 px to half the image, distractors, blur/sharpen, JPEG 35-95). Objects with less
than :data:`MIN_VISIBLE` showing are not annotated. Each image is a function of ``(style,
seed, index)``.

:func:`write_coco_folder` writes the same images as a COCO folder with visible-pixel masks.

Command line: ``python -m jaxdet.data.synthetic_voc --out=DIR --style=shapes
[--num_train=2000 --num_val=200 --seed=0 --format=voc|coco]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils


@dataclasses.dataclass(frozen=True)
class VocStyle:
    """What one synthetic VOC folder looks like (sizes in pixels)."""

    classes: tuple[str, ...]
    objects: tuple[int, int]  # inclusive range of objects per image
    size_range: tuple[float, float]  # object's longer side, pixels (max also <= frac * side)
    max_size_fraction: float  # object's longer side <= this fraction of the shorter image side
    image_sides: tuple[int, int]  # inclusive range of each image side
    background: str  # "gradient" | "pattern"
    fill: str  # "solid" | "pattern"
    distractors: int  # unlabelled lines/blobs per image (upper bound)
    jpeg_quality: tuple[int, int]  # inclusive range


MIN_VISIBLE = 0.3

STYLES: dict[str, VocStyle] = {
    "shapes": VocStyle(("ellipse", "rectangle", "triangle", "cross"), (1, 5), (16, 128), 0.5,
                       (256, 256), "gradient", "solid", 0, (90, 90)),
    "textures": VocStyle(("star", "ring", "diamond", "arrow"), (2, 8), (12, 110), 0.45,
                         (256, 256), "pattern", "pattern", 0, (75, 75)),
    "clutter": VocStyle(("hexagon", "crescent", "cross", "ellipse"), (1, 12), (8, 128), 0.5,
                        (256, 256), "gradient", "solid", 8, (35, 95)),
}


def _polygon(kind: str, cx: float, cy: float, w: float, h: float, angle: float
             ) -> list[tuple[float, float]]:
    """Outline of a polygonal shape of extent ``w x h`` about ``(cx, cy)``, unit shape rotated by
    ``angle`` radians.
    """
    if kind == "triangle":
        pts = [(0.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
    elif kind == "cross":
        a = 0.33
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a),
               (-1, a), (-1, -a), (-a, -a)]
    elif kind == "star":
        pts = [((1.0 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5),
                -(1.0 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
    elif kind == "diamond":
        pts = [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]
    elif kind == "arrow":
        pts = [(-1, -0.3), (0.2, -0.3), (0.2, -0.8), (1, 0), (0.2, 0.8), (0.2, 0.3), (-1, 0.3)]
    elif kind == "hexagon":
        pts = [(math.cos(i * math.pi / 3), math.sin(i * math.pi / 3)) for i in range(6)]
    else:
        raise ValueError(f"no polygon for shape {kind!r}")
    c, s = math.cos(angle), math.sin(angle)
    rot = [(x * c - y * s, x * s + y * c) for x, y in pts]
    return [(cx + x * w / 2, cy + y * h / 2) for x, y in rot]


def _shape_mask(kind: str, height: int, width: int, rng: np.random.Generator,
                size: float) -> np.ndarray:
    """``[H, W]`` bool mask of one shape of longer side ~``size`` px, centre inside the image."""
    aspect = float(rng.uniform(0.6, 1.0))
    w, h = (size, size * aspect) if rng.random() < 0.5 else (size * aspect, size)
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    if kind == "ellipse":
        draw.ellipse(box, fill=255)
    elif kind == "rectangle":
        draw.rectangle(box, fill=255)
    elif kind == "ring":
        draw.ellipse(box, fill=255)
        t = 0.3 * min(w, h)
        draw.ellipse([box[0] + t, box[1] + t, box[2] - t, box[3] - t], fill=0)
    elif kind == "crescent":
        draw.ellipse(box, fill=255)
        dx = 0.35 * w * (1 if rng.random() < 0.5 else -1)
        draw.ellipse([box[0] + dx, box[1] - 0.1 * h, box[2] + dx, box[3] - 0.1 * h], fill=0)
    else:
        angle = float(rng.uniform(0, 2 * math.pi)) if kind != "rectangle" else 0.0
        draw.polygon(_polygon(kind, cx, cy, w, h, angle), fill=255)
    return np.asarray(img) > 127


def _pattern(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``[H, W, 3]`` float32 in [0, 1]: two random colours in stripes or checks."""
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    period = float(rng.uniform(4, 16))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        theta = rng.uniform(0, np.pi)
        sel = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period) > 0
    else:
        sel = ((xx // period).astype(int) + (yy // period).astype(int)) % 2 == 0
    return np.where(sel[..., None], a, b).astype(np.float32)


def _background(style: VocStyle, height: int, width: int, rng: np.random.Generator
                ) -> np.ndarray:
    if style.background == "pattern":
        img = 0.5 * _pattern(height, width, rng) + 0.25
    else:
        c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (xx * np.cos(theta) + yy * np.sin(theta)) / max(height, width)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        img = c0 + (c1 - c0) * t[..., None]
    return np.clip(img + rng.normal(0, 0.06, img.shape), 0, 1).astype(np.float32)


def _distractors(img: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unlabelled lines and small blobs drawn onto ``img`` (float [H, W, 3])."""
    h, w = img.shape[:2]
    pil = Image.fromarray((img * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(count):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            pts = [tuple(float(v) for v in rng.uniform(0, [w, h])) for _ in range(3)]
            draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
        else:
            x, y = rng.uniform(0, [w, h])
            r = float(rng.uniform(2, 6))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return np.asarray(pil).astype(np.float32) / 255


Box = tuple[int, int, int, int]


def draw_example(style: VocStyle, rng: np.random.Generator
                 ) -> tuple[np.ndarray, list[tuple[str, Box]]]:
    """One image and its objects: ``(uint8 [H, W, 3], [(class, (xmin, ymin, xmax, ymax))])``, VOC's
    1-based inclusive indices.
    """
    image, objects = draw_example_with_masks(style, rng)
    return image, [(kind, box) for kind, box, _ in objects]


def draw_example_with_masks(style: VocStyle, rng: np.random.Generator
                            ) -> tuple[np.ndarray, list[tuple[str, Box, np.ndarray]]]:
    """:func:`draw_example` plus each object's visible pixels (bool ``[H, W]``: its shape less
    the objects drawn over it)."""
    height, width = (int(v) for v in rng.integers(style.image_sides[0],
                                                   style.image_sides[1] + 1, 2))
    img = _background(style, height, width, rng)
    if style.distractors:
        img = _distractors(img, int(rng.integers(0, style.distractors + 1)), rng)
    drawn = []
    for _ in range(int(rng.integers(style.objects[0], style.objects[1] + 1))):
        kind = style.classes[int(rng.integers(len(style.classes)))]
        hi = min(style.size_range[1], style.max_size_fraction * min(height, width))
        # log-uniform sizes: as many small objects as large ones
        size = float(np.exp(rng.uniform(np.log(style.size_range[0]), np.log(hi))))
        mask = _shape_mask(kind, height, width, rng, size)
        ys, xs = np.nonzero(mask)
        if len(xs) < 4 or xs.max() - xs.min() < 3 or ys.max() - ys.min() < 3:
            continue  # (almost) entirely outside the image
        fill = (_pattern(height, width, rng) if style.fill == "pattern"
                else np.broadcast_to(rng.uniform(0, 1, 3), img.shape))
        img = np.where(mask[..., None], fill, img)
        drawn.append((kind, mask, (int(xs.min()) + 1, int(ys.min()) + 1,
                                   int(xs.max()) + 1, int(ys.max()) + 1)))
    objects, covered = [], np.zeros(img.shape[:2], bool)
    for kind, mask, box in reversed(drawn):  # the last drawn is on top
        visible = mask & ~covered
        if np.count_nonzero(visible) >= MIN_VISIBLE * np.count_nonzero(mask):
            objects.append((kind, box, visible))
        covered |= mask
    objects.reverse()
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    if style.distractors:  # clutter: random blur or sharpening as well
        pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2)))
                         if rng.random() < 0.5 else ImageFilter.SHARPEN)
    return np.asarray(pil), objects


def _xml(stem: str, height: int, width: int,
         objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    rows = [f"<annotation><filename>{stem}.jpg</filename>",
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (x1, y1, x2, y2) in objects:
        rows.append(f"<object><name>{escape(name)}</name><difficult>0</difficult><bndbox>"
                    f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                    "</bndbox></object>")
    rows.append("</annotation>")
    return "\n".join(rows) + "\n"


def _style_and_salt(style: str | VocStyle, num_train: int, num_val: int
                    ) -> tuple[VocStyle, int]:
    if isinstance(style, str) and style not in STYLES:
        raise ValueError(f"style={style!r}; expected one of {sorted(STYLES)}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train={num_train}, num_val={num_val}; expected counts >= 0")
    spec = STYLES[style] if isinstance(style, str) else style
    return spec, (sorted(STYLES).index(style) if isinstance(style, str) else len(STYLES))


def write_voc_folder(path: str, style: str | VocStyle, num_train: int, num_val: int,
                     seed: int = 0) -> dict[str, int]:
    """Write a VOC2007-layout folder of ``num_train`` + ``num_val`` images in ``style`` (name in
    :data:`STYLES` or a :class:`VocStyle`); returns ``{"images": ..., "objects": ...}``. Raises
    ValueError on an unknown style or a negative count.
    """
    spec, salt = _style_and_salt(style, num_train, num_val)
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    stems = [f"{i:06d}" for i in range(num_train + num_val)]
    n_objects = 0
    for i, stem in enumerate(stems):
        rng = np.random.default_rng([seed, i, salt])
        image, objects = draw_example(spec, rng)
        quality = int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
        Image.fromarray(image).save(os.path.join(path, "JPEGImages", f"{stem}.jpg"),
                                    quality=quality)
        with open(os.path.join(path, "Annotations", f"{stem}.xml"), "w") as f:
            f.write(_xml(stem, image.shape[0], image.shape[1], objects))
        n_objects += len(objects)
    for name, part in (("train.txt", stems[:num_train]), ("val.txt", stems[num_train:])):
        with open(os.path.join(path, "ImageSets", "Main", name), "w") as f:
            f.write("".join(s + "\n" for s in part))
    return {"images": len(stems), "objects": n_objects}


def write_coco_folder(path: str, style: str | VocStyle, num_train: int, num_val: int,
                      seed: int = 0) -> dict[str, int]:
    """The same images as :func:`write_voc_folder` (same style, seed and index) as a COCO folder:
    ``train2017/`` and ``val2017/`` JPEGs, ``annotations/instances_{train,val}2017.json`` with
    ``bbox`` (the VOC box as ``[x, y, w, h]`` pixels), the visible pixels as an RLE
    ``segmentation`` and their count as ``area``, ``iscrowd`` 0, categories ``1..C`` in the
    sorted class names. Returns and raises as :func:`write_voc_folder`.
    """
    spec, salt = _style_and_salt(style, num_train, num_val)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(sorted(set(spec.classes)))]
    category_id = {c["name"]: c["id"] for c in categories}
    os.makedirs(os.path.join(path, "annotations"), exist_ok=True)
    n_objects = 0
    for split, indices in (("train2017", range(num_train)),
                           ("val2017", range(num_train, num_train + num_val))):
        os.makedirs(os.path.join(path, split), exist_ok=True)
        images, annotations = [], []
        for i in indices:
            rng = np.random.default_rng([seed, i, salt])
            image, objects = draw_example_with_masks(spec, rng)
            quality = int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
            name = f"{i:06d}.jpg"
            Image.fromarray(image).save(os.path.join(path, split, name), quality=quality)
            images.append({"id": i + 1, "file_name": name, "height": int(image.shape[0]),
                           "width": int(image.shape[1])})
            for kind, (x1, y1, x2, y2), visible in objects:
                rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
                annotations.append({
                    "id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0,
                    "category_id": category_id[kind],
                    "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
                    "area": int(np.count_nonzero(visible)),
                    "segmentation": {"size": list(rle["size"]),
                                     "counts": rle["counts"].decode("ascii")}})
        n_objects += len(annotations)
        with open(os.path.join(path, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations,
                       "categories": categories}, f)
    return {"images": num_train + num_val, "objects": n_objects}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write (created)")
    parser.add_argument("--style", default="shapes", choices=sorted(STYLES))
    parser.add_argument("--num_train", type=int, default=2000)
    parser.add_argument("--num_val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="voc", choices=["voc", "coco"],
                        help="VOC2007 layout or a COCO folder with masks")
    args = parser.parse_args(argv)
    write = write_voc_folder if args.format == "voc" else write_coco_folder
    counts = write(os.path.expanduser(args.out), args.style, args.num_train, args.num_val,
                   args.seed)
    print(f"{args.out}: {counts['images']} images, {counts['objects']} objects ({args.style}, "
          f"{args.format})")


if __name__ == "__main__":
    main()
