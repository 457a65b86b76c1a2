"""The lecture's warning about overlapping outputs of transpose convolutions, as a picture.

A stride-2 transpose convolution places one (weighted) copy of its kernel per input pixel,
2 px apart in the output, and sums where copies overlap. With a 3x3 kernel the number of
copies covering an output pixel alternates 1, 2, 4 (a checkerboard), even for a constant
input and an all-ones kernel. A 4x4 kernel at stride 2 covers every interior pixel exactly
4 times, so the all-ones case is flat, but with random weights each output phase sums a
different 2x2 subset of the kernel and the checkerboard comes back. Resize-then-conv
(nearest x2, then a 3x3 convolution) gives a constant output for a constant input whatever
the weights.

Run:  python experiments/checkerboard.py
Writes experiments/results/checkerboard.png (rows: all-ones kernel, random kernel; columns:
3x3 stride-2 transpose conv, 4x4 stride-2 transpose conv, nearest x2 + 3x3 conv) and prints
the per-output-pixel overlap counts (how many kernel taps land on each output pixel).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from jaxdet.models import upsampling

IN_SIZE = 8  # constant input: [1, 8, 8, 1] -> outputs [1, 16, 16, 1]
CELL = 12  # pixels per output value in the picture
OUT_PATH = pathlib.Path(__file__).parent / "results" / "checkerboard.png"


def transpose_conv_2x(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-2 transpose conv, SAME size: [1, H, W, 1] -> [1, 2H, 2W, 1]."""
    return upsampling.transpose_conv(x, kernel, stride=2)


def resize_then_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Nearest x2 then a SAME 3x3 convolution: [1, H, W, 1] -> [1, 2H, 2W, 1]."""
    up = upsampling.nearest_upsample(x, 2)
    return jax.lax.conv_general_dilated(
        up, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


METHODS = (
    ("3x3 stride-2 transpose", transpose_conv_2x, 3),
    ("4x4 stride-2 transpose", transpose_conv_2x, 4),
    ("nearest x2 + 3x3 conv", resize_then_conv, 3),
)


def _panel(values: np.ndarray, title: str) -> Image.Image:
    """Grey-scale panel of a 2-D map, normalised to its own min/max, with a title."""
    lo, hi = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if hi - lo < 1e-9 else (values - lo) / (hi - lo)
    grey = (40 + 200 * scaled).astype(np.uint8)
    img = Image.fromarray(grey).resize(
        (values.shape[1] * CELL, values.shape[0] * CELL), Image.NEAREST
    )
    canvas = Image.new("L", (img.width, img.height + 28), 255)
    canvas.paste(img, (0, 28))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), title, fill=0)
    draw.text((2, 14), f"min {lo:.2f} max {hi:.2f}", fill=0)
    return canvas


def main() -> None:
    x = jnp.ones((1, IN_SIZE, IN_SIZE, 1), jnp.float32)
    key = jax.random.key(0)
    rows: list[list[Image.Image]] = []
    for row_name in ("ones", "random"):
        panels = []
        for title, fn, k in METHODS:
            if row_name == "ones":
                kernel = jnp.ones((k, k, 1, 1), jnp.float32)
            else:
                kernel = jax.random.normal(jax.random.fold_in(key, k), (k, k, 1, 1))
            out = np.asarray(fn(x, kernel))[0, :, :, 0]
            panels.append(_panel(out, f"{title}, {row_name}"))
            if row_name == "ones":
                # All-ones kernel on an all-ones input: each output = number of kernel taps
                # (input pixel, kernel position) landing on it.
                counts = np.rint(out).astype(int)
                interior = counts[2:-2, 2:-2]
                hist = dict(zip(*np.unique(interior, return_counts=True), strict=True))
                print(f"{title}: overlap counts, top-left 6x6 of the 16x16 output")
                print("\n".join("  " + " ".join(f"{v:d}" for v in r) for r in counts[:6, :6]))
                print(f"  interior (2 px border removed) value -> pixels: "
                      f"{ {int(a): int(b) for a, b in hist.items()} }")
            else:
                interior = out[2:-2, 2:-2]
                print(f"{title}, random kernel: interior std/mean|.| = "
                      f"{interior.std() / np.abs(interior).mean():.3f} "
                      f"(0 = flat, no checkerboard)")
        rows.append(panels)
    pad = 8
    width = sum(p.width for p in rows[0]) + pad * (len(rows[0]) + 1)
    height = sum(r[0].height for r in rows) + pad * (len(rows) + 1)
    sheet = Image.new("L", (width, height), 255)
    y = pad
    for panels in rows:
        x0 = pad
        for p in panels:
            sheet.paste(p, (x0, y))
            x0 += p.width + pad
        y += panels[0].height + pad
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(OUT_PATH, optimize=True)
    print(f"wrote {OUT_PATH} ({OUT_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
