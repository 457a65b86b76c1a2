r"""Mask R-CNN (ResNet + FPN, RPN, box and mask heads) on the synthetic scenes: box and mask AP.

Launch:

  python -m jaxdet.main --config=configs/mask_rcnn_shapes.py --workdir=workdirs/mask_rcnn
  python -m jaxdet.main --config=configs/mask_rcnn_shapes.py:runlocal --workdir=/tmp/mask_rcnn

Builds on ``configs/faster_rcnn_shapes.py`` (its scenes, backbone and box branch: (128x128, 2-6
objects of 4 shape classes with occlusion; ResNet-18 of width 16 from scratch, FPN 64) and adds
the mask branch (``config.model.mask``, :mod:`jaxdet.detection.mask_head`): RoIAlign
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

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    _, runlocal = common.parse_arg(arg, __file__, ("fpn",), default="fpn")
    config = common.base_config(__file__, "faster_rcnn_shapes.py", "runlocal" if runlocal else "")
    # mask branch (jaxdet.detection.mask_head; torchvision's COCO values in the comments)
    config.model.mask = ml_collections.ConfigDict()
    config.model.mask.width = 32  # 256
    config.model.mask.roi_output_size = 14  # 14 (logits 28x28)
    config.model.mask.rois_per_image = 8  # 0 = all foreground slots (128 of 512)
    config.data.mask_crop_size = 48  # gt masks cropped to their boxes, uint8 [G, 48, 48]
    config.loss.roi_mask_weight = 1.0
    config.sweep.roi_mask_weight = ()

    if not runlocal:
        config.num_train_steps = 1000
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 1000
    else:
        config.model.mask.width = 8
        config.model.mask.rois_per_image = 4
        config.data.mask_crop_size = 16
    return config
