"""jaxdet vs torchvision Faster R-CNN trained with the same budget on the same VOC folder.

  python experiments/peer_training/compare.py \
      --set shapes=/tmp/voc_shapes --set textures=/tmp/voc_textures --set clutter=/tmp/voc_clutter \
      [--steps=1000 --batch=4 --image_size=256] [--sides=torchvision,jaxdet] \
      [--jaxdet_config=configs/faster_rcnn_voc.py] [--jaxdet_override=optimizer.name=adam ...] \
      [--workroot=workdirs/peer] [--out=experiments/results/peer_training.md]

Folders: ``python -m jaxdet.data.synthetic_voc --out=DIR --style=STYLE`` (2,000 / 200 images).

Sides (each run once per set and cached in ``WORKROOT/SET/SIDE/result.json``; ``--force``
reruns):

* ``torchvision``: ``FasterRCNN(resnet_fpn_backbone("resnet18", weights=None), C + 1,
  min_size=max_size=image_size)`` with torchvision's defaults otherwise (frozen batch norm,
  stem and layer1 frozen, 512 RoIs, 2,000 proposals), from scratch; SGD lr 0.02, momentum 0.9,
  weight decay 1e-4, linear warm-up over 50 steps from 0.001x then cosine to 0; horizontal
  flips (p = 0.5); ``--steps`` x ``--batch`` images drawn by epochs of a seeded shuffle;
  ``torch.set_num_threads(os.cpu_count())``.
* ``jaxdet``: ``python -m jaxdet.main --config=JAXDET_CONFIG`` with ``data.path``,
  ``data.image_size``, ``batch_size``, ``num_train_steps`` and one final evaluation set from
  the flags (plus any ``--jaxdet_override``); its ``coco_results.json`` is re-scored here.

Both sides' detections on the validation split are scored by the same call
(:class:`jaxdet.metrics.coco_eval.CocoEvaluator`, pycocotools) against ground truth read from
the XML files (image id = position in the validation split as jaxdet's VOC conversion orders
it, classes sorted by name).
Train images/s: the median over logging intervals (jaxdet: the loop's ``steps_per_sec``;
torchvision: per-step times after the first 5 steps) times the batch; wall: the whole side,
dataset conversion, compilation, training and evaluation included. Writes a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.modules.setdefault("triton", None)  # torchvision.ops after TensorFlow: see README notes

from experiments.benchmarks.timing import machine  # noqa: E402
from jaxdet.data import local_tfds, voc  # noqa: E402
from jaxdet.metrics.coco_eval import CocoEvaluator  # noqa: E402

METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AR100")


def read_split(folder: str, split: str) -> list[tuple[str, voc.VocRecord]]:
    """``[(image path, parsed XML)]`` of ``split`` ("train" / "validation") in the order
    jaxdet's VOC conversion reads it (:meth:`jaxdet.data.voc.VocConfig.splits`), so that the
    position is jaxdet's ``image_id``."""
    config = voc.VocConfig(name="peer_training", path=folder)
    out = []
    for stem in config.splits()[split]:
        record = voc.parse_xml(os.path.join(config.dir(config.annotation_dir), f"{stem}.xml"))
        out.append((local_tfds.find_image(config.dir(config.image_dir), record.filename),
                    record))
    return out


def class_names(folder: str) -> list[str]:
    names = set()
    for split in ("train", "validation"):
        for _, record in read_split(folder, split):
            names.update(o.name for o in record.objects)
    return sorted(names)


def evaluator_with_gt(folder: str, names: list[str]) -> CocoEvaluator:
    ev = CocoEvaluator(names)
    for image_id, (_, record) in enumerate(read_split(folder, "validation")):
        boxes = np.array([o.box for o in record.objects], np.float32).reshape(-1, 4)
        labels = np.array([names.index(o.name) for o in record.objects], np.int32)
        h, w = record.size
        ev.add_ground_truth(image_id, boxes, labels, np.ones(len(labels), bool), h, w)
    return ev


