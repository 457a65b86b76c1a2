r"""Semantic segmentation of a folder of images + label images, mean IoU.

Launch (the folder is converted once into a TFDS dataset under ``config.data.data_dir``):

  python -m jaxdet.main --config=configs/segmentation_folder.py --workdir=workdirs/seg_folder \
      --config.data.path=~/datasets/my_segmentation
  python -m jaxdet.main --config=configs/segmentation_folder.py --workdir=workdirs/seg_voc \
      --config.data.path=~/datasets/VOCdevkit/VOC2012 --config.data.image_dir=JPEGImages \
      --config.data.label_dir=SegmentationClass --config.data.split_dir=ImageSets/Segmentation
  python -m jaxdet.main --config=configs/segmentation_folder.py:runlocal --workdir=/tmp/segf \
      --config.data.path=/tmp/tiny_folder

Expected folder layout::

    my_segmentation/images/a.jpg       # RGB images
    my_segmentation/labels/a.png       # same stem: palette or grey PNG of class indices,
                                       # 255 = ignored (or RGB mapped by the class colours)
    my_segmentation/classes.txt        # "name" or "name r g b" per line, index order
    my_segmentation/splits/train.txt   # optional: stems per split (else val_fraction)
    my_segmentation/splits/val.txt

Class names come from ``classes.txt`` or ``--config.data.class_names='("bg", "road")'``
(index 0 first; for VOC 2012: background + the 20 classes). Bad records (a label value outside
the classes, image/label size mismatch, a missing or unreadable file) stop the conversion
naming the file, or are skipped and counted with ``--config.data.skip_bad_records=True``.
Every image is scaled to fit ``image_size`` x ``image_size`` and padded (labels with 255);
augmentations (flip, scale jitter with crop, colour jitter, declared sizes) are config flags,
off by default (:mod:`jaxdet.data.sources`).
The model is configs/segmentation.py's encoder-decoder (``arg`` takes its variants, plus
``runlocal``).
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = config_files.load_module(__file__, "segmentation.py").VARIANTS
    _, runlocal = common.parse_arg(arg, __file__, variants, default="unpool")
    config = common.base_config(__file__, "segmentation.py", arg or "")
    config.data = ml_collections.ConfigDict()
    config.data.source = "folder"
    config.data.path = ""  # required: --config.data.path=<folder>
    config.data.data_dir = common.DATA_DIR
    config.data.image_size = 32 if runlocal else 256  # fitted into a square, padded
    config.data.image_dir = "images"
    config.data.label_dir = "labels"
    config.data.split_dir = "splits"
    config.data.classes_file = "classes.txt"
    config.data.class_names = ()  # () = from classes_file
    config.data.ignore_index = 255
    config.data.val_fraction = 0.5 if runlocal else 0.1  # without split files
    config.data.split_seed = 0
    config.data.skip_bad_records = False
    # jaxdet.data.sources / augment, all off (padding reads as ignore_index): training flips,
    # shorter side resize (+ max), (min, max) scale jitter with crop, colour jitter strength,
    # declared padded sizes (() = image_size squares)
    config.data.random_flip = False
    config.data.resize_short = 0
    config.data.resize_max = 0
    config.data.scale_jitter = ()
    config.data.photometric = 0.0
    config.data.pad_sizes = ()
    if runlocal:
        config.batch_size = 2
        config.eval_batch_size = 2
        config.num_train_steps = 2
        config.checkpoint_every_steps = 2
    else:
        config.batch_size = 8
        config.eval_batch_size = 8
        config.num_train_steps = 5000
        config.eval_every_steps = 1000
        config.checkpoint_every_steps = 1000
    return config
