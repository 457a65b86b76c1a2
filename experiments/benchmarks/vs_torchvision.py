"""jaxdet against torchvision: the same detector, batch, size and precision, train step and
inference timed in alternating blocks in one process.

  python experiments/benchmarks/vs_torchvision.py [--model=faster|mask] [--depth=18|50]
      [--batch=4 --image_size=256 --rounds=5 --warmup=2 --steps_per_block=3]
      [--precision=f32|bf16] [--device=cpu|cuda]
      [--out=FILE]

Both sides: ResNet-``depth``-FPN from scratch, frozen batch norm, stem and layer1 frozen
(torchvision's ``trainable_layers=3``), torchvision's defaults for everything else (anchors,
2,000 / 1,000 proposals kept in training / inference, 512 sampled RoIs, NMS 0.7 / 0.5, 100
detections), ``--image_size`` squared inputs (torchvision: ``min_size = max_size``, so its
transform does not resize), SGD (momentum 0.9, weight decay 1e-4, ``--learning_rate``: its
default 1e-4 keeps both models near their initialisation, so torchvision's data-dependent
proposal and detection counts stay at their maxima as a trained model's do; at 0.02 without
warm-up its RPN degenerates within a few random batches and it times fewer boxes). jaxdet:
``configs/faster_rcnn_coco.py`` / ``mask_rcnn_coco.py`` with those sizes, ``model.depth``,
``model.frozen_stages=2`` and, for ``bf16``, ``model.dtype=bfloat16``; torchvision under
``torch.autocast`` for ``bf16``. The batch: random images with 2-6 random boxes (masks filling
the boxes), the same for both. Each round runs ``--steps_per_block`` back-to-back jaxdet train
steps, then as many torchvision train steps, jaxdet inference batches, torchvision inference
batches; the medians leave out the first ``--warmup`` rounds (compilation, warm-up) and the
first step of each block: a step right after the other library's runs in a colder process
(jaxdet's train step maps its XLA temporaries afresh each call, ~0.75 GB for Faster and 1.9 GB
for Mask R-CNN here, and those page faults cost about three times the system time after a
torchvision step), which neither library's own training loop sees. ``--steps_per_block=1``
gives the interleaved single steps, all kept. ``torch.set_num_threads(os.cpu_count())``. Both
share the process's C heap (e.g. ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` applies to both).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.modules.setdefault("triton", None)  # torchvision.ops beside other native libraries

from experiments.benchmarks.random_batches import random_detection_batch  # noqa: E402
from experiments.benchmarks.timing import machine  # noqa: E402


class JaxdetSide(NamedTuple):
    """jaxdet's detector of a comparison: its config, the random batch (NumPy), the initial train
    state, the compiled train step, the jitted inference function, and the batch as each takes it
    (``sharded`` over the mesh, ``plain`` arrays)."""

    config: Any
    batch: dict
    state: Any
    train_step: Any
    predict: Any
    sharded: dict
    plain: dict


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The detector, batch, precision and settings arguments (``profile_detector.py`` too)."""
    p.add_argument("--model", choices=["faster", "mask"], default="faster")
    p.add_argument("--depth", type=int, choices=[18, 50], default=18)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    p.add_argument("--num_classes", type=int, default=80)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--score_thresh", type=float, default=0.0,
                   help="detection score threshold of both sides (torchvision's default 0.05 "
                        "drops every detection of an untrained 81-class model, whose scores are "
                        "~1/81, so it would skip NMS and the mask head: 0 keeps 100 per image)")
    p.add_argument("--mask_rois", type=int, default=0,
                   help="jaxdet's static mask-head RoI slots per image in training (0: every "
                        "foreground slot, 128 of 512; torchvision runs the head on the actual "
                        "positives, a random subset of N of them is the same loss in "
                        "expectation)")


