"""Images/s of the compiled Faster / Mask / Keypoint R-CNN train step, with a backbone / RPN /
RoI-heads split.

  python experiments/benchmarks/train_step.py [--config=configs/faster_rcnn_shapes.py]
      [--batch=8] [--steps=10] [--out=experiments/benchmarks/train_step.md] [-- overrides]

On a machine without TensorFlow/TFDS/grain (the lent GPU machines), run it through
``experiments/benchmarks/without_input_stack.py``.

Three programs are compiled on the same random batch (uint8 images of the config's size, 2-6
random boxes per image; with a ``model.mask`` section box-shaped ``gt_masks`` of
``data.mask_crop_size``, with a ``model.keypoint`` section 17 visible keypoints inside each box; no
input pipeline) and each is timed as the median of ``--steps`` calls after a compile call:

1. ``backbone``: forward + backward of ResNet + FPN (loss = mean of every pyramid level);
2. ``+ rpn``: the same plus the RPN head, anchor matching and sampling, the two RPN losses and
   proposal generation (top-k, decode, NMS per level);
3. ``full``: the whole train step of ``jaxdet.train.step`` (RoI sampling, RoIAlign, box head,
   4 losses, the mask / keypoint branch and its loss where the config has one, optimizer
   update).

The breakdown is by difference (2 - 1 = RPN, 3 - 2 = RoI heads and optimizer): each program
is timed whole, so XLA's fusion across the boundaries is what the full step really gets.
Overrides are ``key=value`` pairs applied to the config (``model.width=64``).
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from experiments.benchmarks.random_batches import random_detection_batch  # noqa: E402
from experiments.benchmarks.timing import first_and_median, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/faster_rcnn_shapes.py")
    parser.add_argument("--batch", type=int, default=0, help="default: config.batch_size")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="")
    parser.add_argument("--num_classes", type=int, default=80,
                        help="real-data configs (COCO, VOC): object classes of the heads, "
                             "since no dataset is read here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    from jaxdet import config_files
    from jaxdet.data import pipeline
    from jaxdet.detection import rpn
    from jaxdet.tasks import detection as det_task
    from jaxdet.train import loop
    from jaxdet.train import state as state_lib
    from jaxdet.train import step as step_lib

    config = config_files.load(os.path.join(REPO, args.config))
    for item in args.overrides:
        config_files.override(config, item)
    if config.data.get("source", "scenes") != "scenes":  # no dataset to read class names from
        names = [f"class_{i}" for i in range(args.num_classes)]
        det_task.class_names = lambda _config: names
    batch_size = args.batch or config.batch_size
    size = config.data.image_size
    batch = random_detection_batch(config, batch_size)
    mesh = step_lib.make_mesh()
    example = {k: v[0] for k, v in batch.items()}
    state = loop.initial_state(det_task, config, mesh, example)
    model = det_task.create_model(config, bn_axis_name=None)
    gbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    images = det_task.model_input(gbatch)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(gbatch["index"])

    def backbone_loss(params, stats):
        feats, _ = model.apply({"params": params, "batch_stats": stats}, images,
                               method=lambda m, x: m.features(x, True), mutable=["batch_stats"])
        return sum(jnp.mean(f) for f in feats)

    def rpn_loss(params, stats):
        def run(m, x):
            feats = m.features(x, True)
            obj, deltas = m.rpn(feats)
            anchors = m.anchors(feats, x.shape[1:3])
            terms, _ = rpn.batch_losses(m.spec.rpn, obj, deltas, jnp.concatenate(anchors),
                                        gbatch, keys, jnp.ones(len(keys), bool))
            props, _, valid = rpn.batch_proposals(m.spec.rpn, obj, deltas, anchors,
                                                  gbatch["image_hw"].astype(jnp.float32), True)
            return (terms["rpn_objectness"][0] + terms["rpn_box"][0]
                    + 0.0 * jnp.sum(jnp.where(valid[..., None], props, 0.0)))
        out, _ = model.apply({"params": params, "batch_stats": stats}, images, method=run,
                             mutable=["batch_stats"])
        return out

    grad_backbone = jax.jit(jax.grad(backbone_loss))
    grad_rpn = jax.jit(jax.grad(rpn_loss))
    train_step = loop.make_train_step(det_task, config, mesh, state_lib.make_optimizer(config), [])
    sharded = pipeline.to_global_batch(batch, mesh)
    params, stats = state.params, state.batch_stats

    holder = [state]  # the train step donates its state: always pass the newest

    def full_step():
        holder[0], metrics = train_step(holder[0], sharded)
        return metrics["loss"]

    rows = []
    for name, fn, fargs in (("backbone (ResNet + FPN), fwd+bwd", grad_backbone, (params, stats)),
                            ("+ RPN (head, targets, losses, proposals)", grad_rpn,
                             (params, stats)),
                            ("full train step (+ RoI heads, optimizer)", None, None)):
        if fn is None:
            compile_s, per_call = first_and_median(full_step, calls=args.steps)
        else:
            compile_s, per_call = first_and_median(fn, *fargs, calls=args.steps)
        rows.append((name, compile_s, per_call))
    full = rows[-1][2]
    parts = [rows[0][2], rows[1][2] - rows[0][2], rows[2][2] - rows[1][2]]
    kind = ("Mask R-CNN" if "mask" in config.model else
            "Keypoint R-CNN" if "keypoint" in config.model else "Faster R-CNN")
    lines = [
        f"{kind} train step, `{args.config}` {' '.join(args.overrides)}, batch "
        f"{batch_size} at {size}x{size}, backbone ResNet-{config.model.depth} width "
        f"{config.model.width}, levels {config.model.levels}, dtype "
        f"{config.model.get('dtype') or 'float32'}.",
        f"Machine: {machine()}, devices "
        f"{[d.device_kind for d in jax.devices()]}, jax {jax.__version__}.",
        "",
        "| program | compile + first call s | median s/call | images/s |",
        "|---|---|---|---|",
    ]
    for name, compile_s, per_call in rows:
        lines.append(f"| {name} | {compile_s:.1f} | {per_call:.4f} | "
                     f"{batch_size / per_call:.1f} |")
    lines += ["", "Breakdown of the full step (by difference): backbone "
              f"{parts[0] / full:.0%}, RPN {parts[1] / full:.0%}, RoI heads (+ mask / "
              "keypoint branch) + optimizer "
              f"{parts[2] / full:.0%}."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
