"""Procedural scenes of coloured shapes on a textured background (pure NumPy).

The embedded dataset of jaxdet: every task (segmentation, localisation, detection,
instance segmentation) trains on it without anything on disk. `generate_scene` draws one
example from a `np.random.Generator`; the same generator state gives the same example.

Difficulty (the defaults of `SceneSpec`; tests pin every line of it):

* 128×128 RGB images with 2–6 objects each (count uniform over the range).
* 4 shape classes, uniform: circle, square, triangle, cross (`CLASS_NAMES`; class id k+1 in
  the label map for class index k, 0 = background).
* Object size 10–70 px, uniform, where size = the longer side of the tight box of the whole
  (unoccluded) shape, up to ±2 px of rasterisation. Squares, triangles and crosses are rotated
  by up to ±20°. Each object lies wholly inside the image, at a uniform random position.
* Objects overlap: later objects paint over earlier ones. A placement that would leave an
  earlier object with less than 30 % of its pixels (or fewer than 12 pixels) visible is
  redrawn, so every painted object keeps a recognisable visible part; no object is ever
  dropped after painting and the label map is exactly the union of the visible masks. An
  object that finds no such place in 30 tries is replaced by a new draw (class, size,
  rotation); that happens to about 2 % of the 6-object scenes.
* Colours are drawn uniformly from the RGB cube independently of the class (a colour tells
  nothing about the shape). A colour is redrawn (up to 16 draws, then the best is kept) while
  more than 10 % of the pixels it is about to cover are already within 60 (RGB distance) of
  it, so an object stands out from what lies under it; the rule does not look at the class.
* Background: two random colours (same RGB cube as the objects) blended by smooth
  low-frequency noise, overlaid with stripes of a third random colour (≥ 100 away from both)
  at a random angle, period (5–16 px) and strength (25–60 %). Objects are flat colours.
  Every pixel, object or background, gets uniform noise of standard deviation 4 (±7). No
  anti-aliasing: the labels are exactly what was painted.

Adding a shape means adding a builder to `raster.SHAPES` and naming it in `SceneSpec.class_names`;
the single-object variant is `SceneSpec(min_objects=1, max_objects=1)`.

Persons (optional, off by default: `SceneSpec.person_fraction > 0`). Each object is then a
stick-figure "person" with probability `person_fraction` (else a shape as above), drawn by
`jaxdet.data.stick_figures` (random articulated pose, limbs as capsules, head disc, rotated by
up to ±`max_rotation_deg`), with its height (ankles to top of head of the upright figure) drawn
from the object size range and shrunk about its hips when its box would not fit the image.
Persons take the label `len(class_names)` (after the shapes; `scene_class_names(spec)`), follow
the same placement, occlusion and colour rules, and carry the 17 COCO keypoints
(`stick_figures.KEYPOINT_NAMES`): v = 2 where the keypoint's pixel (floor(y), floor(x)) shows
the person, v = 1 where a later object covers it. With persons off, not one random draw
changes: the default scenes (and every number measured on them) stay as they were.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdet.data import raster, stick_figures

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Shape classes of the default scenes, without background; label k is `CLASS_NAMES[k]`."""

NUM_SEGMENTATION_CLASSES: int = len(CLASS_NAMES) + 1
"""Classes in the label map of the default scenes: background (0) plus one per shape."""

