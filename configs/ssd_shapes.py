r"""SSD (single-shot multi-box detector, ResNet body) on the synthetic scenes, COCO box AP.

Launch:

  python -m jaxdet.main --config=configs/ssd_shapes.py --workdir=workdirs/ssd
  python -m jaxdet.main --config=configs/ssd_shapes.py:runlocal --workdir=/tmp/ssd

Any field from the command line, e.g. ``--config.loss.ssd_box_weight=2.0`` or
``--config.model.ssd_min_scale=0.08``; a one-program sweep over a loss weight:
``--config.sweep.ssd_box_weight='(0.5, 1.0, 2.0)'`` (best member by validation AP).

Scenes: exactly the data section of ``configs/faster_rcnn_shapes.py`` (128x128, 2-6 objects of
4 shape classes, 10-70 px, occlusion; 2,000 train / 200 validation), so the detectors compare
on the same images. The detector is SSD slimmed to that size (the paper's SSD300 values in the
comments): a ResNet-18 of width 32 trained from scratch (VGG-16), maps C3/C4/C5 (16x16, 8x8,
4x4) plus one extra stride-2 map (2x2) (SSD300: 38x38 ... 1x1, six maps), each through a 3x3
conv-BN-ReLU of 64 channels before the predictors (SSD: none), default-box scales
0.1-0.6 of the image side, i.e. 13-77 px (0.2-0.9), aspect ratios 2 and 1/2 on every map
(plus 3 and 1/3 on some), matching at IoU 0.5 plus each gt's best box, 3:1 hard negatives,
box weights (10, 10, 5, 5) (variances 0.1, 0.2). ``arg``: ``runlocal`` (a seconds-long smoke
run).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    tokens = [t for t in (arg or "").split(",") if t]
    if any(t != "runlocal" for t in tokens):
        raise ValueError(f"configs/ssd_shapes.py: arg {arg!r}; expected '' or 'runlocal'")
    runlocal = "runlocal" in tokens
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.seed = 0

    # The same data as configs/faster_rcnn_shapes.py (fair comparison).
    config.data = ml_collections.ConfigDict()
    config.data.data_dir = "~/.cache/jaxdet/tensorflow_datasets"
    config.data.image_size = 128
    config.data.min_objects = 2
    config.data.max_objects = 6
    config.data.max_instances = 8  # G: ground truth padded to this many rows
    config.data.num_train = 2000
    config.data.num_val = 200
    config.data.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.detector = "ssd"
    # backbone (jaxdet.models.resnet), cut after the deepest map used
    config.model.depth = 18
    config.model.width = 32
    config.model.stem = "imagenet"
    config.model.norm = "batch"
    config.model.input_norm = "imagenet"
    config.model.dtype = ""
    # detector (jaxdet.detection.ssd.SSDSpec)
    config.model.ssd_feature_maps = ("C3", "C4", "C5")
    config.model.ssd_extra_channels = (64,)  # one extra stride-2 map per entry
    config.model.ssd_head_channels = 64  # > 0: a 3x3 conv-norm-ReLU per map before predictors
    config.model.ssd_min_scale = 0.1  # 0.2
    config.model.ssd_max_scale = 0.6  # 0.9
    config.model.ssd_aspect_ratios = (2.0, 0.5)  # height / width, on every map
    config.model.ssd_clip_boxes = True
    config.model.ssd_iou_threshold = 0.5
    config.model.ssd_neg_pos_ratio = 3.0
    config.model.ssd_negative_budget = 0  # 0: exact mining over all default boxes
    config.model.ssd_smooth_l1_beta = 1.0
    config.model.ssd_pre_nms_top_n = 400
    config.model.box_weights = (10.0, 10.0, 5.0, 5.0)
    config.model.score_thresh = 0.05
    config.model.nms_thresh = 0.5
    config.model.detections_per_img = 100
    config.model.recall_top_n = 100

    config.loss = ml_collections.ConfigDict()
    config.loss.ssd_classifier_weight = 1.0
    config.loss.ssd_box_weight = 1.0

    config.sweep = ml_collections.ConfigDict()
    config.sweep.ssd_classifier_weight = ()
    config.sweep.ssd_box_weight = ()
    config.sweep.learning_rate = ()
    config.sweep_strategy = "unroll"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.optimizer.grad_clip_norm = 10.0

    config.batch_size = 8
    config.eval_batch_size = 50
    config.eval_split = "validation"
    config.eval_limit = 0
    config.num_train_steps = 4000
    config.log_every_steps = 50
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2
    config.max_nonfinite_steps = 5
    config.num_prediction_images = 6
    config.draw_score_threshold = 0.5
    config.progress_bar = True
    config.compilation_cache_dir = ""

    if runlocal:
        config.data.image_size = 64
        config.data.num_train = 8
        config.data.num_val = 4
        config.model.width = 4
        config.model.depth = 0
        config.model.stage_sizes = (1, 1, 1, 1)
        config.model.block = "basic"
        config.model.ssd_extra_channels = (8,)
        config.model.ssd_head_channels = 8
        config.model.ssd_pre_nms_top_n = 50
        config.model.detections_per_img = 10
        config.model.recall_top_n = 20
        config.batch_size = 4
        config.eval_batch_size = 4
        config.num_train_steps = 4
        config.log_every_steps = 2
        config.eval_every_steps = 0
        config.checkpoint_every_steps = 2
        config.optimizer.warmup_steps = 0
        config.num_prediction_images = 2
    return config