def jaxdet_side(args: argparse.Namespace) -> JaxdetSide:
    """jaxdet's detector with the comparison's settings (module docstring) on a random batch."""
    import jax

    from jaxdet import config_files
    from jaxdet.data import pipeline
    from jaxdet.tasks import detection as det_task
    from jaxdet.train import loop
    from jaxdet.train import state as state_lib
    from jaxdet.train import step as step_lib

    name = "mask_rcnn_coco.py" if args.model == "mask" else "faster_rcnn_coco.py"
    config = config_files.load(os.path.join(REPO, "configs", name))
    for item in [f"data.image_size={args.image_size}", f"model.depth={args.depth}",
                 "model.frozen_stages=2", f"batch_size={args.batch}", "optimizer.warmup_steps=0",
                 f"optimizer.learning_rate={args.learning_rate}",
                 f"model.postprocess.score_thresh={args.score_thresh}",
                 "data.max_instances=8", "data.mask_crop_size=28",
                 *([f"model.mask.rois_per_image={args.mask_rois}"] if args.model == "mask"
                   else []),
                 *(["model.dtype=bfloat16"] if args.precision == "bf16" else [])]:
        config_files.override(config, item)
    names = [f"class_{i}" for i in range(args.num_classes)]
    det_task.class_names = lambda _config: names  # no dataset is read here
    batch = random_detection_batch(config, args.batch)
    mesh = step_lib.make_mesh()
    state = loop.initial_state(det_task, config, mesh, {k: v[0] for k, v in batch.items()})
    train_step = loop.make_train_step(det_task, config, mesh, state_lib.make_optimizer(config),
                                      [])
    model = det_task.create_model(config, bn_axis_name=None)
    predict = jax.jit(det_task.make_predict_fn(model, config))
    sharded = pipeline.to_global_batch(batch, mesh)
    plain = {k: jax.numpy.asarray(v) for k, v in batch.items()}
    return JaxdetSide(config, batch, state, train_step, predict, sharded, plain)


def torchvision_side(batch, model_kind: str, depth: int, num_classes: int, size: int,
                     device: str, learning_rate: float, score_thresh: float):
    """``(model, optimizer, images, targets)`` of torchvision on the same batch."""
    import numpy as np
    import torch
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None,
                                   trainable_layers=3)
    cls = MaskRCNN if model_kind == "mask" else FasterRCNN
    model = cls(backbone, num_classes=num_classes + 1, min_size=size, max_size=size,
                box_score_thresh=score_thresh).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=learning_rate, momentum=0.9, weight_decay=1e-4)
    images, targets = [], []
    for i in range(len(batch["image"])):
        images.append(torch.from_numpy(batch["image"][i]).permute(2, 0, 1).float().div(255)
                      .to(device))
        n = int(np.sum(batch["gt_valid"][i]))
        boxes = torch.from_numpy(batch["gt_boxes"][i, :n]).to(device)
        target = {"boxes": boxes,
                  "labels": torch.from_numpy(batch["gt_labels"][i, :n].astype(np.int64) + 1)
                  .to(device)}
        if model_kind == "mask":
            masks = torch.zeros((n, size, size), dtype=torch.uint8)
            for k, (x1, y1, x2, y2) in enumerate(batch["gt_boxes"][i, :n].astype(int)):
                masks[k, y1:y2, x1:x2] = 1
            target["masks"] = masks.to(device)
        targets.append(target)
    return model, opt, images, targets