_DEFAULT_IMAGE_SIZE = raster.REFERENCE_IMAGE_SIZE
_DEFAULT_SIZE_RANGE = (10, 70)


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """Parameters of the scene generator; the defaults are the pinned difficulty above.

    Attributes:
      image_size: height = width of the square image, in pixels.
      min_objects, max_objects: inclusive range of the number of objects per image.
      min_size, max_size: inclusive range of an object's size in pixels (longer side of the
        whole shape's tight box); `max_size` must not exceed `image_size`.
      max_rotation_deg: squares, triangles and crosses are rotated uniformly in ±this.
      min_visible_fraction, min_visible_pixels: an earlier object must keep at least
        max(fraction × its full area, pixels) visible pixels when a later one is placed.
      class_names: shape classes to draw from (uniformly); names must be in `raster.SHAPES`.
      noise_std: standard deviation of the per-pixel uniform noise (0–255 scale).
      min_contrast: RGB distance an object's colour keeps from what it covers (see above).
      placement_tries: positions tried per object before that object is given up.
      extra_draws: objects drawn (class, size, ...) in place of given-up ones, per image.
      person_fraction: probability that an object is a stick-figure person (label
        len(class_names)); 0 (default) draws no person and no extra random number.
    """

    image_size: int = _DEFAULT_IMAGE_SIZE
    min_objects: int = 2
    max_objects: int = 6
    min_size: int = _DEFAULT_SIZE_RANGE[0]
    max_size: int = _DEFAULT_SIZE_RANGE[1]
    max_rotation_deg: float = 20.0
    min_visible_fraction: float = 0.3
    min_visible_pixels: int = 12
    class_names: tuple[str, ...] = CLASS_NAMES
    noise_std: float = 4.0
    min_contrast: float = 60.0
    placement_tries: int = 30
    extra_draws: int = 10
    person_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self}")
        if not 2 <= self.min_size <= self.max_size <= self.image_size:
            raise ValueError(f"need 2 <= min_size <= max_size <= image_size, got {self}")
        if not 0.0 <= self.person_fraction <= 1.0:
            raise ValueError(f"need 0 <= person_fraction <= 1, got {self}")
        unknown = [n for n in self.class_names if n not in raster.SHAPES]
        if unknown or not self.class_names:
            raise ValueError(f"unknown shape classes {unknown}; known: {sorted(raster.SHAPES)}")

    @classmethod
    def for_image_size(cls, image_size: int, **overrides: object) -> SceneSpec:
        """The default spec at another image size, object sizes scaled by image_size / 128.

        The minimum size is kept at 6 px or more so that tiny images still have shapes.
        """
        scale = image_size / _DEFAULT_IMAGE_SIZE
        min_size = max(6, round(_DEFAULT_SIZE_RANGE[0] * scale))
        max_size = max(min_size, round(_DEFAULT_SIZE_RANGE[1] * scale))
        kwargs: dict[str, object] = dict(image_size=image_size, min_size=min_size,
                                         max_size=max_size)
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]


PERSON = "person"


def scene_class_names(spec: SceneSpec) -> tuple[str, ...]:
    """Class names of the scenes drawn with `spec`: its shapes, plus "person" last when
    `spec.person_fraction > 0`."""
    return tuple(spec.class_names) + ((PERSON,) if spec.person_fraction > 0 else ())


# --------------------------------------------------------------------------------------------
# Scenes


def generate_scene(
    rng: np.random.Generator, spec: SceneSpec = SceneSpec()
) -> dict[str, np.ndarray]:
    """Draws one scene. Deterministic given the generator's state and `spec`.

    Returns a dict with, for H = W = spec.image_size and N objects (painting order, back to
    front; N uniform in [min_objects, max_objects], fewer only if `extra_draws` replacement
    objects all failed to find a place, which the tests have not seen happen):
      image: uint8 [H, W, 3] RGB.
      segmentation: uint8 [H, W] label map, 0 = background, k + 1 = class index k.
      masks: uint8 [N, H, W] 0/1 visible part of each object (after occlusion); disjoint.
      boxes: float32 [N, 4] (x1, y1, x2, y2) absolute pixels, tight around the visible mask:
        x1 = first column, x2 = last column + 1 (same for y).
      labels: int64 [N] 0-based class index into spec.class_names.
      areas: int64 [N] visible pixel count of each mask.
      full_areas: int64 [N] pixel count of each whole shape before later objects covered it
        (areas / full_areas >= spec.min_visible_fraction).
      keypoints: only with spec.person_fraction > 0: float32 [N, 17, 3] (x, y, v) in
        `stick_figures.KEYPOINT_NAMES` order, continuous pixel coordinates inside the image;
        v = 2 visible, 1 covered by a later object (persons), all zeros for shapes.
    """
    hw = spec.image_size
    image = raster.background(rng, hw)  # [3, H, W]
    owner = np.full((hw, hw), -1, np.int32)  # index of the object seen at each pixel
    full_areas: list[int] = []
    keypoints: list[np.ndarray | None] = []  # per placed object: [17, 2] (persons) or None
    visible_areas = np.zeros(0, np.int64)
    labels: list[int] = []
    num_objects = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    max_angle = np.deg2rad(spec.max_rotation_deg)
    for _ in range(num_objects + spec.extra_draws):
        if len(labels) == num_objects:
            break
        points = None  # [17, 2] keypoints of a person, relative to the shape's origin
        if spec.person_fraction > 0 and rng.random() < spec.person_fraction:
            label = len(spec.class_names)
            size = rng.uniform(spec.min_size, spec.max_size)
            angle = rng.uniform(-max_angle, max_angle)
            shape, points = _person(rng, size, angle, hw)
        else:
            label = int(rng.integers(len(spec.class_names)))
            size = rng.uniform(spec.min_size, spec.max_size)
            angle = rng.uniform(-max_angle, max_angle)
            shape = raster.SHAPES[spec.class_names[label]](size, angle)
        bounds = shape.bounds()
        span = bounds[2:] - bounds[:2]
        need = np.maximum(spec.min_visible_fraction * np.asarray(full_areas, float),
                          spec.min_visible_pixels)
        placed = None
        for _ in range(spec.placement_tries):
            offset = rng.uniform(0, np.maximum(hw - span, 0)) - bounds[:2]
            window, mask = raster.rasterise(shape, offset, hw)
            under = owner[window][mask]
            hidden = np.bincount(under[under >= 0], minlength=len(full_areas))
            if np.all(visible_areas - hidden >= need):
                placed = window, mask, hidden, offset
                break
        if placed is None or placed[1].sum() < spec.min_visible_pixels:
            continue
        window, mask, hidden, offset = placed
        keypoints.append(None if points is None else points + offset)
        image_window, owner_window = image[:, window[0], window[1]], owner[window]  # views
        colour = raster.pick_colour(rng, image_window[:, mask].T, spec.min_contrast)
        image_window[:, mask] = colour[:, None]
        owner_window[mask] = len(labels)
        full_areas.append(int(mask.sum()))
        visible_areas = np.append(visible_areas - hidden, full_areas[-1])
        labels.append(label)
    # Uniform noise in ±√3·σ has standard deviation σ (and is 3× cheaper than Gaussian).
    half_width = np.float32(np.sqrt(3) * spec.noise_std)
    image += (rng.random(image.shape, dtype=np.float32) - np.float32(0.5)) * (2 * half_width)
    out = _pack(image, owner, np.asarray(labels, np.int64), np.asarray(full_areas, np.int64))
    if spec.person_fraction > 0:
        out["keypoints"] = _keypoint_array(keypoints, owner)
    return out


