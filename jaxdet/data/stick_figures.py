"""Procedural stick figures with the 17 COCO person keypoints (pure NumPy).

jaxdet's embedded pose dataset: one person per image on `scenes`' background, with keypoints
(x, y, v), tight box and visible mask; `generate_pose_example` is deterministic given the
generator state. `person_keypoints` and `person_shape` / `rasterise_person` are reused by
`scenes`. Coordinates as in `scenes` (pixel (i, j) covers [j, j+1) × [i, i+1); x right, y down).

Difficulty (`PoseSpec` defaults, pinned by tests):

* 64×64 RGB, one figure facing the viewer (`left_*` on the image's right before rotation),
  inside the image at a uniform position; height (ankles to head top, upright) 35–90 % of
  the side; shoulder/hip widths ±15 %; shrunk about the hips if it does not fit.
* Arms −10°..170°, elbows ±135°, thighs −10°..50°, knees ±45°; no wrist, knee or ankle
  crosses the midline; head tilt ±25°; figure rotated ±20°.
* Capsule limbs 5–8 % of the height wide (≥ 2 px), filled torso, head disc radius 8.5 %;
  every keypoint's pixel is on the figure; flat colour, no anti-aliasing.
* 0–2 occluders (discs / rectangles, 20–50 % of the height) on visible figure pixels, keeping
  ≥ 50 % visible (10 tries); covered keypoints v = 1, others v = 2.
* Colours by `scenes`' contrast rule, independent of the pose; noise std 4 (±7).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdet.data import raster

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
"""The 17 COCO person keypoints in COCO order; keypoint k of an array is `KEYPOINT_NAMES[k]`."""

NUM_KEYPOINTS: int = len(KEYPOINT_NAMES)

FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
"""(left, right) keypoint index pairs, swapped when an image is flipped horizontally."""

SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12),  # legs: ankle-knee, knee-hip
    (11, 12), (5, 11), (6, 12), (5, 6),  # torso outline: hips, sides, shoulders
    (5, 7), (7, 9), (6, 8), (8, 10),  # arms: shoulder-elbow, elbow-wrist
)
"""Limbs drawn as capsules, as 0-based keypoint index pairs. Unlike COCO's 19-link skeleton it
has no face links: the head is a disc (centred between the ears) joined to the middle of the
shoulders by a neck capsule."""

# Body proportions, fractions of the figure height h (ankles to top of head, upright). Body
# frame while building: origin at the middle of the hips, y up.
_THIGH = _SHIN = 0.25
_SHOULDER_Y = 0.30  # hips -> shoulders
_NECK = 0.115  # middle of the shoulders -> centre of the head
_HEAD_RADIUS = 0.085  # top of head at 0.30 + 0.115 + 0.085 = 0.5 h above the hips
_UPPER_ARM, _FOREARM = 0.17, 0.15
_SHOULDER_HALF_WIDTH, _HIP_HALF_WIDTH = 0.11, 0.07
_WIDTH_JITTER = 0.15
_MIDLINE_MARGIN = 0.01  # wrists, knees and ankles keep this far (× h) on their own side
# Face keypoints in the head frame (u = towards the person's left, v = up), × head radius.
_FACE = np.array([[0.0, -0.15], [0.4, 0.2], [-0.4, 0.2], [0.9, 0.0], [-0.9, 0.0]])
_EAR_U = 0.9
_PIXEL_REACH = np.sqrt(0.5) + 1e-3  # a point's pixel centre is within √½ px of the point
_POSE_TRIES = 20

# Joint limits in degrees: angle from hanging straight down, positive = away from the body.
_ARM_RANGE, _ELBOW_BEND = (-10.0, 170.0), 135.0
_THIGH_RANGE, _KNEE_BEND = (-10.0, 50.0), 45.0
_HEAD_TILT = 25.0


@dataclasses.dataclass(frozen=True)
class PoseSpec:
    """Pose generator parameters; the defaults are the pinned difficulty (module docstring).

    ``image_size`` (square side, >= 16); ``min/max_height`` (fraction of image_size);
    ``min/max_thickness`` (limb width, fraction of the height); ``min_thickness_px`` (>= 1.5);
    ``max_rotation_deg``; ``min/max_occluders`` (inclusive count); ``min/max_occluder_size``
    (longer box side or diameter, fraction of the height); ``min_visible_fraction`` (left
    visible by occluders); ``occluder_tries``; ``noise_std`` (0–255); ``min_contrast`` (RGB
    distance to what is covered).
    """

    image_size: int = 64
    min_height: float = 0.35
    max_height: float = 0.9
    min_thickness: float = 0.05
    max_thickness: float = 0.08
    min_thickness_px: float = 2.0
    max_rotation_deg: float = 20.0
    min_occluders: int = 0
    max_occluders: int = 2
    min_occluder_size: float = 0.2
    max_occluder_size: float = 0.5
    min_visible_fraction: float = 0.5
    occluder_tries: int = 10
    noise_std: float = 4.0
    min_contrast: float = 60.0

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"need image_size >= 16, got {self}")
        if not 0 < self.min_height <= self.max_height <= 1:
            raise ValueError(f"need 0 < min_height <= max_height <= 1, got {self}")
        if not 0 < self.min_thickness <= self.max_thickness or self.min_thickness_px < 1.5:
            raise ValueError(f"need 0 < min_thickness <= max_thickness and "
                             f"min_thickness_px >= 1.5, got {self}")
        if not 0 <= self.min_occluders <= self.max_occluders:
            raise ValueError(f"need 0 <= min_occluders <= max_occluders, got {self}")
        if not 0 < self.min_occluder_size <= self.max_occluder_size:
            raise ValueError(f"need 0 < min_occluder_size <= max_occluder_size, got {self}")
        if not 0 <= self.min_visible_fraction <= 1:
            raise ValueError(f"need 0 <= min_visible_fraction <= 1, got {self}")


# --------------------------------------------------------------------------------------------
# Pose


def _limb(rng: np.random.Generator, root: np.ndarray, side: float, lengths: tuple[float, float],
          first: tuple[float, float], bend: float, height: float,
          max_second: float = 360.0) -> np.ndarray:
    """[2, 2] (middle, end joint) of a two-segment limb in the body frame (y up); `side` +1 person's
    left, -1 right; angles in degrees from hanging down, redrawn until both joints keep their
    side of the midline (and the second segment within ±`max_second`), else hanging straight.
    """
    def direction(angle_deg: np.ndarray) -> np.ndarray:
        a = np.deg2rad(angle_deg)
        return np.stack([side * np.sin(a), -np.cos(a)], axis=-1)

    a1 = rng.uniform(*first, _POSE_TRIES)
    a2 = a1 + rng.uniform(-bend, bend, _POSE_TRIES)
    middle = root + lengths[0] * height * direction(a1)
    end = middle + lengths[1] * height * direction(a2)
    ok = ((side * middle[:, 0] >= _MIDLINE_MARGIN * height)
          & (side * end[:, 0] >= _MIDLINE_MARGIN * height) & (np.abs(a2) <= max_second))
    if not ok.any():
        middle = root + np.array([0.0, -lengths[0] * height])
        return np.stack([middle, middle + np.array([0.0, -lengths[1] * height])])
    k = int(ok.argmax())
    return np.stack([middle[k], end[k]])


def person_keypoints(rng: np.random.Generator, height: float, angle: float) -> np.ndarray:
    """A random pose, float32 [17, 2] (x, y) image coordinates in `KEYPOINT_NAMES` order, relative
    to the middle of the hips; `height` in pixels; facing the viewer, then rotated by `angle`
    radians (positive clockwise on screen). Draws from `rng` a fixed number of times.
    """
    h = float(height)
    shoulder_w, hip_w = h * rng.uniform(1 - _WIDTH_JITTER, 1 + _WIDTH_JITTER, 2) * (
        _SHOULDER_HALF_WIDTH, _HIP_HALF_WIDTH)
    points = np.zeros((NUM_KEYPOINTS, 2))
    for side, (shoulder, elbow, wrist, hip, knee, ankle) in (
            (1.0, (5, 7, 9, 11, 13, 15)), (-1.0, (6, 8, 10, 12, 14, 16))):
        points[shoulder] = (side * shoulder_w, _SHOULDER_Y * h)
        points[hip] = (side * hip_w, 0.0)
        points[[elbow, wrist]] = _limb(rng, points[shoulder], side, (_UPPER_ARM, _FOREARM),
                                       _ARM_RANGE, _ELBOW_BEND, h)
        points[[knee, ankle]] = _limb(rng, points[hip], side, (_THIGH, _SHIN), _THIGH_RANGE,
                                      _KNEE_BEND, h, max_second=90.0)
    tilt = np.deg2rad(rng.uniform(-_HEAD_TILT, _HEAD_TILT))
    up = np.array([-np.sin(tilt), np.cos(tilt)])  # head's up, body frame
    towards_left = np.array([up[1], -up[0]])
    centre = points[5:7].mean(0) + _NECK * h * up
    radius = _HEAD_RADIUS * h
    points[:5] = centre + radius * (_FACE[:, :1] * towards_left + _FACE[:, 1:] * up)
    points[:, 1] *= -1  # body frame (y up) -> image coordinates (y down)
    return raster.rotate(points, angle).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Drawing


def _convex(points: np.ndarray) -> np.ndarray:
    """The polygon [V, 2] ordered as `raster.Shape.contains` expects."""
    x, y = points[:, 0], points[:, 1]
    signed = (x * np.roll(y, -1) - np.roll(x, -1) * y).sum()
    return points[::-1] if signed > 0 else points


def _capsule_body(p: np.ndarray, q: np.ndarray, radius: float) -> list[np.ndarray]:
    """The rectangle of a capsule from p to q ([] if p == q; the end discs are separate)."""
    d = q - p
    length = float(np.hypot(*d))
    if length < 1e-9:
        return []
    n = np.array([-d[1], d[0]]) * (radius / length)
    return [_convex(np.stack([p + n, q + n, q - n, p - n]))]


def _head(keypoints: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre [2], radius) of the head disc: between the ears, enlarged to contain the face
    keypoints' pixel centres.
    """
    centre = keypoints[3:5].mean(0)
    radius = float(np.hypot(*(keypoints[3] - keypoints[4]))) / (2 * _EAR_U)
    reach = float(np.hypot(*(keypoints[:5] - centre).T).max()) + _PIXEL_REACH
    return centre, max(radius, reach)


