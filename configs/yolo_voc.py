r"""YOLO v1 (``configs/yolo_shapes.py``'s detector) on a Pascal VOC folder, COCO box AP.

Launch (the folder is converted once into a TFDS dataset under ``config.data.data_dir``):

  python -m jaxdet.main --config=configs/yolo_voc.py --workdir=workdirs/yolo_voc \
      --config.data.path=~/datasets/VOCdevkit/VOC2007
  python -m jaxdet.main --config=configs/yolo_voc.py:runlocal --workdir=/tmp/yolo_voc \
      --config.data.path=/tmp/tiny_voc

Folder layout, classes, splits and augmentation: as ``configs/faster_rcnn_voc.py``. Images are
fitted into 256 x 256; the backbone gets a third ResNet stage, so the grid is its 16 x 16 map
of 16 px cells (set ``model.yolo_grid_size`` to ``data.image_size // 16`` with another size);
the backbone uses group norm (batch norm's statistics of 4 images per step do not carry over to
evaluation); the optimizer and the head are ``yolo_shapes.py``'s. Its measured accuracy on a VOC
folder (``experiments/results/peer_training.md``) stays below the two-stage and SSD configs' at
1,000 steps: give it a longer schedule. ``arg``: ``runlocal`` (a seconds-long smoke run).
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    _, runlocal = common.parse_arg(arg, __file__)
    config = common.base_config(__file__, "yolo_shapes.py", "runlocal" if runlocal else "")
    common.on_voc_folder(config, runlocal)
    if not runlocal:
        config.model.stage_sizes = (2, 2, 2)
        config.model.norm = "group"
        config.model.yolo_grid_size = config.data.image_size // 16
    return config
