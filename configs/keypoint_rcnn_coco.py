r"""Keypoint R-CNN R50-FPN (torchvision's ``keypointrcnn_resnet50_fpn``) on COCO person keypoints.

Import torchvision's COCO weights, then evaluate or fine-tune from them; or train the classic
1x recipe from ImageNet backbone weights:

  python -m jaxdet.convert --input=keypointrcnn_resnet50_fpn_coco-fc266e95.pth \
      --config=configs/keypoint_rcnn_coco.py --output=weights/kprcnn_r50_fpn_coco
  python -m jaxdet.main --mode=eval --config=configs/keypoint_rcnn_coco.py \
      --workdir=workdirs/kprcnn_coco_eval --config.data.path=~/datasets/coco \
      --config.init_from=weights/kprcnn_r50_fpn_coco
  python -m jaxdet.convert --input=resnet50-0676ba61.pth \
      --config=configs/keypoint_rcnn_coco.py --output=weights/r50_imagenet  # backbone only
  python -m jaxdet.main --config=configs/keypoint_rcnn_coco.py --workdir=workdirs/kprcnn_coco \
      --config.data.path=~/datasets/coco --config.init_from=weights/r50_imagenet
  python -m jaxdet.main --config=configs/keypoint_rcnn_coco.py:runlocal \
      --workdir=/tmp/kprcnn_coco --config.data.path=/tmp/tiny_coco

Model: ``configs/faster_rcnn_coco.py`` (ResNet-50 v1.5 with frozen BatchNorm statistics, FPN
256 with ``P6`` by max-pool, shared RPN head, RoIAlign 7x7 with ``aligned=False``, box head
1024-1024) with 2 classes, background and person (1 jaxdet class, ``keypoint.class_index=0``), plus
torchvision's keypoint branch (:mod:`jaxdet.detection.keypoint_head`): RoIAlign 14x14
(sampling 2, ``aligned=False``) over ``P2``-``P5`` -> 8 conv 3x3 of 512 + ReLU ->
``kps_score_lowres`` (4x4 stride-2 transpose conv to 17 channels, 28x28) -> 2x bilinear
upsampling -> 17 heatmaps of 56x56. Training: the keypoints of every person-positive sampled
RoI (torchvision's: up to 128 of the 512 per image), softmax cross-entropy over the 56x56
positions averaged over labelled keypoints (loss ``roi_keypoint``). Inference: arg-max with
torchvision's bicubic refinement (``jaxdet.ops.heatmaps_to_keypoints``, exact for RoIs up to
``keypoint.decode_window`` px a side and for peaked heatmaps), for the first
``keypoint.detections_per_img`` = 20 person detections (pycocotools' keypoint AP reads 20 per
image; torchvision decodes all 100: set 0 for that). Every one of those numbers is torchvision's
(``tests/test_convert.py`` checks the converted model's detections and keypoints against it).

Data (:mod:`jaxdet.data.coco`, ``config.data.source="coco"``): the ``person_keypoints_*.json``
files alone (``data.instances=False``: the ``instances_*`` files beside them are not read, so
the one class is person), each person's 17 keypoints ``(x, y, v)`` (+0.5 pixel centres), crowd
persons kept out of the training targets and passed to pycocotools as ``iscrowd=1`` ground
truth, no masks; expected folder (COCO 2017 as unzipped)::

    coco/annotations/person_keypoints_train2017.json   # -> split "train"
    coco/annotations/person_keypoints_val2017.json     # -> split "validation"
    coco/train2017/000000000009.jpg                    # (or coco/images/train2017/, ...)
    coco/val2017/...

Images are resized as torchvision evaluates them (shorter side 800, longer <= 1333; its
keypoint training draws the shorter side from 640-800, here a fixed 800) and padded into
1344 x 1344 with their validity ``image_hw``; the training split is doubled with horizontal
flips (``left_*`` / ``right_*`` keypoints swapped); at most 100 persons per image, the excess
counted and logged; ``scale_jitter`` / ``photometric`` off, as in the recipe. Evaluation:
pycocotools ``bbox`` and ``keypoints`` (COCO's 17 sigmas, OKS scale = the segment area).

Recipe (the classic R50-FPN 1x, detectron2's ``keypoint_rcnn_R_50_FPN_1x``): 16 images per
batch, momentum 0.9, LR 0.02 with a 1,000-step linear warm-up, x0.1 at 60k and 80k, 90k steps
(jaxdet's "momentum" is Nesterov without weight decay; detectron2 and torchvision use 1e-4).
torchvision's own recipe trains 46 epochs (LR steps at epochs 36 and 43).

``arg``: ``runlocal`` (the shrunk detector of ``faster_rcnn_coco.py:runlocal`` with a slim
keypoint branch, 128 px images, 2 steps: a smoke run on a tiny COCO-format folder).
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    _, runlocal = common.parse_arg(arg, __file__)
    config = common.base_config(__file__, "faster_rcnn_coco.py", "runlocal" if runlocal else "")

    # keypoint branch (jaxdet.detection.keypoint_head): torchvision's keypointrcnn_resnet50_fpn
    config.model.keypoint = ml_collections.ConfigDict()
    config.model.keypoint.width = 512
    config.model.keypoint.num_convs = 8
    config.model.keypoint.roi_output_size = 14  # heatmaps 56x56
    config.model.keypoint.num_keypoints = 17
    config.model.keypoint.class_index = 0  # person, the only class
    config.model.keypoint.rois_per_image = 0  # all foreground slots (torchvision)
    config.model.keypoint.detections_per_img = 20  # 0: all detections_per_img (torchvision)
    config.model.keypoint.decode_window = 32
    # torchvision's rules; the options configs/keypoint_rcnn_shapes.py documents and measures
    config.model.keypoint.roi_scale = 1.0
    config.model.keypoint.target = "cell"  # or "bilinear" (sub-cell targets)
    config.model.keypoint.decode = "bicubic"  # or "local_mean" (with bilinear targets)
    config.model.keypoint.rescore = False  # or True: box score x mean keypoint confidence
    config.model.keypoint.flip_test = False  # True: heatmaps averaged with the mirrored image's
    config.loss.roi_keypoint_weight = 1.0
    config.sweep.roi_keypoint_weight = ()

    config.data = ml_collections.ConfigDict()
    config.data.source = "coco"
    config.data.path = ""  # required: --config.data.path=<COCO folder>
    config.data.data_dir = common.DATA_DIR
    config.data.annotation_dir = "annotations"
    config.data.instances = False  # person_keypoints_*.json only: one class, person
    config.data.image_size = 128 if runlocal else 1344  # padded square side
    # jaxdet.data.sources / augment: resize, jitter, photometric, padding (0 / () = off)
    config.data.resize_short = 96 if runlocal else 800  # shorter side ...
    config.data.resize_max = 128 if runlocal else 1333  # ... longer side at most
    config.data.pad_sizes = ()  # declared padded sizes; () = ((image_size, image_size),)
    config.data.group_by_aspect_ratio = False  # True: batches padded to the nearest pad_sizes
    config.data.num_workers = 0  # > 0: input batches made in that many worker processes
    config.data.scale_jitter = ()  # (min, max) factor, then cropped to the padded size
    config.data.photometric = 0.0  # brightness / contrast / saturation strength
    config.data.max_instances = 100  # G (excess counted and logged)
    config.data.masks = False
    config.data.keypoints = True
    config.data.random_flip = True
    config.data.skip_bad_records = False

    # The classic 1x recipe (module docstring): faster_rcnn_coco.py's optimizer, 90k steps.
    config.optimizer.decay_steps = (60_000, 80_000)
    if not runlocal:
        config.num_train_steps = 90_000

    if runlocal:
        config.data.max_instances = 20
        config.model.keypoint.width = 8
        config.model.keypoint.num_convs = 2
        config.model.keypoint.roi_output_size = 7
        config.model.keypoint.rois_per_image = 4
        config.model.keypoint.detections_per_img = 4
        config.optimizer.warmup_steps = 0
    return config
