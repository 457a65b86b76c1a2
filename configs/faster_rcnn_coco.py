r"""Faster R-CNN R50-FPN with torchvision's architecture and COCO defaults (for its weights).

Import torchvision's weights, then train or evaluate from them:

  python -m jaxdet.convert --input=fasterrcnn_resnet50_fpn_coco-258fb6c6.pth \
      --config=configs/faster_rcnn_coco.py --output=weights/frcnn_r50_fpn_coco
  python -m jaxdet.convert --input=resnet50-0676ba61.pth \
      --config=configs/faster_rcnn_coco.py --output=weights/r50_imagenet  # backbone only
  python -m jaxdet.main --config=configs/faster_rcnn_coco.py --workdir=workdirs/frcnn_coco \
      --config.init_from=weights/frcnn_r50_fpn_coco

The model is exactly torchvision's ``fasterrcnn_resnet50_fpn`` (v1; with the ``mask`` arg,
``configs/faster_rcnn_coco.py:mask``, its ``maskrcnn_resnet50_fpn``, whose weights convert the
same way): ResNet-50 v1.5 (stride in the 3x3 conv) with frozen BatchNorm statistics, FPN of 256
channels with ``P6`` from ``P5`` by stride-2 max-pool, one RPN head shared across ``P2``-``P6``
(anchors 32-512, one size per level, ratios 0.5/1/2 in torchvision's order), RoIAlign 7x7 over
``P2``-``P5`` with torchvision's ``aligned=False``, box head 1024-1024 over NCHW-flattened
features (the converter permutes ``fc6``), class index 0 the background (90 object classes,
torchvision's 91 including background). ``jaxdet.convert`` reads every one of those choices
from this config, and ``tests/test_convert.py`` checks the outputs against torchvision's.

Inputs: images in [0, 1] normalised inside the backbone with ImageNet's mean/std
(``input_norm="imagenet"``, torchvision's ``GeneralizedRCNNTransform`` numbers). What differs
from torchvision by design: torchvision resizes each image (shorter side 800, longer <= 1333)
and pads the *normalised* batch with zeros to a multiple of 32; jaxdet's input pipeline
decides the (static) size and pads the [0, 1] image, so the padding is ``-mean / std`` after
normalisation (the parity test feeds both models the same normalised, padded tensor).

Data (:mod:`jaxdet.data.coco`): a COCO folder (``annotations/instances_{train,val}2017.json``
+ ``train2017/``, ``val2017/``), converted once into TFDS; torchvision's sizes (shorter side
800, longer <= 1333) padded to 1344 x 1344, horizontal flips for training. Labels stay in
COCO's id space (``data.category_labels="ids"``: label = category id - 1, 90 classes with the
10 unused ids named ``unused_<id>``), which is what torchvision's 91-logit heads predict, so the
released weights evaluate without remapping:

  python -m jaxdet.convert --input=fasterrcnn_resnet50_fpn_coco-258fb6c6.pth \
      --config=configs/faster_rcnn_coco.py --output=weights/frcnn_coco
  python -m jaxdet.main --mode=eval --config=configs/faster_rcnn_coco.py \
      --workdir=workdirs/frcnn_coco_eval --config.data.path=~/datasets/coco \
      --config.init_from=weights/frcnn_coco

(published: 37.0 box AP for ``fasterrcnn_resnet50_fpn`` COCO_V1; not run here: no COCO on this
machine). ``arg``: ``mask`` (the Mask R-CNN layout, for ``maskrcnn_resnet50_fpn`` weights),
``small`` (training from scratch on a small budget, ``configs/faster_rcnn_voc.py``'s recipe on a
COCO folder: ResNet-18 with group norm, 256 px, SGD, 1,000 steps x batch 4, contiguous labels;
results in ``experiments/results/peer_training.md``), and/or ``runlocal`` (a detector that
compiles in seconds; shape and converter smoke tests):

  python -m jaxdet.main --config=configs/faster_rcnn_coco.py:small --workdir=workdirs/frcnn_small \
      --config.data.path=<COCO folder>
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")

LOSS_TERMS = ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, runlocal = common.parse_arg(arg, __file__, ("mask", "small"), default="")
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.seed = 0
    # A directory written by `python -m jaxdet.convert` (or its variables.msgpack): loaded
    # into the fresh model before training / evaluation; "" starts from the initialisation.
    config.init_from = ""

    config.data = ml_collections.ConfigDict()
    config.data.source = "coco"
    config.data.path = ""  # required: --config.data.path=<COCO folder>
    config.data.data_dir = common.DATA_DIR
    config.data.annotation_dir = "annotations"
    config.data.category_labels = "ids"  # torchvision's label space (see the docstring)
    config.data.resize_short = 800  # torchvision's GeneralizedRCNNTransform
    config.data.resize_max = 1333
    config.data.image_size = 1344  # static padded side (a multiple of 32 >= max_size)
    config.data.max_instances = 100
    config.data.pad_sizes = ()  # declared padded sizes; () = ((image_size, image_size),)
    config.data.group_by_aspect_ratio = False  # True: batches padded to the nearest pad_sizes
    config.data.num_workers = 0  # > 0: input batches made in that many worker processes
    config.data.masks = False
    config.data.keypoints = False
    config.data.random_flip = True
    config.data.skip_bad_records = False

    config.model = ml_collections.ConfigDict()
    config.model.detector = "faster_rcnn"
    # backbone (jaxdet.models.resnet): torchvision's resnet50, frozen BN
    common.resnet_backbone(config.model, width=64)
    config.model.depth = 50
    config.model.norm = "frozen"
    # detector (jaxdet.detection.faster_rcnn.DetectorSpec, one section per part):
    # torchvision's defaults
    config.model.levels = "fpn"
    config.model.fpn_channels = 256
    config.model.recall_top_n = 100
    config.model.rpn = ml_collections.ConfigDict(dict(
        anchor_sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=(0.5, 1.0, 2.0),
        fg_iou=0.7, bg_iou=0.3, batch_size_per_image=256, positive_fraction=0.5,
        pre_nms_top_n_train=2000, post_nms_top_n_train=2000, pre_nms_top_n_test=1000,
        post_nms_top_n_test=1000, nms_thresh=0.7, min_size=1e-3, smooth_l1_beta=1.0 / 9))
    config.model.roi = ml_collections.ConfigDict(dict(
        fg_iou=0.5, bg_iou=0.5, batch_size_per_image=512, positive_fraction=0.25,
        output_size=7, sampling_ratio=2,
        aligned=False,  # torchvision's MultiScaleRoIAlign
        canonical_size=224.0, canonical_level=4, smooth_l1_beta=1.0 / 9,
        representation_size=1024))
    config.model.postprocess = common.postprocess(score_thresh=0.05, nms_thresh=0.5,
                                                  detections_per_img=100)
    if variant == "mask":  # maskrcnn_resnet50_fpn: 4 convs of 256, RoIAlign 14x14 -> 28x28
        config.model.mask = ml_collections.ConfigDict(dict(
            width=256, roi_output_size=14, rois_per_image=0))

    common.loss_weights_and_sweeps(config, LOSS_TERMS)
    # torchvision's reference recipe, approximately: SGD 0.02 (batch 16), momentum 0.9, 26
    # epochs, step decay (here Nesterov momentum without weight decay; torchvision's is heavy
    # ball with 1e-4: --config.optimizer.nesterov=False --config.optimizer.weight_decay=1e-4).
    config.optimizer = common.optimizer("momentum", 0.02, warmup_steps=1000, grad_clip_norm=0.0,
                                        schedule="step")
    config.optimizer.momentum = 0.9
    config.optimizer.decay_steps = (160_000, 213_000)
    config.optimizer.decay_factor = 0.1
    common.training_loop(config, batch_size=16, eval_batch_size=8, num_train_steps=234_000,
                         log_every_steps=100, eval_every_steps=0, checkpoint_every_steps=5000)
    config.draw_score_threshold = 0.5

    if variant == "small":
        common.small_budget_on_coco(config, runlocal)
    if runlocal:
        config.data.image_size = 128
        common.tiny_resnet(config.model)
        config.model.block = "bottleneck"
        config.model.fpn_channels = 8
        config.model.roi.representation_size = 16
        config.model.rpn.pre_nms_top_n_test = 50
        config.model.rpn.post_nms_top_n_test = 20
        config.model.postprocess.detections_per_img = 10
        config.batch_size = 2
        config.eval_batch_size = 2
        config.num_train_steps = 2
    return config
