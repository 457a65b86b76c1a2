"""Raster primitives of the procedural datasets (pure NumPy): shapes, backgrounds, colours.

A :class:`Shape` is a union of convex polygons and discs in continuous pixel coordinates
(pixel (row i, col j) covers ``[j, j+1) x [i, i+1)``; it is inside when its centre is).
Used by :mod:`jaxdet.data.scenes` and :mod:`jaxdet.data.stick_figures`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

REFERENCE_IMAGE_SIZE = 128
"""Image size at which the background's stripe period is 5-16 px (it scales with the size)."""


@dataclasses.dataclass(frozen=True)
class Shape:
    """A shape at the origin: convex polygons (each [V, 2] x,y counter-clockwise in image
    coordinates, y down) and discs ((cx, cy, r) rows)."""

    polygons: tuple[np.ndarray, ...] = ()
    discs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3)))

    def bounds(self) -> np.ndarray:
        """[4] float (xmin, ymin, xmax, ymax) of the continuous shape."""
        pts = list(self.polygons)
        if len(self.discs):
            c, r = self.discs[:, :2], self.discs[:, 2:]
            pts += [c - r, c + r]
        allp = np.concatenate(pts, axis=0)
        return np.concatenate([allp.min(0), allp.max(0)])

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean array, broadcast of x and y: is the point (x, y) inside the shape."""
        inside = np.zeros(np.broadcast_shapes(x.shape, y.shape), bool)
        for poly in self.polygons:
            nxt = np.roll(poly, -1, axis=0)
            ok = np.ones_like(inside)
            for (x0, y0), (x1, y1) in zip(poly, nxt, strict=True):
                # Counter-clockwise in y-down coordinates: interior has cross <= 0.
                ok &= (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) <= 1e-9
            inside |= ok
        for cx, cy, r in self.discs:
            inside |= (x - cx) ** 2 + (y - cy) ** 2 <= r * r
        return inside


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def polygon_shape(unit_polys: tuple[np.ndarray, ...], size: float, angle: float) -> Shape:
    """Rotate unit polygons by `angle`, then scale so the longer box side equals `size`."""
    rotated = [rotate(p, angle) for p in unit_polys]
    allp = np.concatenate(rotated)
    extent = (allp.max(0) - allp.min(0)).max()
    return Shape(polygons=tuple(p * (size / extent) for p in rotated))


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    # Counter-clockwise as seen on screen (y down): the orientation `Shape.contains` expects.
    return np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]], float)


_SQUARE = (box_polygon(-0.5, -0.5, 0.5, 0.5),)
_TRIANGLE = (np.array([[0.0, -0.5], [-0.5, 0.5], [0.5, 0.5]]),)  # apex up, isosceles
_CROSS_HALF_WIDTH = 0.17  # bar thickness = 34 % of the cross's size
_CROSS = (
    box_polygon(-0.5, -_CROSS_HALF_WIDTH, 0.5, _CROSS_HALF_WIDTH),
    box_polygon(-_CROSS_HALF_WIDTH, -0.5, _CROSS_HALF_WIDTH, 0.5),
)

ShapeBuilder = Callable[[float, float], Shape]
"""(size in px, rotation in radians) -> shape centred near the origin."""

SHAPES: dict[str, ShapeBuilder] = {
    "circle": lambda size, angle: Shape(discs=np.array([[0.0, 0.0, size / 2]])),
    "square": lambda size, angle: polygon_shape(_SQUARE, size, angle),
    "triangle": lambda size, angle: polygon_shape(_TRIANGLE, size, angle),
    "cross": lambda size, angle: polygon_shape(_CROSS, size, angle),
}


def rasterise(shape: Shape, offset: np.ndarray, hw: int) -> tuple[tuple[slice, slice],
                                                                    np.ndarray]:
    """`shape` translated by offset (x, y) on an hw×hw grid: (window, bool mask of the window)."""
    x0, y0, x1, y1 = shape.bounds() + np.tile(offset, 2)
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)) + 1, hw), min(int(np.ceil(y1)) + 1, hw)
    xs = np.arange(c0, c1, dtype=float)[None, :] + 0.5 - offset[0]
    ys = np.arange(r0, r1, dtype=float)[:, None] + 0.5 - offset[1]
    return (slice(r0, r1), slice(c0, c1)), shape.contains(xs, ys)


# --------------------------------------------------------------------------------------------
# Background


def _smooth_noise(rng: np.random.Generator, hw: int, grid: int) -> np.ndarray:
    """[hw, hw] float in [0, 1]: bilinear upsampling of a (grid+1)² uniform random lattice."""
    lattice = rng.random((grid + 1, grid + 1), dtype=np.float32)
    pos = (np.arange(hw, dtype=np.float32) + 0.5) * np.float32(grid / hw)
    lo = np.minimum(pos.astype(int), grid - 1)
    frac = pos - lo
    interp = np.zeros((hw, grid + 1), np.float32)
    interp[np.arange(hw), lo] = 1 - frac
    interp[np.arange(hw), lo + 1] = frac
    field = interp @ lattice @ interp.T
    low, high = field.min(), field.max()
    return (field - low) * np.float32(1 / max(high - low, 1e-6))


_STRIPE_CONTRAST = 100.0  # RGB distance of the stripe colour from both base colours


def background(rng: np.random.Generator, hw: int) -> np.ndarray:
    """[3, hw, hw] float32 in 0–255 (channels first): two colours mixed by noise, plus stripes."""
    base_colours = rng.uniform(0, 255, (2, 3))
    stripe_colour = pick_colour(rng, base_colours, _STRIPE_CONTRAST)  # stripes never vanish
    colours = np.concatenate([base_colours, stripe_colour[None]]).astype(np.float32)
    colours = colours[..., None, None]  # [3 colours, 3 channels, 1, 1]
    blend = _smooth_noise(rng, hw, grid=int(rng.integers(2, 6)))
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(5, 16) * hw / REFERENCE_IMAGE_SIZE
    strength = rng.uniform(0.25, 0.6)
    coord = (np.arange(hw, dtype=np.float32) + 0.5) * np.float32(2 * np.pi / period)
    phase = coord[None, :] * np.float32(np.cos(angle)) + coord[:, None] * np.float32(np.sin(angle))
    phase += np.float32(rng.uniform(0, 2 * np.pi))
    stripes = np.clip(np.float32(2.5) * np.sin(phase), 0, 1) * np.float32(strength)
    base = colours[0] + blend * (colours[1] - colours[0])
    return base + stripes * (colours[2] - base)


def pick_colour(rng: np.random.Generator, covered: np.ndarray, min_contrast: float,
                 candidates: int = 16) -> np.ndarray:
    """[3] colour uniform in the RGB cube, redrawn while > 10 % of `covered` [M, 3] is within
    `min_contrast`; else the best of `candidates` draws.
    """
    options = rng.uniform(0, 255, (candidates, 3))
    sample = covered[:: max(1, len(covered) // 128)]
    sq_dist = ((options[:, None, :] - sample[None, :, :]) ** 2).sum(axis=-1)
    close = (sq_dist < min_contrast**2).mean(axis=1)
    good = np.flatnonzero(close <= 0.1)
    return options[good[0] if len(good) else int(close.argmin())]
