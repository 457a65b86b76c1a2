r"""Mask R-CNN (ResNet + FPN, RPN, box and mask heads) on the synthetic scenes: box and mask AP.

Launch:

  python -m jaxdet.main --config=configs/mask_rcnn_shapes.py --workdir=workdirs/mask_rcnn
  python -m jaxdet.main --config=configs/mask_rcnn_shapes.py:runlocal --workdir=/tmp/mask_rcnn

Same scenes, backbone and box branch as ``configs/faster_rcnn_shapes.py`` (128x128, 2-6
objects of 4 shape classes with occlusion; ResNet-18 of width 16 from scratch, FPN 64) plus
the mask branch (``config.model.mask_head``, :mod:`jaxdet.detection.mask_head`): RoIAlign
14x14 (sampling 2) from P2-P5 -> 4 conv 3x3 -> 2x transpose conv -> per-class 28x28 logits,
slimmed for 2 CPU cores: 32 channels (COCO: 256) and 8 positive RoIs per image sent to the
head (COCO: all 128 foreground slots of 512), 1,000 steps (Faster R-CNN's config: 3,000).
Ground-truth masks travel cropped to their boxes at 48x48 uint8
(``config.data.mask_crop_size``). Loss term ``roi_mask`` (per-pixel BCE of the gt class's
logits over positive RoIs), weight ``config.loss.roi_mask_weight``. Evaluation reports
pycocotools ``bbox`` (``AP``, ``AP50``, ...) and ``segm`` (``mask_AP``, ``mask_AP50``, ...).
``arg``: ``runlocal`` (a seconds-long smoke run).
"""

import ml_collections

_VARIANTS = ("fpn",)


def _parse(arg: str | None) -> tuple[str, bool]:
    tokens = [t for t in (arg or "").split(",") if t]
    runlocal = "runlocal" in tokens
    variants = [t for t in tokens if t != "runlocal"]
    if len(variants) > 1 or any(t not in _VARIANTS for t in variants):
        raise ValueError(f"configs/mask_rcnn_shapes.py: arg {arg!r}; expected at most one of "
                         f"{_VARIANTS} plus optionally 'runlocal'")
    return (variants[0] if variants else "fpn"), runlocal


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, runlocal = _parse(arg)
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.variant = variant
    config.seed = 0

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
    # backbone (jaxdet.models.resnet)
    config.model.depth = 18
    config.model.width = 16  # torchvision: 64
    config.model.stem = "imagenet"
    config.model.norm = "batch"  # "frozen" with imported weights (torchvision's choice)
    config.model.input_norm = "imagenet"
    config.model.dtype = ""  # "" float32, or e.g. "bfloat16" (boxes stay float32)
    # detector (jaxdet.detection.faster_rcnn.DetectorSpec)
    config.model.levels = variant
    config.model.fpn_channels = 64  # 256
    config.model.anchor_sizes = ((12,), (24,), (48,), (96,), (192,))  # (32,) ... (512,)
    config.model.aspect_ratios = (0.5, 1.0, 2.0)
    config.model.rpn_fg_iou = 0.7
    config.model.rpn_bg_iou = 0.3
    config.model.rpn_batch_size_per_image = 256
    config.model.rpn_positive_fraction = 0.5
    config.model.rpn_pre_nms_top_n_train = 300  # 2000
    config.model.rpn_post_nms_top_n_train = 300  # 2000
    config.model.rpn_pre_nms_top_n_test = 200  # 1000
    config.model.rpn_post_nms_top_n_test = 100  # 1000
    config.model.rpn_nms_thresh = 0.7
    config.model.rpn_smooth_l1_beta = 1.0 / 9
    config.model.roi_fg_iou = 0.5
    config.model.roi_bg_iou = 0.5
    config.model.roi_batch_size_per_image = 128  # 512
    config.model.roi_positive_fraction = 0.25
    config.model.roi_output_size = 7
    config.model.roi_sampling_ratio = 2
    config.model.roi_canonical_size = 64.0  # 224: a 16 px box reads P2, 32 px P3, 64 px P4
    config.model.roi_canonical_level = 4
    config.model.roi_smooth_l1_beta = 1.0 / 9
    config.model.representation_size = 256  # 1024
    config.model.score_thresh = 0.05
    config.model.nms_thresh = 0.5
    config.model.detections_per_img = 100
    config.model.recall_top_n = 100
    # mask branch (jaxdet.detection.mask_head; torchvision's COCO values in the comments)
    config.model.mask_head = True
    config.model.mask_head_width = 32  # 256
    config.model.mask_roi_output_size = 14  # 14 (logits 28x28)
    config.model.mask_rois_per_image = 8  # 0 = all foreground slots (128 of 512)
    config.data.mask_crop_size = 48  # gt masks cropped to their boxes, uint8 [G, 48, 48]

    config.loss = ml_collections.ConfigDict()
    config.loss.rpn_objectness_weight = 1.0
    config.loss.rpn_box_weight = 1.0
    config.loss.roi_classifier_weight = 1.0
    config.loss.roi_box_weight = 1.0
    config.loss.roi_mask_weight = 1.0

    config.sweep = ml_collections.ConfigDict()
    config.sweep.rpn_objectness_weight = ()
    config.sweep.rpn_box_weight = ()
    config.sweep.roi_classifier_weight = ()
    config.sweep.roi_box_weight = ()
    config.sweep.roi_mask_weight = ()
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
    config.num_train_steps = 1000
    config.log_every_steps = 50
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 1000
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
        config.model.fpn_channels = 8
        config.model.representation_size = 16
        config.model.mask_head_width = 8
        config.model.mask_rois_per_image = 4
        config.data.mask_crop_size = 16
        config.model.rpn_batch_size_per_image = 32
        config.model.rpn_pre_nms_top_n_train = 50
        config.model.rpn_post_nms_top_n_train = 50
        config.model.rpn_pre_nms_top_n_test = 50
        config.model.rpn_post_nms_top_n_test = 20
        config.model.roi_batch_size_per_image = 16
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