def person_shape(keypoints: np.ndarray, thickness: float) -> raster.Shape:
    """The figure of a 17-keypoint pose as a `raster.Shape`.

    `keypoints`: [17, 2] (or [17, 3]) continuous pixels, `KEYPOINT_NAMES` order; `thickness`:
    limb width in pixels (>= √2 puts every body keypoint's pixel centre inside). Union of a
    capsule per `SKELETON` limb, the filled torso, the head disc and a neck capsule.
    """
    kp = np.asarray(keypoints, np.float64)[:, :2]
    r = thickness / 2
    centre, head_radius = _head(kp)
    neck = kp[5:7].mean(0)
    polygons: list[np.ndarray] = [_convex(kp[[5, 6, 12]]), _convex(kp[[5, 12, 11]])]  # torso
    for i, j in SKELETON:
        polygons += _capsule_body(kp[i], kp[j], r)
    polygons += _capsule_body(neck, centre, r)
    discs = np.concatenate([
        np.concatenate([np.concatenate([kp[5:], neck[None], centre[None]]),
                        np.full((NUM_KEYPOINTS - 5 + 2, 1), r)], axis=1),
        [[*centre, head_radius]],
    ])
    return raster.Shape(polygons=tuple(polygons), discs=discs)


def rasterise_person(keypoints: np.ndarray, thickness: float, hw: int) -> np.ndarray:
    """bool [hw, hw] mask of `person_shape(keypoints, thickness)` (pixel centres, clipped)."""
    window, inside = raster.rasterise(person_shape(keypoints, thickness), np.zeros(2), hw)
    mask = np.zeros((hw, hw), bool)
    mask[window] = inside
    return mask


