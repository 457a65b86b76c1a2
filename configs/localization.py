r"""Classification + localisation: one big shape (16-48 px) per 64x64 image, its class and box.

Launch (the multi-task loss is class cross-entropy + box_weight x box regression loss):

  python -m jaxdet.main --config=configs/localization.py --workdir=workdirs/loc
  python -m jaxdet.main --config=configs/localization.py --workdir=workdirs/loc_l1 \
      --config.loss.box_loss=l1 --config.loss.box_weight=2.0
  python -m jaxdet.main --config=configs/localization.py:runlocal --workdir=/tmp/loc_smoke

A sweep over box weights, every member trained by one compiled program and the best chosen by
the validation metric (``correct_and_iou50``), saved in ``workdir/best``:

  python -m jaxdet.main --config=configs/localization.py --workdir=workdirs/loc_sweep \
      --config.sweep.box_weight='(0.3, 1.0, 3.0, 10.0, 30.0)'

``arg`` is a comma-separated list: optionally ``resnet`` (a ResNet-18 backbone of width 16
instead of the small VGG) and optionally ``runlocal`` (a tiny smoke run of seconds).
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    backbone, runlocal = common.parse_arg(arg, __file__, ("vgg", "resnet"), default="vgg")
    config = ml_collections.ConfigDict()
    config.task = "localization"
    config.seed = 0
    config.data = ml_collections.ConfigDict(dict(
        data_dir=common.DATA_DIR, image_size=64, num_train=4000, num_val=500, seed=0))
    # One big object: 16-48 px at 64x64, a quarter to three quarters of the image side
    # (0, 0 = the scenes' default range scaled to 64 px, 6-35 px).
    config.data.min_size = 16
    config.data.max_size = 48
    config.model = common.global_head_model(backbone)
    config.model.box_format = "cxcywh"  # or "xyxy"; normalised by the image size

    config.loss = ml_collections.ConfigDict()
    config.loss.box_loss = "smooth_l1"  # "l2", "l1" or "smooth_l1"
    config.loss.smooth_l1_beta = 0.05  # in normalised units (3.2 px at 64 px)
    # box weight 2: chosen by validation correct_and_iou50 (experiments/sweeps/)
    common.loss_weights_and_sweeps(config, ("box", "class"), {"box": 2.0})
    config.optimizer = common.optimizer("adam", 1e-2, warmup_steps=100, grad_clip_norm=0.0)
    common.training_loop(config, batch_size=32, eval_batch_size=100, num_train_steps=1000,
                         log_every_steps=100, eval_every_steps=500, checkpoint_every_steps=500,
                         max_nonfinite_steps=0, num_prediction_images=8)
    if runlocal:
        common.tiny_global_head_runlocal(config)
        config.data.min_size, config.data.max_size = 8, 24
    return config
