"""Procedural stick figures with the 17 COCO person keypoints (pure NumPy).

The embedded pose dataset of jaxdet: one articulated "person" per image on the textured
background of `scenes`, with COCO-style keypoints (x, y, visibility), its tight box and its
visible mask. `generate_pose_example` draws one example from a `np.random.Generator`; the same
generator state gives the same example. The figure is built in two reusable steps,
`person_keypoints` (a random pose) and `rasterise_person` / `person_shape` (the drawing of any
17-keypoint pose), so that the multi-object scenes can paint persons with the same code.

Coordinates: continuous pixel coordinates as in `scenes`: pixel (row i, col j) covers
[j, j+1) × [i, i+1), its centre is (j + 0.5, i + 0.5), and a keypoint (x, y) lies in pixel
(floor(y), floor(x)). x goes right, y goes down.

Difficulty (the defaults of `PoseSpec`; the tests pin the heights, rotation, sides, keypoint
visibility, occlusion rate and flat colours; the percentages below were measured on 1,500
draws):

* 64×64 RGB images with exactly one figure, facing the viewer: the person's left side
  (`left_*` keypoints) is on the image's right before rotation.
* Figure height 35–90 % of the image side, uniform, where height = ankles to top of head of the
  upright figure with straight legs (every body length is a fixed fraction of it; shoulder and
  hip widths vary by ±15 %). A pose that would not fit the image (raised arms, spread legs at
  the largest heights) is shrunk about its hips until it just fits: that happens to about
  1 % of the figures. The whole figure lies inside the image, at a uniform random position.
* Pose: arms from −10° (across the body) to 170° (raised) at the shoulder, elbows bent by up to
  ±135°; thighs from −10° to 50° (spread), knees bent by up to ±45°; no wrist, knee or ankle
  crosses the body's midline, so left and right limbs never swap sides. The head tilts by up
  to ±25° on its neck; the face keypoints (nose, eyes, ears) sit at fixed places of the head
  disc given that tilt, so they follow from the drawing. The whole figure is rotated by up to
  ±20°.
* Drawing: limbs and neck are capsules of width 5–8 % of the height (at least 2 px), the torso
  is the filled quadrilateral of shoulders and hips, the head is a disc of radius 8.5 % of
  the height (at least large enough to contain the face keypoints' pixels). Every keypoint's
  pixel is on the drawn figure. Flat colour, no anti-aliasing.
* Occluders: 0–2 per image (count uniform), each a flat-colour disc or rectangle (aspect 1–3,
  any angle) of size 20–50 % of the figure's height, centred on a random visible pixel of the
  figure and painted over it. A placement that would leave less than 50 % of the figure's
  pixels visible is redrawn (10 tries, then that occluder is left out: about 0.4 % of them).
  A keypoint whose pixel an occluder covers has visibility 1 (labelled, not visible), every
  other keypoint 2; about 65 % of the images have at least one occluded keypoint.
* Colours: the figure's and each occluder's colour are uniform in the RGB cube, redrawn by the
  rule of `scenes` (contrast 60 with at least 90 % of what it covers), independent of the pose.
  Background as in `scenes` (two colours blended by smooth noise, stripes of a third). Every
  pixel gets uniform noise of standard deviation 4 (±7).
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
    """Parameters of the pose generator; the defaults are the pinned difficulty above.

    Attributes:
      image_size: height = width of the square image, in pixels (at least 16).
      min_height, max_height: range of the figure height as a fraction of image_size.
      min_thickness, max_thickness: range of the limb width as a fraction of the height.
      min_thickness_px: limb width floor in pixels (≥ 1.5, so every joint's pixel is drawn).
      max_rotation_deg: the whole figure is rotated uniformly in ±this.
      min_occluders, max_occluders: inclusive range of the number of occluders per image.
      min_occluder_size, max_occluder_size: range of an occluder's size (longer side of its
        box; diameter of a disc) as a fraction of the figure height.
      min_visible_fraction: occluders leave at least this fraction of the figure visible.
      occluder_tries: placements tried per occluder before it is left out.
      noise_std: standard deviation of the per-pixel uniform noise (0–255 scale).
      min_contrast: RGB distance a colour keeps from what it covers (rule of `scenes`).
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
    """[2, 2] (middle joint, end joint) of a two-segment limb in the body frame (y up).

    `side` is +1 for the person's left (x > 0), -1 for the right; angles are drawn in degrees
    from hanging straight down, positive away from the body, redrawn until both joints keep
    to their side of the midline and the second segment is within ±`max_second`; the limb
    hangs straight down if no draw qualifies.
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
    """A random articulated pose, float32 [17, 2] (x, y) in `KEYPOINT_NAMES` order.

    Continuous image coordinates (x right, y down) relative to the middle of the hips, which is
    at the origin; `height` in pixels (ankles to top of head of the upright figure with straight
    legs); the figure faces the viewer (the person's left on the image's right) and is then
    rotated by `angle` radians (positive = clockwise on screen, as `scenes`). Joint limits and
    proportions: see the module docstring. Draws from `rng` a fixed number of times.
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
    """The polygon [V, 2] ordered the way `raster.Shape.contains` expects (as `raster.box_polygon`:
    negative shoelace sum in y-down coordinates)."""
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
    """(centre [2], radius) of the head disc: centred between the ears, radius from their
    distance, enlarged if needed so the pixel of every face keypoint has its centre inside."""
    centre = keypoints[3:5].mean(0)
    radius = float(np.hypot(*(keypoints[3] - keypoints[4]))) / (2 * _EAR_U)
    reach = float(np.hypot(*(keypoints[:5] - centre).T).max()) + _PIXEL_REACH
    return centre, max(radius, reach)


def person_shape(keypoints: np.ndarray, thickness: float) -> raster.Shape:
    """The figure of a 17-keypoint pose as a `scenes` shape (convex polygons and discs).

    Args:
      keypoints: [17, 2] (x, y) continuous pixel coordinates, `KEYPOINT_NAMES` order (a
        [17, 3] array's first two columns).
      thickness: limb width in pixels; with thickness ≥ √2 every body keypoint's pixel centre
        is inside the figure (the head disc always contains the face keypoints' pixels).

    Returns the union of: a capsule of width `thickness` per `SKELETON` limb, the torso
    (shoulders and hips, filled), the head disc and a neck capsule from the middle of the
    shoulders to the head's centre.
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
    """bool [hw, hw] mask of `person_shape(keypoints, thickness)` on an hw×hw image.

    A pixel is inside when its centre is (no anti-aliasing); parts outside the image are
    clipped. Only the figure's box is evaluated, so it is cheap per figure.
    """
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
    """Draws one image with one stick figure. Deterministic given the generator and `spec`.

    Returns a dict with, for H = W = spec.image_size:
      image: uint8 [H, W, 3] RGB.
      keypoints: float32 [17, 3] (x, y, v) in `KEYPOINT_NAMES` order; (x, y) continuous pixel
        coordinates (pixel (row i, col j) covers [j, j+1) × [i, i+1), its centre is
        (j + 0.5, i + 0.5)), always inside the image; v = 2 if the keypoint's pixel
        (floor(y), floor(x)) shows the figure, v = 1 if an occluder covers it (COCO
        "labelled but not visible"). v = 0 (not labelled) does not occur.
      box: float32 [4] (x1, y1, x2, y2) absolute pixels, tight around `mask`: x1 = first
        column, x2 = last column + 1 (same for y).
      mask: uint8 [H, W] 0/1 visible part of the figure (after occluders).
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
