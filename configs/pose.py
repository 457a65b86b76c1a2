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

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    backbone, runlocal = common.parse_arg(arg, __file__, ("vgg", "resnet"), default="vgg")
    config = ml_collections.ConfigDict()
    config.task = "pose"
    config.seed = 0
    config.data = ml_collections.ConfigDict(dict(
        data_dir=common.DATA_DIR, image_size=64, num_train=4000, num_val=500, seed=0))
    config.model = common.global_head_model(backbone)

    config.loss = ml_collections.ConfigDict()
    config.loss.joint_loss = "smooth_l1"  # "l2", "l1" or "smooth_l1"
    config.loss.smooth_l1_beta = 0.02  # in normalised units (1.3 px at 64 px)
    common.loss_weights_and_sweeps(config, ("joint",))
    config.optimizer = common.optimizer("adam", 1e-2, warmup_steps=100, grad_clip_norm=0.0)
    common.training_loop(config, batch_size=32, eval_batch_size=100, num_train_steps=1500,
                         log_every_steps=100, eval_every_steps=500, checkpoint_every_steps=500,
                         max_nonfinite_steps=0, num_prediction_images=8)
    if runlocal:
        common.tiny_global_head_runlocal(config)
    return config
