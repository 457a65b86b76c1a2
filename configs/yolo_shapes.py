r"""YOLO (v1, S x S grid, sum-squared loss) on the synthetic scenes, COCO box AP.

Launch:

  python -m jaxdet.main --config=configs/yolo_shapes.py --workdir=workdirs/yolo
  python -m jaxdet.main --config=configs/yolo_shapes.py:runlocal --workdir=/tmp/yolo

Any field from the command line, e.g. ``--config.model.yolo_grid_size=16
--config.model.yolo_feature=C3`` or the paper's lambdas ``--config.loss.yolo_coord_weight=5``
/ ``--config.loss.yolo_noobj_weight=0.5``; a one-program sweep over a loss weight:
``--config.sweep.yolo_coord_weight='(2.0, 5.0)'`` (best member by validation AP).

Data: the same scenes as ``configs/faster_rcnn_shapes.py`` (128x128, 2-6 objects of 4 shape
classes, 10-70 px, occlusion, 2,000 train / 200 validation images), no augmentation, so the
detectors compare on equal terms. Model (:mod:`jaxdet.detection.yolo`): the same ResNet
family (basic blocks, width 16, batch norm from scratch) cut after its second stage, so the
last map is C3 at stride 8: a 16 x 16 grid of 8 px cells, B = 2 boxes per cell, a fully
convolutional head of three 3x3 convs of 128 channels (the paper's FC head:
``yolo_head="fc"``). With ``S = 16`` two objects share a cell (the smaller one gets no
predictor) for 0.5 % of the validation objects (``S = 8`` from C4, three stages: 2.3 %, and
AP50 0.63 against 0.74 for ``S = 16`` half-way through the same 2,500-step schedule).
The confidence target is 1 for the responsible predictor (``yolo_rescore=False``; the paper's
IoU target measured 4 AP50 points lower half-way).
``arg``: ``runlocal`` (a seconds-long smoke run).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    tokens = [t for t in (arg or "").split(",") if t]
    if any(t != "runlocal" for t in tokens):
        raise ValueError(f"configs/yolo_shapes.py: arg {arg!r}; expected '' or 'runlocal'")
    runlocal = "runlocal" in tokens
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.seed = 0

    config.data = ml_collections.ConfigDict()  # as configs/faster_rcnn_shapes.py
    config.data.data_dir = "~/.cache/jaxdet/tensorflow_datasets"
    config.data.image_size = 128
    config.data.min_objects = 2
    config.data.max_objects = 6
    config.data.max_instances = 8  # G: ground truth padded to this many rows
    config.data.num_train = 2000
    config.data.num_val = 200
    config.data.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.detector = "yolo"
    # backbone (jaxdet.models.resnet): ResNet-18's first two stages, width 16
    config.model.depth = 0
    config.model.stage_sizes = (2, 2)
    config.model.block = "basic"
    config.model.width = 16
    config.model.stem = "imagenet"
    config.model.norm = "batch"
    config.model.input_norm = "imagenet"
    config.model.dtype = ""
    # detector (jaxdet.detection.yolo.YoloSpec)
    config.model.yolo_grid_size = 16  # S (the paper: 7 at 448 px)
    config.model.yolo_boxes_per_cell = 2  # B (the paper: 2)
    config.model.yolo_feature = ""  # the last map: C3, 16x16 at 128 px
    config.model.yolo_head = "conv"
    config.model.yolo_head_convs = 3
    config.model.yolo_head_channels = 128
    config.model.yolo_fc_size = 512
    config.model.yolo_dropout = 0.0  # the paper: 0.5 after its FC layer
    # Confidence target 1, not the IoU (darknet's rescore=1): AP50 0.775 vs 0.737 at 1,250
    # of 2,500 steps (experiments/results/yolo_shapes.md).
    config.model.yolo_rescore = False
    config.model.score_thresh = 0.001  # AP50 +0.004 over 0.01 on the same weights
    config.model.nms_thresh = 0.5
    config.model.detections_per_img = 100
    config.model.recall_top_n = 100

    config.loss = ml_collections.ConfigDict()
    config.loss.yolo_coord_weight = 5.0  # lambda_coord
    config.loss.yolo_obj_weight = 1.0
    config.loss.yolo_noobj_weight = 0.5  # lambda_noobj
    config.loss.yolo_class_weight = 2.0  # the paper: 1; 2 in the measured runs

    config.sweep = ml_collections.ConfigDict()
    config.sweep.yolo_coord_weight = ()
    config.sweep.yolo_obj_weight = ()
    config.sweep.yolo_noobj_weight = ()
    config.sweep.yolo_class_weight = ()
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
    config.num_train_steps = 2500
    config.log_every_steps = 50
    config.eval_every_steps = 1250
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
        config.model.yolo_grid_size = 8  # C3 of a 64 px input
        config.model.yolo_head_convs = 1
        config.model.yolo_head_channels = 8
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
