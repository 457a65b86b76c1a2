"""Benchmark of the jit'd detection ops next to torchvision's C++ kernels, in one process.

Run: python experiments/benchmarks/ops.py  (needs the `ref` extra: torch + torchvision)
Results are recorded in experiments/benchmarks/README.md.
"""

# --- section: IoU and NMS ---
import os
import statistics
import time
from collections.abc import Callable

import numpy as np


def _clustered_boxes(n: int, objects: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Detector-like input: n boxes jittered (5% of size) around `objects` boxes in a
    1000 x 1000 image; at IoU 0.5 full greedy NMS keeps about one box per object."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 1000, (objects, 2))
    size = rng.uniform(16, 160, (objects, 2))
    owner = rng.integers(0, objects, n)
    c = centre[owner] + rng.normal(0, 0.05, (n, 2)) * size[owner]
    wh = size[owner] * np.exp(rng.normal(0, 0.05, (n, 2)))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    scores = ((rng.permutation(n) + 0.5) / n).astype(np.float32)  # no ties
    return boxes, scores


def _uniform_boxes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes 8-128 px at uniform positions in 800 x 800: most survive NMS at 0.5."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 800, (n, 2))
    wh = rng.uniform(8, 128, (n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    return boxes, ((rng.permutation(n) + 0.5) / n).astype(np.float32)


def _time_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], reps: int):
    """Median seconds per call of two functions, measured interleaved (shared noise)."""
    fn_a(), fn_b()  # warm up (compiles the jit'd one)
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


def bench_iou_nms() -> list[str]:
    """Rows: jit'd jaxdet op vs torchvision's kernel, per call, and their ratio."""
    import jax
    import jax.numpy as jnp
    import torch
    import torchvision

    from jaxdet import ops

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)  # XLA:CPU's pool already uses every core
    rows = [
        f"IoU and NMS: jax {jax.__version__}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, {threads} threads (torch.set_num_threads; XLA default)",
        f"{'case':<62}{'jaxdet ms':>11}{'torchvision ms':>16}{'ratio':>8}",
    ]

    def row(name: str, ours: float, ref: float) -> str:
        return f"{name:<62}{ours * 1e3:>11.3f}{ref * 1e3:>16.3f}{ours / ref:>8.2f}"

    rng = np.random.default_rng(0)
    a = _uniform_boxes(1000, 1)[0]
    b = _uniform_boxes(100, 2)[0]
    iou = jax.jit(ops.box_iou)
    aj, bj, at, bt = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_allclose(iou(aj, bj), torchvision.ops.box_iou(at, bt).numpy(), rtol=1e-5)
    ours, ref = _time_pair(
        lambda: iou(aj, bj).block_until_ready(), lambda: torchvision.ops.box_iou(at, bt), 200
    )
    rows.append(row("box_iou 1,000 x 100", ours, ref))

    cases = [
        ("nms 1,000 -> 100, clustered (100 objects)", _clustered_boxes(1000, 100, 3), 100, 100),
        ("nms 1,000 -> 100, uniform", _uniform_boxes(1000, 4), 100, 100),
        ("nms 10,000 -> 1,000, clustered (1,000 obj.)", _clustered_boxes(10000, 1000, 5), 1000, 15),
        ("nms 10,000 -> 1,000, uniform", _uniform_boxes(10000, 6), 1000, 15),
    ]
    for name, (boxes, scores), k, reps in cases:
        bj, sj = jnp.asarray(boxes), jnp.asarray(scores)
        bt, st = torch.from_numpy(boxes), torch.from_numpy(scores)
        full = torchvision.ops.nms(bt, st, 0.5).numpy()
        keep = np.asarray(ops.nms(bj, sj, 0.5, k))
        expected = np.full(k, -1)
        expected[: min(k, len(full))] = full[:k]
        np.testing.assert_array_equal(keep, expected)  # same kept boxes, same order
        ours, ref = _time_pair(
            lambda bj=bj, sj=sj, k=k: ops.nms(bj, sj, 0.5, k).block_until_ready(),
            lambda bt=bt, st=st: torchvision.ops.nms(bt, st, 0.5),
            reps,
        )
        rows.append(row(f"{name} [full NMS keeps {len(full)}]", ours, ref))

    boxes, scores = _clustered_boxes(10000, 1000, 7)
    classes = rng.integers(0, 80, 10000).astype(np.int32)
    bj, sj, cj = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes)
    bt, st, ct = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes)
    full = torchvision.ops.batched_nms(bt, st, ct, 0.5).numpy()
    expected = np.full(1000, -1)
    expected[: min(1000, len(full))] = full[:1000]
    np.testing.assert_array_equal(ops.batched_nms(bj, sj, cj, 0.5, 1000), expected)
    ours, ref = _time_pair(
        lambda: ops.batched_nms(bj, sj, cj, 0.5, 1000).block_until_ready(),
        lambda: torchvision.ops.batched_nms(bt, st, ct, 0.5),
        15,
    )
    rows.append(row(f"batched_nms 10,000 (80 classes) -> 1,000 [{len(full)}]", ours, ref))
    return rows


