r"""Keypoint R-CNN (ResNet + FPN, RPN, box and keypoint heads) on scenes with stick figures.

Launch:

  python -m jaxdet.main --config=configs/keypoint_rcnn_shapes.py --workdir=workdirs/kp_rcnn
  python -m jaxdet.main --config=configs/keypoint_rcnn_shapes.py:runlocal --workdir=/tmp/kp_rcnn

Data: the synthetic scenes (``jaxdet.data.scenes``, 128x128, textured background, occlusion)
with stick-figure persons (``config.data.person_fraction``: each object is a person with
probability 0.5, else one of the 4 shapes; class "person" = label 4) carrying the 17 COCO
keypoints (v = 2 visible, 1 covered by a later object). 1-4 objects per image of size 32-96 px
(persons: their height), so that the figures' joints are a few pixels apart; 10,000 training
scenes (built once, about 2 min); the dataset directory is named by these options
(``..._size32-96_train10000_val200_seed0_person0.5``), the default scenes are untouched.

Model: builds on ``configs/faster_rcnn_shapes.py`` (ResNet-18 of width 16 from scratch, FPN
64, its box branch) and adds the keypoint branch (``config.model.keypoint``,
:mod:`jaxdet.detection.keypoint_head`): RoIAlign 14x14 (sampling 2) from P2-P5 -> 8 conv 3x3
-> 4x4 stride-2 transpose conv -> 2x bilinear upsampling -> 17 heatmaps of 56x56, slimmed for
2 CPU cores: 48 channels (COCO: 512), at most 4 person-positive RoIs per image to the head in
training, keypoints decoded for the 20 best person detections per image (all that pycocotools
``keypoints`` reads). Three changes from torchvision's recipe for these small figures: the
keypoint branch reads boxes enlarged 1.25x about their centres (``keypoint.roi_scale``); RoIs
map to finer FPN levels (``roi.canonical_size`` 256: every object here reads P2); and the
keypoint results are scored by the box score times the mean peak softmax probability of the
17 heatmaps (``keypoint.rescore``, as top-down pose estimators rescore; box results keep the
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

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    _, runlocal = common.parse_arg(arg, __file__, ("fpn",), default="fpn")
    config = common.base_config(__file__, "faster_rcnn_shapes.py", "runlocal" if runlocal else "")
    config.data.min_objects = 1
    config.data.max_objects = 4
    config.data.object_min_size = 32  # px (0: the default 10-70 at 128)
    config.data.object_max_size = 96
    config.data.person_fraction = 0.5  # stick-figure persons with 17 keypoints
    config.data.max_instances = 4  # G: ground truth padded to this many rows

    # Every box under 128 px reads P2 (stride 4): joints are a few px apart (224 in torchvision).
    config.model.roi.canonical_size = 256.0
    # keypoint branch (jaxdet.detection.keypoint_head; torchvision's COCO values in comments)
    config.model.keypoint = ml_collections.ConfigDict()
    config.model.keypoint.width = 48  # 512
    config.model.keypoint.num_convs = 8  # 8
    config.model.keypoint.roi_output_size = 14  # 14 (heatmaps 56x56)
    config.model.keypoint.num_keypoints = 17
    config.model.keypoint.class_index = 4  # "person", after the 4 shapes (COCO: 0)
    config.model.keypoint.rois_per_image = 4  # 0 = as many as the foreground slots
    config.model.keypoint.detections_per_img = 20  # 0 = all; pycocotools keeps 20 per image
    config.model.keypoint.decode_window = 32
    config.model.keypoint.roi_scale = 1.25  # keypoint RoIs 1.25x the boxes (1.0 torchvision)
    config.model.keypoint.target = "cell"  # "cell" (torchvision) or "bilinear" (sub-cell)
    config.model.keypoint.decode = "bicubic"  # "bicubic" (torchvision) or "local_mean"
    config.model.keypoint.rescore = True  # False (torchvision): scored by the box score alone
    config.model.keypoint.flip_test = True  # average with the mirrored image's heatmaps
    config.loss.roi_keypoint_weight = 1.0
    config.sweep.roi_keypoint_weight = ()

    if not runlocal:
        config.data.num_train = 10000
        config.num_train_steps = 4000
        config.eval_every_steps = 2000
        config.checkpoint_every_steps = 2000
    else:
        config.data.object_min_size = 0
        config.data.object_max_size = 0
        config.model.keypoint.width = 8
        config.model.keypoint.num_convs = 2
        config.model.keypoint.roi_output_size = 7
        config.model.keypoint.rois_per_image = 2
        config.model.keypoint.detections_per_img = 4
    return config