def score(folder: str, names: list[str], records: list[dict]) -> dict[str, float]:
    """COCO box metrics of result records ``{image_id, category_id (1-based), bbox xywh,
    score}`` on the folder's validation split."""
    ev = evaluator_with_gt(folder, names)
    by_image: dict[int, list[dict]] = {}
    for r in records:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    for image_id, rows in by_image.items():
        xywh = np.array([r["bbox"] for r in rows], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        ev.add_detections(image_id, boxes, np.array([r["score"] for r in rows], np.float32),
                          np.array([r["category_id"] - 1 for r in rows], np.int32),
                          np.ones(len(rows), bool))
    stats = ev.summarize()
    return {k: float(stats[k]) for k in METRICS}


# --------------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------------


def _load_image(path: str):
    import torch
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255


def torchvision_examples(folder: str, split: str, names: list[str], limit: int = 0):
    """``(images, targets)`` of a split as torchvision's detection models take them: float
    ``[3, H, W]`` in [0, 1]; ``{"boxes": [N, 4] (x1, y1, x2, y2) px, "labels": [N] 1-based}``."""
    import torch

    rows = read_split(folder, split)
    rows = rows[:limit] if limit else rows
    images = [_load_image(path) for path, _ in rows]
    targets = [{"boxes": torch.tensor([o.box for o in r.objects], dtype=torch.float32
                                      ).reshape(-1, 4),
                "labels": torch.tensor([names.index(o.name) + 1 for o in r.objects],
                                       dtype=torch.int64)} for _, r in rows]
    return images, targets


def torchvision_model_and_optimizer(num_classes: int, image_size: int):
    """torchvision's Faster R-CNN ResNet-18-FPN from scratch (its defaults otherwise) and the
    SGD of the recipe (lr 0.02, momentum 0.9, weight decay 1e-4 on trainable parameters)."""
    import torch
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    model = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None),
                       num_classes=num_classes + 1, min_size=image_size, max_size=image_size)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)


