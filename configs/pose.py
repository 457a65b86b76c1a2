r"""Pose estimation as joint regression: one stick figure (17 COCO joints) per 64x64 image.

Launch:

  python -m jaxdet.main --config=configs/pose.py --workdir=workdirs/pose
  python -m jaxdet.main --config=configs/pose.py --workdir=workdirs/pose_l2 \
      --config.loss.joint_loss=l2
  python -m jaxdet.main --config=configs/pose.py:runlocal --workdir=/tmp/pose_smoke

The loss is ``joint_weight`` x the regression loss over visible joints (v = 2); the metric
is PCK@0.2 of the figure's box size. ``arg``: optionally ``resnet`` (ResNet-18 of width 16
instead of the small VGG) and optionally ``runlocal`` (a tiny smoke run of seconds).
"""

import ml_collections

_VARIANTS = ("vgg", "resnet")


def _parse(arg: str | None) -> tuple[str, bool]:
    tokens = [t for t in (arg or "").split(",") if t]
    runlocal = "runlocal" in tokens
    variants = [t for t in tokens if t != "runlocal"]
    if len(variants) > 1 or any(t not in _VARIANTS for t in variants):
        raise ValueError(
            f"configs/pose.py: arg {arg!r}; expected at most one of {_VARIANTS} "
            "plus optionally 'runlocal'"
        )
    return (variants[0] if variants else "vgg"), runlocal


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, runlocal = _parse(arg)
    config = ml_collections.ConfigDict()
    config.task = "pose"
    config.variant = variant
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.data_dir = "~/.cache/jaxdet/tensorflow_datasets"
    config.data.image_size = 64
    config.data.num_train = 4000
    config.data.num_val = 500
    config.data.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.backbone = variant
    config.model.norm = "batch"
    config.model.depth = 18
    config.model.width = 16
    config.model.stem = "imagenet"
    config.model.input_norm = "imagenet"  # mean/std of ImageNet, as torchvision weights need
    config.model.vgg_widths = (16, 32, 64, 128, 128)  # stage s gives "C{s}" at stride 2**s
    config.model.vgg_convs = (1, 1, 2, 2, 2)
    config.model.pool = "flatten"
    config.model.feature = "C5"
    config.model.hidden = 256

    config.loss = ml_collections.ConfigDict()
    config.loss.joint_weight = 1.0
    config.loss.joint_loss = "smooth_l1"  # "l2", "l1" or "smooth_l1"
    config.loss.smooth_l1_beta = 0.02  # in normalised units (1.3 px at 64 px)

    config.sweep = ml_collections.ConfigDict()
    config.sweep.joint_weight = ()
    config.sweep.learning_rate = ()
    config.sweep_strategy = "unroll"  # or "vmap", "map" (see jaxdet/train/sweep.py)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"
    # 1e-2: at 3e-3 the class head sat at chance (accuracy 0.31 after 500 steps, 0.52 at 1e-2,
    # 0.86 at step 750); the same plateau as in segmentation (experiments/segmentation/).
    config.optimizer.learning_rate = 1e-2
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.optimizer.grad_clip_norm = 0.0

    config.batch_size = 32
    config.eval_batch_size = 100
    config.eval_split = "validation"
    config.eval_limit = 0
    # 1,500: PCK@0.2 0.921 at step 1,500 of a 2,000-step run
    config.num_train_steps = 1500
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2
    config.max_nonfinite_steps = 0
    config.recompile_policy = "warn"  # a step compiling again after warm-up: warn|fail|off
    config.recompile_after_steps = 1
    config.num_prediction_images = 8
    config.progress_bar = True
    config.compilation_cache_dir = ""

    if runlocal:
        config.data.image_size = 32
        config.data.num_train = 16
        config.data.num_val = 8
        config.model.width = 4
        config.model.depth = 0
        config.model.stage_sizes = (1, 1, 1, 1)
        config.model.block = "basic"
        config.model.vgg_widths = (4, 8, 8, 8, 8)
        config.model.hidden = 16
        config.batch_size = 8
        config.eval_batch_size = 8
        config.num_train_steps = 6
        config.log_every_steps = 2
        config.eval_every_steps = 0
        config.checkpoint_every_steps = 3
        config.optimizer.warmup_steps = 0
        config.num_prediction_images = 2
    return config
