"""What the config files share: the ``arg`` parser, loading a base config, common sections.

A config file loads this module with ``common = config_files.load_module(__file__,
"common.py")``. A config builds on at most one other config (:func:`base_config`, never a
chain) and then states only its differences.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections

from jaxdet import config_files

DATA_DIR = "~/.cache/jaxdet/tensorflow_datasets"
"""Where TFDS datasets (built or converted) are cached."""


def parse_arg(arg: str | None, config_file: str, variants: Sequence[str] = (),
              default: str | None = "") -> tuple[str, bool]:
    """``(variant, runlocal)`` from ``arg`` = comma-separated tokens: at most one of
    ``variants`` (``default`` when absent; required when ``default`` is None) and optionally
    ``runlocal`` (a seconds-long smoke run). Raises ValueError naming the file otherwise."""
    tokens = [t for t in (arg or "").split(",") if t]
    runlocal = "runlocal" in tokens
    chosen = [t for t in tokens if t != "runlocal"]
    if len(chosen) > 1 or any(t not in variants for t in chosen) or (
            default is None and not chosen):
        name = f"configs/{os.path.basename(config_file)}"
        if not variants:
            raise ValueError(f"{name}: arg {arg!r}; expected '' or 'runlocal'")
        expected = "one" if default is None else "at most one"
        raise ValueError(f"{name}: arg {arg!r}; expected {expected} of {tuple(variants)} plus "
                         "optionally 'runlocal'")
    return (chosen[0] if chosen else default), runlocal


def base_config(config_file: str, base_name: str, arg: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of ``base_name`` (a file next to ``config_file``), the one config
    that ``config_file`` builds on."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), base_name)
    return config_files.load(path + (f":{arg}" if arg else ""))


def scenes_detection_data(**overrides) -> ml_collections.ConfigDict:
    """The ``data`` section of detectors on the synthetic scenes (``jaxdet.data.scenes``):
    128 px, 2-6 objects, 2,000 / 200 images, ground truth padded to 8 rows."""
    data = ml_collections.ConfigDict()
    data.data_dir = DATA_DIR
    data.image_size = 128
    data.min_objects = 2
    data.max_objects = 6
    data.max_instances = 8  # G: ground truth padded to this many rows
    data.num_train = 2000
    data.num_val = 200
    data.seed = 0
    data.update(overrides)
    return data


def voc_detection_data(image_size: int, runlocal: bool) -> ml_collections.ConfigDict:
    """The data section of a detector on a Pascal VOC folder (``jaxdet.data.voc``; the fields
    are explained in ``configs/faster_rcnn_voc.py``); ``--config.data.path`` is required."""
    data = ml_collections.ConfigDict()
    data.source = "voc"
    data.path = ""  # required: --config.data.path=<VOC folder>
    data.data_dir = DATA_DIR
    data.image_size = image_size  # every image fitted into image_size squared and padded
    data.max_instances = 64  # G (VOC2012's most crowded image has 56 objects)
    data.class_names = ()  # () = the names in the XMLs, sorted
    data.keep_difficult = False
    data.skip_bad_records = False
    data.image_dir = "JPEGImages"
    data.annotation_dir = "Annotations"
    data.split_dir = "ImageSets/Main"
    data.val_fraction = 0.1  # without split files
    data.split_seed = 0
    # jaxdet.data.sources / augment (0 / () / False = off)
    data.random_flip = not runlocal
    data.resize_short = 0  # 0: fitted into the padded size
    data.resize_max = 0
    data.pad_sizes = ()  # () = ((image_size, image_size),)
    data.group_by_aspect_ratio = False  # True: batches padded to the nearest pad_sizes entry
    data.num_workers = 0  # > 0: input batches made in that many worker processes
    data.scale_jitter = ()  # e.g. (0.75, 1.25) for long schedules
    data.photometric = 0.0
    return data


def on_voc_folder(config: ml_collections.ConfigDict, runlocal: bool) -> None:
    """A scenes detector's config moved to a VOC folder: :func:`voc_detection_data` at 256 px
    (runlocal: 64) and the comparison budget, 1,000 steps x batch 4, evaluated at the end."""
    config.data = voc_detection_data(image_size=64 if runlocal else 256, runlocal=runlocal)
    if not runlocal:
        config.batch_size = 4
        config.num_train_steps = 1000
        config.eval_every_steps = 1000


def resnet_backbone(model: ml_collections.ConfigDict, width: int = 16) -> None:
    """ResNet-18 fields of ``model`` (:func:`jaxdet.models.resnet.create_resnet`)."""
    model.depth = 18
    model.width = width  # torchvision: 64
    model.stem = "imagenet"
    model.norm = "batch"  # "frozen" with imported weights (torchvision's choice)
    model.input_norm = "imagenet"
    model.dtype = ""  # "" float32, or e.g. "bfloat16" (boxes stay float32)


def global_head_model(backbone: str) -> ml_collections.ConfigDict:
    """The ``model`` section of one-object heads (localisation, pose:
    ``jaxdet.models.global_heads``): a small VGG or a ResNet-18 of width 16, pooled."""
    model = ml_collections.ConfigDict()
    model.backbone = backbone  # "vgg" or "resnet"
    model.norm = "batch"
    model.depth = 18
    model.width = 16
    model.stem = "imagenet"
    model.input_norm = "imagenet"  # mean/std of ImageNet, as torchvision weights need
    model.vgg_widths = (16, 32, 64, 128, 128)  # stage s gives "C{s}" at stride 2**s
    model.vgg_convs = (1, 1, 2, 2, 2)
    model.pool = "flatten"
    model.feature = "C5"
    model.hidden = 256
    return model


def tiny_global_head_runlocal(config: ml_collections.ConfigDict) -> None:
    """``runlocal`` of the one-object heads: 32 px images, tiny backbones, 6 steps of 8."""
    config.data.image_size = 32
    config.data.num_train = 16
    config.data.num_val = 8
    tiny_resnet(config.model)
    config.model.vgg_widths = (4, 8, 8, 8, 8)
    config.model.hidden = 16
    runlocal_loop(config)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 6
    config.checkpoint_every_steps = 3


def tiny_resnet(model: ml_collections.ConfigDict) -> None:
    """A one-block-per-stage ResNet of width 4 (``runlocal``)."""
    model.width = 4
    model.depth = 0
    model.stage_sizes = (1, 1, 1, 1)
    model.block = "basic"


def loss_weights_and_sweeps(config: ml_collections.ConfigDict, terms: Sequence[str],
                            weights: dict[str, float] | None = None) -> None:
    """``config.loss.<term>_weight`` (1.0 unless in ``weights``) and empty one-program sweeps
    over each weight and the learning rate (``config.sweep``; a non-empty tuple trains one
    member per value, ``jaxdet.train.sweep``)."""
    weights = weights or {}
    if "loss" not in config:
        config.loss = ml_collections.ConfigDict()
    config.sweep = ml_collections.ConfigDict()
    for term in terms:
        config.loss[f"{term}_weight"] = float(weights.get(term, 1.0))
        config.sweep[f"{term}_weight"] = ()
    config.sweep.learning_rate = ()
    config.sweep_strategy = "unroll"  # or "vmap", "map" (see jaxdet/train/sweep.py)


def optimizer(name: str = "adam", learning_rate: float = 2e-3, warmup_steps: int = 100,
              grad_clip_norm: float = 10.0,
              schedule: str = "cosine") -> ml_collections.ConfigDict:
    """The ``optimizer`` section (:func:`jaxdet.train.state.make_optimizer`)."""
    return ml_collections.ConfigDict(dict(
        name=name, learning_rate=learning_rate, schedule=schedule, warmup_steps=warmup_steps,
        grad_clip_norm=grad_clip_norm))


def sgd_detection_optimizer() -> ml_collections.ConfigDict:
    """torchvision's detection optimizer: SGD lr 0.02, heavy-ball momentum 0.9, L2 weight decay
    1e-4, 50 warm-up steps, cosine; gradients clipped at global norm 10 (a guard: without it lr
    0.02 can diverge early)."""
    config = optimizer("momentum", 0.02, warmup_steps=50, grad_clip_norm=10.0, schedule="cosine")
    config.update(dict(momentum=0.9, nesterov=False, weight_decay=1e-4))
    return config


def small_budget_two_stage(model: ml_collections.ConfigDict) -> None:
    """A two-stage detector's ``model`` fields for training from scratch on a small budget
    (``configs/faster_rcnn_voc.py``'s recipe): ResNet-18 of width 64 with group norm, FPN of 128
    channels, torchvision's anchors (32-512 px), 1,000 training proposals, 256 sampled RoIs."""
    model.update(dict(depth=18, width=64, norm="group", frozen_stages=0, fpn_channels=128))
    model.rpn.anchor_sizes = ((32,), (64,), (128,), (256,), (512,))
    model.rpn.update(dict(pre_nms_top_n_train=2000, post_nms_top_n_train=1000,
                          pre_nms_top_n_test=1000, post_nms_top_n_test=1000))
    model.roi.update(dict(canonical_size=224.0, batch_size_per_image=256,
                          representation_size=1024))


def small_budget_on_coco(config: ml_collections.ConfigDict, runlocal: bool) -> None:
    """A COCO config (torchvision's architecture and schedule) moved to training from scratch on
    a small budget: contiguous labels, :func:`sgd_detection_optimizer`, group norm, aligned
    RoIAlign and (unless ``runlocal``) :func:`small_budget_two_stage`, images fitted into 256 px,
    1,000 steps x batch 4 evaluated at the end (``configs/faster_rcnn_voc.py``'s comparison
    budget)."""
    config.init_from = ""
    config.data.category_labels = "contiguous"
    config.optimizer = sgd_detection_optimizer()
    config.model.norm = "group"
    config.model.roi.aligned = True
    if runlocal:
        return
    small_budget_two_stage(config.model)
    config.data.update(dict(image_size=256, resize_short=0, resize_max=0, max_instances=64))
    config.batch_size, config.eval_batch_size = 4, 8
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 1000


def training_loop(config: ml_collections.ConfigDict, *, batch_size: int, eval_batch_size: int,
                  num_train_steps: int, log_every_steps: int, eval_every_steps: int,
                  checkpoint_every_steps: int, keep_checkpoints: int = 2,
                  max_nonfinite_steps: int = 5, num_prediction_images: int = 6) -> None:
    """The loop's fields (:func:`jaxdet.train.loop.train_and_evaluate`)."""
    config.batch_size = batch_size
    config.eval_batch_size = eval_batch_size
    config.eval_split = "validation"
    config.eval_limit = 0  # 0: every example of the split
    config.num_train_steps = num_train_steps
    config.log_every_steps = log_every_steps
    config.eval_every_steps = eval_every_steps
    config.checkpoint_every_steps = checkpoint_every_steps
    config.keep_checkpoints = keep_checkpoints
    config.max_nonfinite_steps = max_nonfinite_steps  # 0: stop at the first non-finite loss
    config.recompile_policy = "warn"  # a step compiling again after warm-up: warn|fail|off
    config.recompile_after_steps = 1
    config.num_prediction_images = num_prediction_images
    config.tensorboard_images = 4  # prediction pictures in TensorBoard at each evaluation
    config.progress_bar = True
    config.compilation_cache_dir = ""


def runlocal_loop(config: ml_collections.ConfigDict) -> None:
    """A seconds-long smoke run: 4 steps of 4 examples, a checkpoint every 2, no evaluation
    during training, no warm-up."""
    config.batch_size = 4
    config.eval_batch_size = 4
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 2
    config.optimizer.warmup_steps = 0
    config.num_prediction_images = 2
    config.tensorboard_images = 0


def postprocess(score_thresh: float = 0.05, nms_thresh: float = 0.5,
                detections_per_img: int = 100) -> ml_collections.ConfigDict:
    """``config.model.postprocess`` of every detector: keep scores ``> score_thresh``, NMS per
    class at ``nms_thresh``, at most ``detections_per_img`` per image."""
    return ml_collections.ConfigDict(dict(score_thresh=score_thresh, nms_thresh=nms_thresh,
                                          detections_per_img=detections_per_img))