def train_torchvision(folder: str, names: list[str], steps: int, batch: int, image_size: int,
                      seed: int = 0) -> dict:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.monotonic()
    images, targets = torchvision_examples(folder, "train", names)
    model, opt = torchvision_model_and_optimizer(len(names), image_size)
    warmup = 50

    def factor(step: int) -> float:
        if step < warmup:
            return 0.001 + (1 - 0.001) * step / warmup
        return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(steps - warmup, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    step_times, losses = [], []
    model.train()
    for step in range(steps):
        while len(order) < batch:
            order.extend(rng.permutation(len(images)).tolist())
        idx, order = order[:batch], order[batch:]
        ims, tgs = [], []
        for i in idx:
            im, tg = images[i], dict(targets[i])
            if rng.random() < 0.5:
                w = im.shape[-1]
                im = im.flip(-1)
                b = tg["boxes"].clone()
                b[:, [0, 2]] = w - tg["boxes"][:, [2, 0]]
                tg["boxes"] = b
            ims.append(im)
            tgs.append(tg)
        t0 = time.perf_counter()
        loss_dict = model(ims, tgs)
        loss = sum(loss_dict.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step_times.append(time.perf_counter() - t0)
        losses.append(float(loss))
        if step % 50 == 0 or step == steps - 1:
            print(f"torchvision step {step}: loss {np.mean(losses[-50:]):.3f} "
                  f"{batch / statistics.median(step_times[-50:]):.2f} images/s", flush=True)
    train_wall = time.monotonic() - start
    model.eval()
    records_out = []
    val_paths = [path for path, _ in read_split(folder, "validation")]
    with torch.no_grad():
        for k in range(0, len(val_paths), 8):
            ims = [_load_image(path) for path in val_paths[k:k + 8]]
            for j, out in enumerate(model(ims)):
                for box, sc, lab in zip(out["boxes"].tolist(), out["scores"].tolist(),
                                        out["labels"].tolist(), strict=True):
                    records_out.append({"image_id": k + j, "category_id": int(lab),
                                        "bbox": [box[0], box[1], box[2] - box[0],
                                                 box[3] - box[1]], "score": float(sc)})
    return {"records": records_out, "train_images_per_s": batch / statistics.median(
        step_times[5:] or step_times), "wall_s": time.monotonic() - start,
        "train_wall_s": train_wall, "final_loss": float(np.mean(losses[-50:]))}


# --------------------------------------------------------------------------------------------
# jaxdet
# --------------------------------------------------------------------------------------------


def train_jaxdet(folder: str, workdir: str, config: str, overrides: list[str], steps: int,
                 batch: int, image_size: int) -> dict:
    flags = [f"--config.data.path={folder}", f"--config.data.image_size={image_size}",
             f"--config.batch_size={batch}", f"--config.num_train_steps={steps}",
             f"--config.eval_every_steps={steps}", f"--config.checkpoint_every_steps={steps}",
             "--config.progress_bar=False"]
    flags += [f"--config.{o}" for o in overrides]
    cmd = [sys.executable, "-m", "jaxdet.main", f"--config={config}", f"--workdir={workdir}",
           *flags]
    print("+", " ".join(cmd), flush=True)
    start = time.monotonic()
    subprocess.run(cmd, check=True, cwd=REPO)
    wall = time.monotonic() - start
    with open(os.path.join(workdir, "coco_results.json")) as f:
        records = json.load(f)
    rates, losses = [], []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "train/steps_per_sec" in row:
                rates.append(row["train/steps_per_sec"])
                losses.append(row.get("train/loss", float("nan")))
    return {"records": records, "train_images_per_s": batch * statistics.median(rates[1:]
                                                                                  or rates),
            "wall_s": wall, "final_loss": losses[-1] if losses else float("nan"),
            "command": " ".join(cmd[1:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", required=True, help="NAME=VOC_FOLDER")
    p.add_argument("--sides", default="torchvision,jaxdet")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--jaxdet_config", default="configs/faster_rcnn_voc.py")
    p.add_argument("--jaxdet_override", action="append", default=[],
                   help="config override without the --config. prefix, e.g. optimizer.name=adam")
    p.add_argument("--tag", default="", help="suffix of the jaxdet side's name (ablations)")
    p.add_argument("--workroot", default="workdirs/peer")
    p.add_argument("--out", default="")
    p.add_argument("--force", action="store_true")
    args = p.parse_args()

    rows = []
    for entry in args.set:
        name, folder = entry.split("=", 1)
        folder = os.path.abspath(os.path.expanduser(folder))
        names = class_names(folder)
        for side in [s for s in args.sides.split(",") if s]:
            label = side + (f"[{args.tag}]" if side == "jaxdet" and args.tag else "")
            out_dir = os.path.join(args.workroot, f"{name}_{args.steps}x{args.batch}",
                                   label.replace("[", "_").replace("]", ""))
            cached = os.path.join(out_dir, "result.json")
            if os.path.exists(cached) and not args.force:
                with open(cached) as f:
                    result = json.load(f)
            else:
                os.makedirs(out_dir, exist_ok=True)
                if side == "torchvision":
                    result = train_torchvision(folder, names, args.steps, args.batch,
                                               args.image_size)
                elif side == "jaxdet":
                    result = train_jaxdet(folder, os.path.join(out_dir, "workdir"),
                                          args.jaxdet_config, args.jaxdet_override,
                                          args.steps, args.batch, args.image_size)
                else:
                    raise SystemExit(f"--sides: unknown side {side!r}")
                result["metrics"] = score(folder, names, result.pop("records"))
                with open(cached, "w") as f:
                    json.dump(result, f, indent=1)
            rows.append((name, label, result))
            print(name, label, json.dumps(result["metrics"]), flush=True)

    head = ("| set | side | " + " | ".join(METRICS) + " | train images/s | wall | final loss |\n"
            "|---|---|" + "---:|" * (len(METRICS) + 3))
    lines = [f"Budget: {args.steps} steps x batch {args.batch} at {args.image_size} px; "
             f"{machine()}.", "", head]
    for name, label, r in rows:
        m = r["metrics"]
        lines.append(f"| {name} | {label} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS)
                     + f" | {r['train_images_per_s']:.2f} | {r['wall_s'] / 60:.1f} min | "
                     f"{r['final_loss']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
