r"""Mask R-CNN R50-FPN (torchvision's architecture, configs/faster_rcnn_coco.py) on a COCO folder.

Launch (the folder is converted once into a TFDS dataset under ``config.data.data_dir``):

  python -m jaxdet.main --config=configs/mask_rcnn_coco.py --workdir=workdirs/mask_rcnn_coco \
      --config.data.path=~/datasets/coco --config.init_from=weights/r50_imagenet
  python -m jaxdet.main --config=configs/mask_rcnn_coco.py:runlocal --workdir=/tmp/mrcnn_coco \
      --config.data.path=/tmp/tiny_coco

Expected folder layout (COCO 2017 as unzipped; any COCO-format folder works the same)::

    coco/annotations/instances_train2017.json   # -> split "train"
    coco/annotations/instances_val2017.json     # -> split "validation"
    coco/train2017/000000000009.jpg             # (or coco/images/train2017/, coco/images/)
    coco/val2017/...

Data (:mod:`jaxdet.data.coco`, :mod:`jaxdet.data.sources`): boxes xywh -> xyxy, the 80
categories mapped to contiguous labels in COCO-id order (NOT torchvision's 91-slot layout,
so ``maskrcnn_resnet50_fpn`` detection weights do not load into this head; backbone weights
do), polygon/RLE masks decoded at conversion and cropped to 56 x 56 per box in the input
pipeline, crowd objects kept out of the training targets and passed to pycocotools as
``iscrowd=1`` ground truth, images resized as torchvision's (shorter side 800, longer <= 1333)
and padded into 1344 x 1344 with their validity ``image_hw`` (evaluated at the original size),
training images doubled with their horizontal flips; at most 100 objects per image, the
excess counted and logged. Off by default, as torchvision's recipe: ``scale_jitter`` (e.g.
``'(0.5, 2.0)'``, large-scale jitter with crop), ``photometric`` (e.g. 0.2), several
``pad_sizes`` (one per batch; with ``group_by_aspect_ratio=True`` the one nearest the batch's
images' aspect ratio, e.g. ``'((800, 1344), (1344, 800), (1344, 1344))'``: evaluation pads to
the last). Bad records stop the conversion naming the file, or are
skipped and counted with ``--config.data.skip_bad_records=True``. ``arg``: ``small``
(training from scratch on a small budget: ``configs/faster_rcnn_coco.py``'s ``small`` recipe, a
mask head of 128 channels over 16 RoIs per image; results in
``experiments/results/peer_training.md``) and/or ``runlocal``:

  python -m jaxdet.main --config=configs/mask_rcnn_coco.py:small --workdir=workdirs/mrcnn_small \
      --config.data.path=<COCO folder>
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, runlocal = common.parse_arg(arg, __file__, ("small",), default="")
    config = common.base_config(__file__, "faster_rcnn_coco.py", "runlocal" if runlocal else "")
    # the classic R50-FPN "1x" recipe (Detectron): batch 16, LR 0.02 with 1,000 warm-up steps,
    # 90k steps, x0.1 at 60k and 80k (faster_rcnn_coco.py keeps torchvision's 26 epochs)
    config.num_train_steps = 2 if runlocal else 90_000
    config.optimizer.decay_steps = (60_000, 80_000)
    config.model.mask = ml_collections.ConfigDict(dict(
        width=256, roi_output_size=14,
        rois_per_image=0))  # all foreground slots (torchvision)
    config.loss.roi_mask_weight = 1.0
    config.sweep.roi_mask_weight = ()
    if runlocal:
        config.model.mask.width = 8
        config.model.mask.rois_per_image = 4

    config.data = ml_collections.ConfigDict()
    config.data.source = "coco"
    config.data.path = ""  # required: --config.data.path=<COCO folder>
    config.data.data_dir = common.DATA_DIR
    config.data.annotation_dir = "annotations"
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
    config.data.mask_crop_size = 16 if runlocal else 56  # gt masks [G, M, M] per image
    config.data.masks = True
    config.data.keypoints = False
    config.data.random_flip = True
    config.data.skip_bad_records = False
    if variant == "small":  # from scratch on a CPU: a lighter mask head, 16 of 64 fg slots
        common.small_budget_on_coco(config, runlocal)
        if not runlocal:
            config.model.mask.update(dict(width=128, rois_per_image=16))
    return config
