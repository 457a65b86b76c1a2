r"""Faster R-CNN (ResNet + FPN, RPN, RoIAlign box head) on the synthetic scenes, COCO box AP.

Launch:

  python -m jaxdet.main --config=configs/faster_rcnn_shapes.py --workdir=workdirs/frcnn
  python -m jaxdet.main --config=configs/faster_rcnn_shapes.py:c4 --workdir=workdirs/frcnn_c4
  python -m jaxdet.main --config=configs/faster_rcnn_shapes.py:runlocal --workdir=/tmp/frcnn

Any field from the command line, e.g. the four loss weights
``--config.loss.rpn_box_weight=2.0``; a one-program sweep over one of them:
``--config.sweep.roi_box_weight='(0.5, 1.0, 2.0)'`` (best member by validation AP).

Scenes: 128x128, 2-6 objects of 4 shape classes, 10-70 px, occlusion. The detector is the
COCO recipe slimmed to that size (torchvision's COCO defaults in the comments): ResNet-18 of
width 16 with batch norm trained from scratch (no weights are downloaded), FPN of 64
channels, anchors 12-192 px (COCO: 32-512), fewer proposals and RoIs, a 256-wide box head.
``arg``: ``c4`` (one stride-16 level instead of the FPN) and/or ``runlocal`` (a seconds-long
smoke run).
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")

LOSS_TERMS = ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box")


def two_stage_detector(model: ml_collections.ConfigDict, levels: str) -> None:
    """The parts of ``model`` (``DetectorSpec`` of ``jaxdet.detection.faster_rcnn``: one section
    per part) for 128 px scenes; torchvision's COCO values in the comments."""
    model.levels = levels  # "fpn" (P2-P6) or "c4" (one stride-16 level)
    model.fpn_channels = 64  # 256
    model.recall_top_n = 100
    model.rpn = ml_collections.ConfigDict()
    model.rpn.anchor_sizes = ((12,), (24,), (48,), (96,), (192,))  # (32,) ... (512,)
    if levels == "c4":
        model.rpn.anchor_sizes = ((12, 24, 48, 96),)
    model.rpn.aspect_ratios = (0.5, 1.0, 2.0)
    model.rpn.fg_iou = 0.7
    model.rpn.bg_iou = 0.3
    model.rpn.batch_size_per_image = 256
    model.rpn.positive_fraction = 0.5
    model.rpn.pre_nms_top_n_train = 300  # 2000
    model.rpn.post_nms_top_n_train = 300  # 2000
    model.rpn.pre_nms_top_n_test = 200  # 1000
    model.rpn.post_nms_top_n_test = 100  # 1000
    model.rpn.nms_thresh = 0.7
    model.rpn.smooth_l1_beta = 1.0 / 9
    model.roi = ml_collections.ConfigDict()
    model.roi.fg_iou = 0.5
    model.roi.bg_iou = 0.5
    model.roi.batch_size_per_image = 128  # 512
    model.roi.positive_fraction = 0.25
    model.roi.output_size = 7
    model.roi.sampling_ratio = 2
    model.roi.canonical_size = 64.0  # 224: a 16 px box reads P2, 32 px P3, 64 px P4
    model.roi.canonical_level = 4
    model.roi.smooth_l1_beta = 1.0 / 9
    model.roi.representation_size = 256  # 1024
    model.postprocess = common.postprocess(score_thresh=0.05, nms_thresh=0.5,
                                           detections_per_img=100)


def tiny_two_stage_detector(model: ml_collections.ConfigDict) -> None:
    """``runlocal``'s detector: a tiny ResNet, 8 FPN channels, few proposals and RoIs."""
    common.tiny_resnet(model)
    model.fpn_channels = 8
    model.recall_top_n = 20
    model.roi.representation_size = 16
    model.roi.batch_size_per_image = 16
    model.rpn.update(dict(batch_size_per_image=32, pre_nms_top_n_train=50,
                          post_nms_top_n_train=50, pre_nms_top_n_test=50,
                          post_nms_top_n_test=20))
    model.postprocess.detections_per_img = 10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    levels, runlocal = common.parse_arg(arg, __file__, ("fpn", "c4"), default="fpn")
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.seed = 0
    config.data = common.scenes_detection_data()
    config.model = ml_collections.ConfigDict()
    common.resnet_backbone(config.model, width=16)
    two_stage_detector(config.model, levels)
    common.loss_weights_and_sweeps(config, LOSS_TERMS)
    config.optimizer = common.optimizer("adam", 2e-3, warmup_steps=100, grad_clip_norm=10.0)
    common.training_loop(config, batch_size=8, eval_batch_size=50, num_train_steps=3000,
                         log_every_steps=50, eval_every_steps=1000, checkpoint_every_steps=500)
    config.draw_score_threshold = 0.5

    if runlocal:
        config.data.update(dict(image_size=64, num_train=8, num_val=4))
        tiny_two_stage_detector(config.model)
        common.runlocal_loop(config)
    return config
