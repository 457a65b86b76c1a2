r"""Faster R-CNN (ResNet-18 + FPN) on a Pascal VOC folder, COCO box AP.

Launch (the folder is converted once into a TFDS dataset under ``config.data.data_dir``):

  python -m jaxdet.main --config=configs/faster_rcnn_voc.py --workdir=workdirs/frcnn_voc \
      --config.data.path=~/datasets/VOCdevkit/VOC2007
  python -m jaxdet.main --config=configs/faster_rcnn_voc.py:runlocal --workdir=/tmp/frcnn_voc \
      --config.data.path=/tmp/tiny_voc

Expected folder layout (VOC2007 / VOC2012 as unpacked)::

    VOC2007/Annotations/000005.xml       # one XML per image (<filename>, <size>, <object>s)
    VOC2007/JPEGImages/000005.jpg
    VOC2007/ImageSets/Main/train.txt     # image stems of the "train" split
    VOC2007/ImageSets/Main/val.txt       # ... of "validation"

or a flat folder of images + XMLs (``--config.data.image_dir=images
--config.data.annotation_dir=xml``) without split files, split by ``val_fraction`` /
``split_seed``. Classes: the names found in the XMLs, sorted (VOC's usual 20-class order), or
``--config.data.class_names='("cat", "dog")'``. ``difficult`` objects are left out unless
``--config.data.keep_difficult=True``; bad records stop the conversion with the file and
problem named, or ``--config.data.skip_bad_records=True`` skips them and reports the counts.
Every image is scaled to fit ``image_size`` x ``image_size`` and padded (see
:mod:`jaxdet.data.sources`); training images are flipped (each image once mirrored per epoch);
``--config.data.scale_jitter='(0.75, 1.25)'`` adds scale jitter with a random crop and
``--config.data.photometric=0.2`` colour jitter (both seeded by the draw's position);
``--config.data.resize_short=600 --config.data.resize_max=1000
--config.data.pad_sizes='((1000, 1000),)'`` gives the classic VOC sizes.

Recipe (from scratch): torchvision's detection optimizer (SGD lr 0.02, heavy-ball momentum
0.9, weight decay 1e-4, 50 warm-up steps, cosine), gradients clipped at global norm 10,
ResNet-18 (width 64, group norm: batch norm with 4 images per step learns far slower) + FPN of
128 channels, torchvision's anchors (32-512 px), 256 sampled RoIs and 1,000 proposals per
image in training. Its measured accuracy against
torchvision with the same budget: ``experiments/results/peer_training.md``. With ImageNet
weights: ``python -m jaxdet.convert`` then ``--config.init_from=...``.
``arg``: ``runlocal`` (a seconds-long smoke run).
"""

import ml_collections

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    _, runlocal = common.parse_arg(arg, __file__)
    config = common.base_config(__file__, "faster_rcnn_shapes.py", "runlocal" if runlocal else "")
    config.init_from = ""

    config.data = common.voc_detection_data(image_size=512, runlocal=runlocal)

    config.optimizer = common.sgd_detection_optimizer()
    config.model.norm = "group"  # "batch" / "frozen" (with imported ImageNet weights)
    config.model.frozen_stages = 0  # 2: stem + layer1 frozen (torchvision's trainable_layers=3)

    if not runlocal:
        common.small_budget_two_stage(config.model)
        config.batch_size = 4
        config.eval_batch_size = 8
        config.num_train_steps = 20000
        config.eval_every_steps = 5000
        config.checkpoint_every_steps = 1000
    else:
        config.data.image_size = 64
        config.data.max_instances = 8
        config.data.val_fraction = 0.5
        config.batch_size = 2
        config.eval_batch_size = 2
        config.num_train_steps = 2
        config.checkpoint_every_steps = 2
    return config