# --- section: RoIAlign and RoIPool ---


def _roi_median_seconds(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds per call of each ``{name: zero-argument function}``, calls interleaved
    so that they share the machine's noise."""
    import statistics
    import time

    for fn in fns.values():
        fn()  # warm-up: compiles the jit'd ones
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _roi_boxes(seed: int, n: int, height: int, width: int):
    """Proposal-like float32 ``[n, 4]`` boxes inside the image, sides 16-512 px (log-uniform),
    so that every FPN level gets RoIs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    side = np.exp(rng.uniform(np.log(16), np.log(512), (n, 2)))
    x1 = rng.uniform(0, width - side[:, 0])
    y1 = rng.uniform(0, height - side[:, 1])
    return np.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1).astype(np.float32)


def bench_roi() -> list[str]:
    """Rows: jit'd multi-level / single-level RoIAlign and RoIPool vs torchvision, per call.

    Detector shapes: 2 images of 800 x 1088, 256 channels, FPN levels 2-5, 512 RoIs per image,
    7 x 7 bins, sampling ratio 2. The multi-level op runs with aligned=False, like
    torchvision's MultiScaleRoIAlign, and outputs are checked equal before timing.
    """
    import os
    from collections import OrderedDict

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torchvision
    from torchvision.ops import MultiScaleRoIAlign

    from jaxdet import ops

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)  # XLA:CPU's pool already uses every core
    batch, channels, rois, height, width = 2, 256, 512, 800, 1088
    rng = np.random.default_rng(0)
    shapes = [(height >> lv, width >> lv) for lv in (2, 3, 4, 5)]
    feats = [rng.standard_normal((batch, h, w, channels), dtype=np.float32) for h, w in shapes]
    boxes = np.stack([_roi_boxes(1 + i, rois, height, width) for i in range(batch)])
    rows = [
        f"RoIAlign and RoIPool: jax {jax.__version__}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, {threads} threads; {batch} images {height}x{width}, "
        f"{channels} ch, {rois} RoIs/image, 7x7, sampling 2",
        f"{'case':<46}{'jaxdet ms':>11}{'torchvision ms':>16}{'ratio':>8}",
    ]

    def row(name: str, ours: float, ref: float) -> str:
        return f"{name:<46}{ours * 1e3:>11.1f}{ref * 1e3:>16.1f}{ours / ref:>8.2f}"

    # Multi-level RoIAlign, forward.
    feats_j = [jnp.asarray(f) for f in feats]
    boxes_j = jnp.asarray(boxes)
    fwd = jax.jit(jax.vmap(lambda fs, b: ops.multilevel_roi_align(fs, b, (7, 7), 2, aligned=False)))
    feats_t = OrderedDict(
        (str(i), torch.from_numpy(f).permute(0, 3, 1, 2).contiguous()) for i, f in enumerate(feats)
    )
    boxes_t = [torch.from_numpy(b) for b in boxes]
    pooler = MultiScaleRoIAlign(list(feats_t), output_size=7, sampling_ratio=2)
    sizes = [(height, width)] * batch
    ours = np.asarray(fwd(feats_j, boxes_j)).reshape(batch * rois, 7, 7, channels)
    ref = pooler(feats_t, boxes_t, sizes).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    t = _roi_median_seconds(
        {
            "ours": lambda: jax.block_until_ready(fwd(feats_j, boxes_j)),
            "ref": lambda: pooler(feats_t, boxes_t, sizes),
        },
        reps=5,
    )
    rows.append(row("multi-level RoIAlign forward", t["ours"], t["ref"]))

    # Multi-level RoIAlign, forward + backward (cotangent of ones).
    def fwd_bwd(fs, b):
        out, vjp = jax.vjp(
            lambda x: jax.vmap(
                lambda f, bb: ops.multilevel_roi_align(f, bb, (7, 7), 2, aligned=False)
            )(x, b),
            fs,
        )
        return out, vjp(jnp.ones_like(out))[0]

    fwd_bwd = jax.jit(fwd_bwd)
    feats_g = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats_t.items())

    def torch_fwd_bwd():
        for v in feats_g.values():
            v.grad = None
        out = pooler(feats_g, boxes_t, sizes)
        out.backward(torch.ones_like(out))

    torch_fwd_bwd()
    grads = fwd_bwd(feats_j, boxes_j)[1]
    for i, v in enumerate(feats_g.values()):
        np.testing.assert_allclose(
            np.asarray(grads[i]), v.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4
        )
    t = _roi_median_seconds(
        {"ours": lambda: jax.block_until_ready(fwd_bwd(feats_j, boxes_j)), "ref": torch_fwd_bwd},
        reps=3,
    )
    rows.append(row("multi-level RoIAlign forward+backward", t["ours"], t["ref"]))

    # Single level (stride 16 map, 50 x 68): RoIAlign (aligned) and RoIPool, forward.
    f16 = feats[2]
    f16_j, f16_t = jnp.asarray(f16), torch.from_numpy(f16).permute(0, 3, 1, 2).contiguous()
    align = jax.jit(jax.vmap(lambda f, b: ops.roi_align(f, b, (7, 7), 1 / 16, 2, True)))
    pool = jax.jit(jax.vmap(lambda f, b: ops.roi_pool(f, b, (7, 7), 1 / 16)))
    np.testing.assert_allclose(
        np.asarray(align(f16_j, boxes_j)).reshape(batch * rois, 7, 7, channels),
        torchvision.ops.roi_align(f16_t, boxes_t, 7, 1 / 16, 2, True).permute(0, 2, 3, 1).numpy(),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_array_equal(
        np.asarray(pool(f16_j, boxes_j)).reshape(batch * rois, 7, 7, channels),
        torchvision.ops.roi_pool(f16_t, boxes_t, 7, 1 / 16).permute(0, 2, 3, 1).numpy(),
    )
    t = _roi_median_seconds(
        {
            "align": lambda: jax.block_until_ready(align(f16_j, boxes_j)),
            "align_ref": lambda: torchvision.ops.roi_align(f16_t, boxes_t, 7, 1 / 16, 2, True),
            "pool": lambda: jax.block_until_ready(pool(f16_j, boxes_j)),
            "pool_ref": lambda: torchvision.ops.roi_pool(f16_t, boxes_t, 7, 1 / 16),
        },
        reps=5,
    )
    rows.append(row("roi_align 50x68 (stride 16) forward", t["align"], t["align_ref"]))
    rows.append(row("roi_pool 50x68 (stride 16) forward", t["pool"], t["pool_ref"]))

    # RoIPool's sparse table costs the same for any number of RoIs; the reference's loop
    # grows with it: Fast R-CNN tests on 2000 proposals per image.
    many = np.stack([_roi_boxes(10 + i, 2000, height, width) for i in range(batch)])
    many_j, many_t = jnp.asarray(many), [torch.from_numpy(b) for b in many]
    t = _roi_median_seconds(
        {
            "pool": lambda: jax.block_until_ready(pool(f16_j, many_j)),
            "pool_ref": lambda: torchvision.ops.roi_pool(f16_t, many_t, 7, 1 / 16),
        },
        reps=3,
    )
    rows.append(row("roi_pool 50x68, 2000 RoIs/image, forward", t["pool"], t["pool_ref"]))
    return rows


if __name__ == "__main__":
    for rows in (bench_iou_nms(), bench_roi()):
        print("\n".join(rows), end="\n\n", flush=True)
