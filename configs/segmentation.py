r"""Semantic segmentation on the embedded synthetic scenes (128x128, background + 4 shapes).

Launch (the default variant is the encoder-decoder with max-unpooling):

  python -m jaxdet.main --config=configs/segmentation.py --workdir=workdirs/seg_unpool
  python -m jaxdet.main --config=configs/segmentation.py:transpose --workdir=workdirs/seg_tconv
  python -m jaxdet.main --config=configs/segmentation.py:runlocal --workdir=/tmp/seg_smoke
  python -m jaxdet.main --config=configs/segmentation.py:fcn --workdir=workdirs/seg_fcn \
      --config.num_train_steps=500

``arg`` is a comma-separated list: one model variant and optionally ``runlocal`` (a tiny smoke
run of seconds). Variants:

  unpool          encoder-decoder, max-pool down, max-unpool up (switches remembered), skips
  transpose       encoder-decoder, max-pool down, learned 2x2 stride-2 transpose conv up
  nearest         encoder-decoder, nearest-neighbour up
  bed_of_nails    encoder-decoder, bed-of-nails up
  bilinear        encoder-decoder, bilinear up
  strided         encoder-decoder, strided-conv down, transpose conv up
  fcn             full-resolution fully-convolutional net (no downsampling)
  sliding_window  patch classifier on crops around each pixel (the slow baseline)
  colour          1x1 convolutions only: a per-pixel colour classifier (lower bound)
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")

VARIANTS = ("unpool", "transpose", "nearest", "bed_of_nails", "bilinear", "strided", "fcn",
            "sliding_window", "colour")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, runlocal = common.parse_arg(arg, __file__, VARIANTS, default="unpool")
    config = ml_collections.ConfigDict()
    config.task = "segmentation"
    config.seed = 0
    config.data = ml_collections.ConfigDict(dict(
        data_dir=common.DATA_DIR, image_size=128, min_objects=2, max_objects=6, num_train=2000,
        num_val=200, seed=0))

    config.model = ml_collections.ConfigDict()
    config.model.name = "encoder_decoder"
    config.model.norm = "batch"
    config.model.bn_momentum = 0.9
    # Narrow at full resolution, wide at the bottom (stride 32).
    config.model.level_widths = (8, 16, 32, 64, 128, 256)
    config.model.level_blocks = (1, 1, 2, 2, 2, 2)
    config.model.decoder_blocks = 1
    # Upsample the deeper map with all its channels (max-unpool: channel c goes where encoder
    # channel c mod C had its maximum).
    config.model.upsample_input = "full"
    config.model.upsample_projection = "block"
    config.model.downsample = "max_pool"
    config.model.upsample = "max_unpool"
    config.model.skip = "concat"
    config.model.transpose_kernel_size = 2
    if variant == "transpose":
        config.model.upsample = "transpose_conv"
    elif variant in ("nearest", "bed_of_nails", "bilinear"):
        config.model.upsample = variant
    elif variant == "strided":
        config.model.downsample = "strided_conv"
        config.model.upsample = "transpose_conv"
    elif variant == "fcn":
        config.model = ml_collections.ConfigDict(
            {"name": "fcn_full_res", "norm": "batch", "bn_momentum": 0.9,
             "fcn_width": 32, "fcn_depth": 8}
        )
    elif variant == "sliding_window":
        config.model = ml_collections.ConfigDict(
            {"name": "sliding_window", "norm": "batch", "bn_momentum": 0.9, "patch_size": 25,
             "patch_width": 16, "patch_stages": 2, "patch_padding": "reflect",
             "train_stride": 8, "eval_stride": 1, "crop_chunk": 16384}
        )
    elif variant == "colour":
        config.model = ml_collections.ConfigDict(
            {"name": "pixel_colour", "norm": "batch", "bn_momentum": 0.9,
             "pixel_width": 32, "pixel_depth": 3}
        )

    config.loss = ml_collections.ConfigDict()
    config.loss.weights = ml_collections.ConfigDict({"pixel_ce": 1.0})
    # One-program sweep of learning rates, e.g. --config.sweep.learning_rate='(3e-3, 1e-2)':
    # every member trained by one compiled step, the best by val mIoU saved in workdir/best.
    config.sweep = ml_collections.ConfigDict({"learning_rate": ()})
    config.sweep_strategy = "unroll"  # or "vmap", "map" (see jaxdet/train/sweep.py)
    config.optimizer = common.optimizer("adam", 1e-2, warmup_steps=50, grad_clip_norm=0.0)
    common.training_loop(config, batch_size=16, eval_batch_size=40, num_train_steps=850,
                         log_every_steps=50, eval_every_steps=425, checkpoint_every_steps=425,
                         max_nonfinite_steps=0)

    if runlocal:
        config.data.update(dict(image_size=32, min_objects=1, max_objects=3, num_train=16,
                                num_val=8))
        if config.model.name == "encoder_decoder":
            config.model.level_widths = (4, 8, 16)
            config.model.level_blocks = (1, 1, 1)
        common.runlocal_loop(config)
        config.batch_size = 8
        config.eval_batch_size = 8
        config.num_train_steps = 6
        config.checkpoint_every_steps = 3
    return config
