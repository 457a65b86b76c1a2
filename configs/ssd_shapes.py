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

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    _, runlocal = common.parse_arg(arg, __file__)
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.seed = 0
    config.data = common.scenes_detection_data()  # as configs/faster_rcnn_shapes.py

    config.model = ml_collections.ConfigDict()
    config.model.detector = "ssd"
    # backbone (jaxdet.models.resnet), cut after the deepest map used
    common.resnet_backbone(config.model, width=32)
    # detector (jaxdet.detection.ssd.SSDSpec); the paper's values in the comments
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
    config.model.postprocess = common.postprocess(score_thresh=0.05, nms_thresh=0.5,
                                                  detections_per_img=100)
    config.model.recall_top_n = 100

    common.loss_weights_and_sweeps(config, ("ssd_classifier", "ssd_box"))
    config.optimizer = common.optimizer("adam", 2e-3, warmup_steps=100, grad_clip_norm=10.0)
    common.training_loop(config, batch_size=8, eval_batch_size=50, num_train_steps=4000,
                         log_every_steps=50, eval_every_steps=1000, checkpoint_every_steps=500)
    config.draw_score_threshold = 0.5

    if runlocal:
        config.data.update(dict(image_size=64, num_train=8, num_val=4))
        common.tiny_resnet(config.model)
        config.model.ssd_extra_channels = (8,)
        config.model.ssd_head_channels = 8
        config.model.ssd_pre_nms_top_n = 50
        config.model.postprocess.detections_per_img = 10
        config.model.recall_top_n = 20
        common.runlocal_loop(config)
    return config