def positives_line(config: Any, batch: int, jax_positives: list[float],
                   tv_positives: list[float]) -> str:
    """The sampled positive RoIs per image of both sides (means of the train steps); for Mask
    R-CNN the RoIs each side's mask head ran on per batch: torchvision's positives, jaxdet's
    static slots (whole chunks holding its packed positives; with ``--mask_rois`` below the
    positives per image, an upper bound: only the first slots of each image are packed)."""
    from jaxdet.detection import faster_rcnn, mask_head

    jax_mean, tv_mean = statistics.mean(jax_positives), statistics.mean(tv_positives)
    text = (f"Sampled positive RoIs per image: jaxdet {jax_mean:.1f}, torchvision "
            f"{tv_mean:.1f}")
    spec = faster_rcnn.DetectorSpec.from_config(config.model, 1)
    if spec.mask is None:
        return text + "; "
    per_image = mask_head.MaskBranch(spec.mask, 1, spec.roi).num_rois
    slots = statistics.mean(mask_head.training_head_slots(round(p * batch), batch, per_image)
                            for p in jax_positives)
    return (text + f". RoIs through the mask head per batch of {batch} in training: jaxdet "
            f"{slots:.0f} slots ({jax_mean * batch:.1f} positive), torchvision "
            f"{tv_mean * batch:.1f} (its positives); ")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="rounds run first, left out")
    p.add_argument("--steps_per_block", type=int, default=3,
                   help="back-to-back steps of each side per round, the first left out (1: "
                        "interleaved single steps, all kept)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", default="")
    args = p.parse_args()

    import jax
    import torch

    from jaxdet.train import compile_guard

    side = jaxdet_side(args)
    batch, train_step, predict = side.batch, side.train_step, side.predict
    sharded, plain = side.sharded, side.plain

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    tv_model, tv_opt, images, targets = torchvision_side(
        batch, args.model, args.depth, args.num_classes, args.image_size, args.device,
        args.learning_rate, args.score_thresh)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16,
                              enabled=args.precision == "bf16")

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    # The RoIs torchvision's mask head runs on in training: the sampled positives per image.
    positives: list[float] = []
    select = tv_model.roi_heads.select_training_samples

    def counting_select(*a, **k):
        out = select(*a, **k)
        positives.append(sum(int((labels > 0).sum()) for labels in out[2]) / len(out[2]))
        return out

    tv_model.roi_heads.select_training_samples = counting_select
    jax_positives: list[float] = []
    holder = [side.state]

    def jax_train():
        holder[0], metrics = train_step(holder[0], sharded)
        jax.block_until_ready(metrics["loss"])
        jax_positives.append(float(metrics.get("fg_rois_per_image", float("nan"))))

    def tv_train():
        tv_model.train()
        with autocast:
            loss = sum(tv_model(images, targets).values())
        tv_opt.zero_grad()
        loss.backward()
        tv_opt.step()
        sync()

    def jax_infer():
        st = holder[0]
        jax.block_until_ready(predict(st.params, st.batch_stats, plain)["boxes"])

    def tv_infer():
        tv_model.eval()
        with torch.no_grad(), autocast:
            tv_model(images)
        sync()

    phases = {"jax_train": jax_train, "tv_train": tv_train, "jax_infer": jax_infer,
              "tv_infer": tv_infer}
    # times[k][round]: the step times of one block; the first step after the other side's
    # block is left out where a block has several (see the module docstring).
    times: dict[str, list[list[float]]] = {k: [] for k in phases}
    for r in range(args.warmup + args.rounds):
        for name, fn in phases.items():
            block = []
            for _ in range(args.steps_per_block):
                t = time.perf_counter()
                fn()
                block.append(time.perf_counter() - t)
            times[name].append(block)
        print(f"round {r}: " + ", ".join(
            f"{k} {' '.join(f'{x:.3f}' for x in v[-1])} s" for k, v in times.items())
              + f"; jaxdet train-step compilations {compile_guard.compilations(train_step)}",
              flush=True)
    first = 1 if args.steps_per_block > 1 else 0
    times = {k: [x for block in v[args.warmup:] for x in block[first:]]
             for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    b = args.batch
    kind = "Mask R-CNN" if args.model == "mask" else "Faster R-CNN"
    text = "\n".join([
        f"{kind} ResNet-{args.depth}-FPN, batch {b} at {args.image_size}², {args.precision}"
        + (f", jaxdet mask RoI slots {args.mask_rois or 'all'}" if args.model == "mask" else "")
        + ", "
        f"{args.rounds} rounds of {args.steps_per_block}-step blocks after {args.warmup}; "
        f"{machine()}, "
        f"device {args.device} ({jax.devices()[0].device_kind}); jax {jax.__version__}, "
        f"torch {torch.__version__}; load {os.getloadavg()[0]:.2f}.",
        "", "| | jaxdet images/s | torchvision images/s | jaxdet / torchvision |",
        "|---|---:|---:|---:|",
        f"| train step | {b / med['jax_train']:.2f} | {b / med['tv_train']:.2f} | "
        f"**{med['tv_train'] / med['jax_train']:.2f}×** |",
        f"| inference | {b / med['jax_infer']:.2f} | {b / med['tv_infer']:.2f} | "
        f"**{med['tv_infer'] / med['jax_infer']:.2f}×** |", "",
        positives_line(side.config, args.batch, jax_positives, positives)
        + f"detection score threshold {args.score_thresh} on both sides.", ""])
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
