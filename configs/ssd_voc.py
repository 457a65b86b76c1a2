r"""SSD (``configs/ssd_shapes.py``'s detector) on a Pascal VOC folder, COCO box AP.

Launch (the folder is converted once into a TFDS dataset under ``config.data.data_dir``):

  python -m jaxdet.main --config=configs/ssd_voc.py --workdir=workdirs/ssd_voc \
      --config.data.path=~/datasets/VOCdevkit/VOC2007
  python -m jaxdet.main --config=configs/ssd_voc.py:runlocal --workdir=/tmp/ssd_voc \
      --config.data.path=/tmp/tiny_voc

Folder layout, classes, splits and augmentation: as ``configs/faster_rcnn_voc.py``. Images are
fitted into 256 x 256 (default boxes 0.1-0.6 of the side: 26-154 px); the optimizer and the
detector are ``ssd_shapes.py``'s. Its measured accuracy on a VOC folder nobody tuned for:
``experiments/results/peer_training.md``. ``arg``: ``runlocal`` (a seconds-long smoke run).
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    _, runlocal = common.parse_arg(arg, __file__)
    config = common.base_config(__file__, "ssd_shapes.py", "runlocal" if runlocal else "")
    common.on_voc_folder(config, runlocal)
    return config
