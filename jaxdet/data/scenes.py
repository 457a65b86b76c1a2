"""Procedural scenes of coloured shapes on a textured background (pure NumPy).

jaxdet's embedded dataset: `generate_scene` draws one example from a `np.random.Generator`
(same state, same example).

Difficulty (`SceneSpec` defaults, pinned by tests):

* 128×128 RGB, 2–6 objects; classes circle, square, triangle, cross, uniform (`CLASS_NAMES`;
  label map k+1 for class k, 0 background).
* Size 10–70 px uniform (longer side of the whole shape's box); rotation ±20° (not
  circles); wholly inside the image, uniform position.
* Later objects paint over earlier ones; placements leaving an earlier object < 30 % (or
  < 12 px) visible are redrawn (30 tries, then a new object); the label map is the union of
  the visible masks.
* Colours uniform in RGB, independent of class, redrawn (≤ 16) while > 10 % of the covered
  pixels are within distance 60.
* Background: two colours blended by smooth noise plus stripes of a third (≥ 100 away,
  period 5–16 px, strength 25–60 %); uniform pixel noise std 4 (±7); no anti-aliasing.

Persons (`person_fraction > 0`, off by default): `stick_figures` people, label
`len(class_names)`, same rules, with 17 COCO keypoints (v = 2 visible at pixel (floor(y),
floor(x)), 1 covered). With persons off no random draw changes.
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
    """Scene generator parameters; the defaults are the pinned difficulty (module docstring).

    Sizes in pixels: ``image_size`` (square side); ``min/max_objects`` (inclusive count);
    ``min/max_size`` (longer side of the whole shape's box, ``<= image_size``);
    ``max_rotation_deg``; ``min_visible_fraction`` / ``min_visible_pixels`` (an earlier object
    keeps max(fraction × full area, pixels) visible); ``class_names`` (keys of `raster.SHAPES`);
    ``noise_std`` (0–255); ``min_contrast`` (RGB distance to what is covered);
    ``placement_tries`` (per object); ``extra_draws`` (replacement objects per image);
    ``person_fraction`` (0: no person and no extra random draw).
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
        """The default spec at `image_size`, sizes scaled by image_size / 128 (min >= 6 px)."""
        scale = image_size / _DEFAULT_IMAGE_SIZE
        min_size = max(6, round(_DEFAULT_SIZE_RANGE[0] * scale))
        max_size = max(min_size, round(_DEFAULT_SIZE_RANGE[1] * scale))
        kwargs: dict[str, object] = dict(image_size=image_size, min_size=min_size,
                                         max_size=max_size)
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]


PERSON = "person"


def scene_class_names(spec: SceneSpec) -> tuple[str, ...]:
    """`spec.class_names`, plus "person" last when `spec.person_fraction > 0`."""
    return tuple(spec.class_names) + ((PERSON,) if spec.person_fraction > 0 else ())


# --------------------------------------------------------------------------------------------
# Scenes


def generate_scene(
    rng: np.random.Generator, spec: SceneSpec = SceneSpec()
) -> dict[str, np.ndarray]:
    """One scene, deterministic given the generator state and `spec`.

    Returns, for H = W = image_size and N objects in painting order (N as drawn, fewer only if
    all replacement draws fail):
      image: uint8 [H, W, 3] RGB.
      segmentation: uint8 [H, W], 0 background, k + 1 class k.
      masks: uint8 [N, H, W] 0/1 visible parts, disjoint.
      boxes: float32 [N, 4] absolute (x1, y1, x2, y2) tight around the visible mask
        (x2 = last column + 1).
      labels: int64 [N] 0-based into `spec.class_names`.
      areas: int64 [N] visible pixels; full_areas: int64 [N] pixels before occlusion.
      keypoints (persons on only): float32 [N, 17, 3] (x, y, v), `stick_figures.KEYPOINT_NAMES`
        order, continuous pixels; v = 2 visible, 1 covered; zeros for shapes.
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
    """A stick figure of height `size` px rotated by `angle`: (shape, [17, 2] keypoints in the
    shape's frame), shrunk about the hips when wider than hw.
    """

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
    """float32 [N, 17, 3] (x, y, v): v = 2 where the person owns the keypoint's pixel, 1 if covered;
    zeros for shapes.
    """
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
