r"""Keypoint R-CNN (ResNet + FPN, RPN, box and keypoint heads) on scenes with stick figures.

Launch:

  python -m jaxdet.main --config=configs/keypoint_rcnn_shapes.py --workdir=workdirs/kp_rcnn
  python -m jaxdet.main --config=configs/keypoint_rcnn_shapes.py:runlocal --workdir=/tmp/kp_rcnn

Data: the synthetic scenes (``jaxdet.data.scenes``, 128x128, textured background, occlusion)
with stick-figure persons (``config.data.person_fraction``: each object is a person with
probability 0.5, else one of the 4 shapes; class "person" = label 4) carrying the 17 COCO
keypoints (v = 2 visible, 1 covered by a later object). 1-4 objects per image of size 32-96 px
(persons: their height), so that the figures' joints are a few pixels apart. 10,000 training
scenes (with 2,000 the model overfits: after 4,000 steps kp_AP 0.549 on training scenes vs
0.379 on validation; the 10,000 take about 1 min 40 s to build once); the dataset directory
is named by these options (``..._size32-96_train10000_val200_seed0_person0.5``), the default
scenes are untouched.

Model: backbone and box branch as ``configs/mask_rcnn_shapes.py`` (ResNet-18 of width 16 from
scratch, FPN 64), plus the keypoint branch (``config.model.keypoint_head``,
:mod:`jaxdet.detection.keypoint_head`): RoIAlign 14x14 (sampling 2) from P2-P5 -> 8 conv 3x3
-> 4x4 stride-2 transpose conv -> 2x bilinear upsampling -> 17 heatmaps of 56x56, slimmed for
2 CPU cores: 48 channels (COCO: 512), at most 4 person-positive RoIs per image to the head in
training, keypoints decoded for the 20 best person detections per image (all that pycocotools
``keypoints`` reads). Three changes from torchvision's recipe for these small figures: the
keypoint branch reads boxes enlarged 1.25x about their centres (``keypoint_roi_scale``); RoIs
map to finer FPN levels (``roi_canonical_size`` 256: every object here reads P2); and the
keypoint results are scored by the box score times the mean peak softmax probability of the
17 heatmaps (``keypoint_rescore``, as top-down pose estimators rescore; box results keep the
box score). 4,000 steps (Adam 2e-3, cosine, 100 warm-up), evaluation every 2,000. Loss term
``roi_keypoint`` (softmax cross-entropy over the 56x56 positions, averaged over labelled
keypoints), weight ``config.loss.roi_keypoint_weight``.

Evaluation reports pycocotools ``bbox`` (``AP``, ...) and ``keypoints`` (``kp_AP``,
``kp_AP50``, ...; COCO's 17 sigmas, OKS scale s² = the gt area as in COCO: the person's
visible segment area, its mask's pixel count, about 0.25 of a stick figure's box area with its
spread limbs). ``arg``: ``runlocal`` (a seconds-long smoke run). Results:
``experiments/results/keypoint_rcnn_shapes.md``.
"""

import ml_collections

_VARIANTS = ("fpn",)


def _parse(arg: str | None) -> tuple[str, bool]:
    tokens = [t for t in (arg or "").split(",") if t]
    runlocal = "runlocal" in tokens
    variants = [t for t in tokens if t != "runlocal"]
    if len(variants) > 1 or any(t not in _VARIANTS for t in variants):
        raise ValueError(f"configs/keypoint_rcnn_shapes.py: arg {arg!r}; expected at most one of "
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
    config.data.min_objects = 1
    config.data.max_objects = 4
    config.data.object_min_size = 32  # px (0: the default 10-70 at 128)
    config.data.object_max_size = 96
    config.data.person_fraction = 0.5  # stick-figure persons with 17 keypoints
    config.data.max_instances = 4  # G: ground truth padded to this many rows
    # 2000: kp_AP 0.549 on 200 training images vs 0.379 on validation after 4,000 steps
    config.data.num_train = 10000
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
    # 224; here every box under 128 px reads P2 (stride 4): the joints of a 32-96 px figure
    # are a few px apart and its limbs 2-8 px wide (1,000 steps: 64 -> kp_AP 0.073, 128 (a
    # box under 64 px reads P2, 64-127 px P3) -> 0.189, 256 -> 0.205 with 10,000 scenes)
    config.model.roi_canonical_size = 256.0
    config.model.roi_canonical_level = 4
    config.model.roi_smooth_l1_beta = 1.0 / 9
    config.model.representation_size = 256  # 1024
    config.model.score_thresh = 0.05
    config.model.nms_thresh = 0.5
    config.model.detections_per_img = 100
    config.model.recall_top_n = 100
    # keypoint branch (jaxdet.detection.keypoint_head; torchvision's COCO values in comments)
    config.model.keypoint_head = True
    config.model.keypoint_head_width = 48  # 512
    config.model.keypoint_head_convs = 8  # 8
    config.model.keypoint_roi_output_size = 14  # 14 (heatmaps 56x56)
    config.model.num_keypoints = 17
    config.model.keypoint_class = 4  # "person", after the 4 shapes (COCO: 0)
    config.model.keypoint_rois_per_image = 4  # 0 = as many as the foreground slots
    config.model.keypoint_detections_per_img = 20  # 0 = all; pycocotools keeps 20 per image
    config.model.keypoint_decode_window = 32
    # 1.0: keypoint RoIs 1.25x the boxes about their centres (30-45 % of wrists and ankles lie
    # just outside a person's detected box at 1.0)
    config.model.keypoint_roi_scale = 1.25
    config.model.keypoint_target = "cell"  # "cell" (torchvision) or "bilinear" (sub-cell)
    config.model.keypoint_decode = "bicubic"  # "bicubic" (torchvision) or "local_mean"
    # False (torchvision): keypoint results scored by the box score alone
    config.model.keypoint_rescore = True
    config.model.keypoint_flip_test = True  # False: no test-time flip (0.493 vs 0.516)

    config.loss = ml_collections.ConfigDict()
    config.loss.rpn_objectness_weight = 1.0
    config.loss.rpn_box_weight = 1.0
    config.loss.roi_classifier_weight = 1.0
    config.loss.roi_box_weight = 1.0
    config.loss.roi_keypoint_weight = 1.0

    config.sweep = ml_collections.ConfigDict()
    config.sweep.rpn_objectness_weight = ()
    config.sweep.rpn_box_weight = ()
    config.sweep.roi_classifier_weight = ()
    config.sweep.roi_box_weight = ()
    config.sweep.roi_keypoint_weight = ()
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
    config.eval_every_steps = 2000
    config.checkpoint_every_steps = 2000
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
        config.data.object_min_size = 0
        config.data.object_max_size = 0
        config.model.keypoint_head_width = 8
        config.model.keypoint_head_convs = 2
        config.model.keypoint_roi_output_size = 7
        config.model.keypoint_rois_per_image = 2
        config.model.keypoint_detections_per_img = 4
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
