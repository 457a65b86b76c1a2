"""Random detection batches for the benchmarks: no dataset, the shapes a config trains on."""

from __future__ import annotations

from typing import Any

import numpy as np


def random_detection_batch(config: Any, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 images of ``config.data.pad_sizes[0]`` (else ``image_size`` squared), 2-6 random
    boxes per image (labels 0-3); with a ``model.mask`` section box-filling ``gt_masks`` of
    ``data.mask_crop_size``, with a ``model.keypoint`` section visible keypoints inside each
    box; ``index`` and ``mask`` as the input pipeline adds them."""
    pads = config.data.get("pad_sizes", ()) or ()
    h, w = (int(v) for v in pads[0]) if pads else (config.data.image_size,) * 2
    wh_max = np.asarray([w, h], np.float32)  # box coordinates are (x, y)
    g = config.data.max_instances
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, min(6, g) + 1, batch_size)
    xy = rng.uniform(0, 1, (batch_size, g, 2)) * wh_max * 0.6
    wh = rng.uniform(10, min(h, w) * 0.4, (batch_size, g, 2))
    batch = {
        "image": rng.integers(0, 255, (batch_size, h, w, 3), dtype=np.uint8),
        "gt_boxes": np.concatenate([xy, np.minimum(xy + wh, wh_max)], -1).astype(np.float32),
        "gt_labels": rng.integers(0, 4, (batch_size, g)).astype(np.int32),
        "gt_valid": np.arange(g)[None] < counts[:, None],
        "image_hw": np.tile(np.asarray([h, w], np.int32), (batch_size, 1)),
        "orig_hw": np.tile(np.asarray([h, w], np.int32), (batch_size, 1)),
        "index": np.arange(batch_size, dtype=np.int32),
        "mask": np.ones(batch_size, np.float32),
    }
    if "mask" in config.model:
        m = int(config.data.get("mask_crop_size", 56))
        batch["gt_masks"] = np.full((batch_size, g, m, m), 255, np.uint8)
    if "keypoint" in config.model:
        k = int(config.model.keypoint.get("num_keypoints", 17))
        boxes = batch["gt_boxes"]
        u = rng.uniform(0, 1, (batch_size, g, k, 2))
        x = boxes[..., None, 0] + u[..., 0] * (boxes[..., None, 2] - boxes[..., None, 0])
        y = boxes[..., None, 1] + u[..., 1] * (boxes[..., None, 3] - boxes[..., None, 1])
        batch["gt_keypoints"] = np.stack([x, y, np.full_like(x, 2.0)], -1).astype(np.float32)
    return batch
