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

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")

LOSS_WEIGHTS = {"yolo_coord": 5.0, "yolo_obj": 1.0, "yolo_noobj": 0.5, "yolo_class": 2.0}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    _, runlocal = common.parse_arg(arg, __file__)
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.seed = 0
    config.data = common.scenes_detection_data()  # as configs/faster_rcnn_shapes.py

    config.model = ml_collections.ConfigDict()
    config.model.detector = "yolo"
    # backbone (jaxdet.models.resnet): ResNet-18's first two stages, width 16
    common.resnet_backbone(config.model, width=16)
    config.model.depth = 0
    config.model.stage_sizes = (2, 2)
    config.model.block = "basic"
    # detector (jaxdet.detection.yolo.YoloSpec)
    config.model.yolo_grid_size = 16  # S (the paper: 7 at 448 px)
    config.model.yolo_boxes_per_cell = 2  # B (the paper: 2)
    config.model.yolo_feature = ""  # the last map: C3, 16x16 at 128 px
    config.model.yolo_head = "conv"
    config.model.yolo_head_convs = 3
    config.model.yolo_head_channels = 128
    config.model.yolo_fc_size = 512
    config.model.yolo_dropout = 0.0  # the paper: 0.5 after its FC layer
    config.model.yolo_rescore = False  # confidence target 1, not the IoU (darknet's rescore=1)
    config.model.postprocess = common.postprocess(score_thresh=0.001, nms_thresh=0.5,
                                                  detections_per_img=100)
    config.model.recall_top_n = 100

    # lambda_coord 5, lambda_noobj 0.5 as the paper; class 2 (the paper: 1)
    common.loss_weights_and_sweeps(config, tuple(LOSS_WEIGHTS), LOSS_WEIGHTS)
    config.optimizer = common.optimizer("adam", 2e-3, warmup_steps=100, grad_clip_norm=10.0)
    common.training_loop(config, batch_size=8, eval_batch_size=50, num_train_steps=2500,
                         log_every_steps=50, eval_every_steps=1250, checkpoint_every_steps=500)
    config.draw_score_threshold = 0.5

    if runlocal:
        config.data.update(dict(image_size=64, num_train=8, num_val=4))
        config.model.width = 4
        config.model.yolo_grid_size = 8  # C3 of a 64 px input
        config.model.yolo_head_convs = 1
        config.model.yolo_head_channels = 8
        config.model.postprocess.detections_per_img = 10
        config.model.recall_top_n = 20
        common.runlocal_loop(config)
    return config
