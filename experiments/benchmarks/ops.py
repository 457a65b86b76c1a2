"""Benchmark of the jit'd detection ops next to torchvision's C++ kernels, in one process.

Run: python experiments/benchmarks/ops.py  (needs the `ref` extra: torch + torchvision)
Results are recorded in experiments/benchmarks/README.md.
"""

# --- section: IoU and NMS ---

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
    return rows
