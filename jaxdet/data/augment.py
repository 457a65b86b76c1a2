"""Augmentations on raw examples (NumPy), consistent across image, boxes, masks and keypoints.

So far: horizontal flip (issue 9's augmentation half is otherwise still open: resize, scale
jitter with crop, photometric jitter, padding to declared sizes).

Example fields handled (the format of :mod:`jaxdet.data.scenes_tfds` / :mod:`jaxdet.data.coco`):
``image`` ``[H, W, 3]``; ``segmentation`` ``[H, W, 1]``; ``objects/bbox`` ``[N, 4]`` (x1, y1,
x2, y2) absolute continuous pixels (pixel column ``j`` covers ``[j, j + 1)``);
``objects/mask`` ``[N, H, W, 1]``; ``objects/keypoints`` ``[N, K, 3]`` (x, y, v) in the same
continuous coordinates, ``v = 0`` (not labelled) rows all zeros. Other fields pass through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def flip_pairs_from_names(names: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of keypoints named ``left_*`` / ``right_*`` (COCO's names)."""
    index = {n: i for i, n in enumerate(names)}
    return [(i, index["right_" + n[5:]]) for i, n in enumerate(names)
            if n.startswith("left_") and "right_" + n[5:] in index]


def hflip(example: Mapping[str, Any], flip_pairs: Sequence[tuple[int, int]] = ()
          ) -> dict[str, Any]:
    """``example`` mirrored left-right.

    Boxes: ``(x1, y1, x2, y2) -> (W - x2, y1, W - x1, y2)``. Keypoints: ``x -> W - x`` for
    labelled points (``v > 0``), then the rows of each ``flip_pairs`` pair swapped (a left
    wrist becomes the right wrist). Image, masks and the label map are mirrored along W.
    """
    image = np.asarray(example["image"])
    w = image.shape[1]
    out = dict(example)
    out["image"] = image[:, ::-1].copy()
    if "segmentation" in example:
        out["segmentation"] = np.asarray(example["segmentation"])[:, ::-1].copy()
    if "objects" in example:
        objects = dict(example["objects"])
        if "bbox" in objects:
            boxes = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
            objects["bbox"] = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0],
                                        boxes[:, 3]], axis=1).astype(np.float32)
        if "mask" in objects:
            objects["mask"] = np.asarray(objects["mask"])[:, :, ::-1].copy()
        if "keypoints" in objects:
            kp = np.asarray(objects["keypoints"], np.float32).copy()
            labelled = kp[..., 2] > 0
            kp[..., 0] = np.where(labelled, w - kp[..., 0], kp[..., 0])
            for i, j in flip_pairs:
                kp[:, [i, j]] = kp[:, [j, i]]
            objects["keypoints"] = kp
        out["objects"] = objects
    return out


class FlipDoubled:
    """A training source of ``2 N`` examples: ``i < N`` is ``source[i]``, ``N + i`` its
    horizontal flip (:func:`hflip`). Deterministic and resumable with the pipeline's
    seeded shuffle: each epoch sees every image once as is and once mirrored, in shuffled
    order (a random flip with probability 1/2 per draw, without epoch-dependent state)."""

    def __init__(self, source: Sequence[Mapping[str, Any]],
                 flip_pairs: Sequence[tuple[int, int]] = ()):
        self.source, self.flip_pairs = source, tuple(flip_pairs)

    def __len__(self) -> int:
        return 2 * len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.source)
        if not 0 <= index < 2 * n:
            raise IndexError(f"index {index} outside [0, {2 * n})")
        if index < n:
            return self.source[index]
        return hflip(self.source[index - n], self.flip_pairs)