def _person(rng: np.random.Generator, size: float, angle: float, hw: int
            ) -> tuple[raster.Shape, np.ndarray]:
    """A stick figure of height `size` px rotated by `angle`: (shape, [17, 2] float64 keypoints
    in the shape's frame), shrunk about the hips (as `stick_figures`) when wider than hw."""

    pose = stick_figures.PoseSpec()
    points = stick_figures.person_keypoints(rng, size, angle).astype(np.float64)
    thickness = max(pose.min_thickness_px,
                    rng.uniform(pose.min_thickness, pose.max_thickness) * size)
    shape = stick_figures.person_shape(points, thickness)
    bounds = shape.bounds()
    span = float((bounds[2:] - bounds[:2]).max())
    fit = hw - 1e-3
    if span > fit:
        points *= (fit - thickness) / (span - thickness)
        shape = stick_figures.person_shape(points, thickness)
    return shape, points


def _keypoint_array(keypoints: list[np.ndarray | None], owner: np.ndarray) -> np.ndarray:
    """float32 [N, 17, 3] (x, y, v): persons' keypoints, v = 2 where the object still owns
    the keypoint's pixel, 1 where a later object covers it; zeros for the shapes."""
    hw = owner.shape[0]
    out = np.zeros((len(keypoints), 17, 3), np.float32)
    for k, points in enumerate(keypoints):
        if points is None:
            continue
        cols, rows = np.clip(np.floor(points), 0, hw - 1).astype(np.int64).T
        out[k, :, :2] = points
        out[k, :, 2] = np.where(owner[rows, cols] == k, 2.0, 1.0)
    return out


def _pack(image: np.ndarray, owner: np.ndarray, labels: np.ndarray,
          full_areas: np.ndarray) -> dict[str, np.ndarray]:
    hw = owner.shape[0]
    n = len(labels)
    masks = owner[None] == np.arange(n)[:, None, None]
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # [N, H], [N, W]
    x1, y1 = cols.argmax(1), rows.argmax(1)
    x2, y2 = hw - cols[:, ::-1].argmax(1), hw - rows[:, ::-1].argmax(1)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32).reshape(n, 4)
    segmentation = np.zeros((hw, hw), np.uint8)
    visible = owner >= 0
    segmentation[visible] = labels[owner[visible]] + 1
    return {
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy(),
        "segmentation": segmentation,
        "masks": masks.astype(np.uint8),
        "boxes": boxes,
        "labels": labels,
        "areas": masks.sum(axis=(1, 2)).astype(np.int64),
        "full_areas": full_areas,
    }