# --------------------------------------------------------------------------------------------
# Examples


def _occluder(rng: np.random.Generator, size: float) -> raster.Shape:
    """A disc or a rectangle (aspect 1–3, any angle) of the given size, centred at 0."""
    if rng.random() < 0.5:
        return raster.SHAPES["circle"](size, 0.0)
    aspect = rng.uniform(1.0, 3.0)
    rectangle = (raster.box_polygon(-0.5, -0.5 / aspect, 0.5, 0.5 / aspect),)
    return raster.polygon_shape(rectangle, size, rng.uniform(0, np.pi))


def generate_pose_example(
    rng: np.random.Generator, spec: PoseSpec = PoseSpec()
) -> dict[str, np.ndarray]:
    """One image with one stick figure, deterministic given the generator and `spec`.

    Returns, for H = W = spec.image_size:
      image: uint8 [H, W, 3] RGB.
      keypoints: float32 [17, 3] (x, y, v), `KEYPOINT_NAMES` order, continuous pixels inside the
        image; v = 2 if pixel (floor(y), floor(x)) shows the figure, 1 if occluded (0 never).
      box: float32 [4] absolute (x1, y1, x2, y2) tight around `mask` (x2 = last column + 1).
      mask: uint8 [H, W] 0/1 visible figure.
    """
    hw = spec.image_size
    image = raster.background(rng, hw)  # [3, H, W]
    height = rng.uniform(spec.min_height, spec.max_height) * hw
    max_angle = np.deg2rad(spec.max_rotation_deg)
    points = person_keypoints(rng, height, rng.uniform(-max_angle, max_angle)).astype(np.float64)
    thickness = max(spec.min_thickness_px,
                    rng.uniform(spec.min_thickness, spec.max_thickness) * height)
    bounds = person_shape(points, thickness).bounds()
    span = float((bounds[2:] - bounds[:2]).max())
    fit = hw - 1e-3
    if span > fit:
        # Shrink about the hips: the span becomes at most scale·(span − t) + t ≤ fit.
        scale = (fit - thickness) / (span - thickness)
        points *= scale
        height *= scale
        bounds = person_shape(points, thickness).bounds()
    offset = rng.uniform(0, np.maximum(hw - (bounds[2:] - bounds[:2]), 0)) - bounds[:2]
    keypoints = (points + offset).astype(np.float32)
    figure = rasterise_person(keypoints, thickness, hw)
    colour = raster.pick_colour(rng, image[:, figure].T, spec.min_contrast)
    image[:, figure] = colour[:, None]

    visible = figure.copy()
    need = spec.min_visible_fraction * figure.sum()
    for _ in range(int(rng.integers(spec.min_occluders, spec.max_occluders + 1))):
        for _ in range(spec.occluder_tries):
            shape = _occluder(rng, rng.uniform(spec.min_occluder_size,
                                               spec.max_occluder_size) * height)
            rows, cols = np.nonzero(visible)
            k = int(rng.integers(len(rows)))
            window, inside = raster.rasterise(shape, np.array([cols[k], rows[k]]) + 0.5, hw)
            if visible.sum() - (visible[window] & inside).sum() >= need:
                image_window = image[:, window[0], window[1]]  # a view
                colour = raster.pick_colour(rng, image_window[:, inside].T, spec.min_contrast)
                image_window[:, inside] = colour[:, None]
                visible[window] &= ~inside
                break

    # Uniform noise in ±√3·σ has standard deviation σ (as in `scenes`).
    half_width = np.float32(np.sqrt(3) * spec.noise_std)
    image += (rng.random(image.shape, dtype=np.float32) - np.float32(0.5)) * (2 * half_width)
    cols, rows = np.floor(keypoints).astype(np.int64).T
    v = np.where(visible[rows, cols], 2, 1).astype(np.float32)
    rows_any, cols_any = visible.any(axis=1), visible.any(axis=0)
    box = [cols_any.argmax(), rows_any.argmax(), hw - cols_any[::-1].argmax(),
           hw - rows_any[::-1].argmax()]
    return {
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy(),
        "keypoints": np.concatenate([keypoints, v[:, None]], axis=1),
        "box": np.asarray(box, np.float32),
        "mask": visible.astype(np.uint8),
    }
