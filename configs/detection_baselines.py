r"""The lecture's detection rungs before Faster R-CNN, on the same scenes and COCO evaluation.

Launch (``arg``: one of ``sliding_window``, ``rcnn``, ``fast_rcnn``; add ``,runlocal`` for a
seconds-long smoke run):

  python -m jaxdet.main --config=configs/detection_baselines.py:fast_rcnn --workdir=workdirs/fast
  python -m jaxdet.main --config=configs/detection_baselines.py:rcnn --workdir=workdirs/rcnn
  python -m jaxdet.main --config=configs/detection_baselines.py:sliding_window \
      --workdir=workdirs/sliding

* ``sliding_window``: a CNN classifier with a background class over a fixed grid of windows
  (3 sizes x 3 aspect ratios, stride half the size), each warped to 24x24; class-aware NMS.
* ``rcnn``: Selective Search proposals (OpenCV contrib, fast mode, at most 500 per image,
  computed once per split and cached next to the dataset: ~0.13 s/image, ~4-5 min for the
  2,000 training scenes the first time); each proposal's crop warped to 32x32 and classified
  by its own CNN pass, with class-specific box offsets.
* ``fast_rcnn``: the same proposals, one backbone pass per image, RoI pooling (7x7) on C3,
  then the box head of Faster R-CNN.

Data, backbone (ResNet-18 of width 16, batch norm, from scratch), optimizer and evaluation
are those of ``configs/faster_rcnn_shapes.py`` so that the AP and speed comparison
(``experiments/benchmarks/detectors.py``) is about the detectors only.
"""

import ml_collections

_VARIANTS = ("sliding_window", "rcnn", "fast_rcnn")


def _parse(arg: str | None) -> tuple[str, bool]:
    tokens = [t for t in (arg or "").split(",") if t]
    runlocal = "runlocal" in tokens
    variants = [t for t in tokens if t != "runlocal"]
    if len(variants) != 1 or variants[0] not in _VARIANTS:
        raise ValueError(f"configs/detection_baselines.py: arg {arg!r}; expected one of "
                         f"{_VARIANTS}, optionally followed by ',runlocal'")
    return variants[0], runlocal


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, runlocal = _parse(arg)
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.variant = variant
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.data_dir = "~/.cache/jaxdet/tensorflow_datasets"
    config.data.image_size = 128
    config.data.min_objects = 2
    config.data.max_objects = 6
    config.data.max_instances = 8
    config.data.num_train = 2000
    config.data.num_val = 200
    config.data.seed = 0

    config.proposals = ml_collections.ConfigDict()  # Selective Search (rcnn, fast_rcnn)
    config.proposals.mode = "fast"  # "fast", "quality" or "single" (jaxdet.data.proposals)
    config.proposals.max_proposals = 500
    config.proposals.min_size = 2.0

    config.model = ml_collections.ConfigDict()
    config.model.detector = variant
    config.model.depth = 18
    config.model.width = 16
    config.model.stem = "imagenet"
    config.model.norm = "batch"
    config.model.input_norm = "imagenet"
    config.model.dtype = ""
    # RoI sampling and inference, as Faster R-CNN's (jaxdet.detection.fast_rcnn.ClassicSpec)
    config.model.roi_feature = "C3"  # Fast R-CNN pools from C3 (stride 8) at 128 px
    config.model.roi_output_size = 7
    config.model.roi_fg_iou = 0.5
    config.model.roi_bg_iou = 0.5
    config.model.roi_batch_size_per_image = 128
    config.model.roi_positive_fraction = 0.25
    config.model.roi_smooth_l1_beta = 1.0 / 9
    config.model.representation_size = 256
    config.model.rcnn_crop_size = 32
    config.model.rcnn_context = 0.0
    # the window grid (jaxdet.detection.sliding_window.WindowSpec)
    config.model.window_sizes = (16, 32, 64)
    config.model.window_aspect_ratios = (0.5, 1.0, 2.0)
    config.model.window_stride_fraction = 0.5
    config.model.window_crop_size = 24
    config.model.window_fg_iou = 0.5
    config.model.window_bg_iou = 0.3
    config.model.window_batch_size_per_image = 64
    config.model.window_positive_fraction = 0.25
    config.model.window_box_regression = False
    config.model.score_thresh = 0.05
    config.model.nms_thresh = 0.5
    config.model.detections_per_img = 100
    config.model.recall_top_n = 100
    if variant in ("rcnn", "sliding_window"):
        config.model.stem = "small"  # 24-32 px crops: no stride-4 stem

    config.loss = ml_collections.ConfigDict()
    config.loss.roi_classifier_weight = 1.0
    config.loss.roi_box_weight = 1.0
    config.loss.window_classifier_weight = 1.0
    config.loss.window_box_weight = 1.0

    config.sweep = ml_collections.ConfigDict()
    config.sweep.roi_box_weight = ()
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
    config.num_train_steps = 3000 if variant == "fast_rcnn" else 1500
    config.log_every_steps = 50
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2
    config.max_nonfinite_steps = 5
    config.recompile_policy = "warn"  # a step compiling again after warm-up: warn|fail|off
    config.recompile_after_steps = 1
    config.num_prediction_images = 6
    config.draw_score_threshold = 0.5
    config.progress_bar = True
    config.compilation_cache_dir = ""

    if runlocal:
        config.data.image_size = 64
        config.data.num_train = 8
        config.data.num_val = 4
        config.proposals.max_proposals = 50
        config.model.width = 4
        config.model.depth = 0
        config.model.stage_sizes = (1, 1, 1)
        config.model.block = "basic"
        config.model.representation_size = 16
        config.model.roi_batch_size_per_image = 16
        config.model.rcnn_crop_size = 16
        config.model.window_sizes = (16, 32)
        config.model.window_crop_size = 12
        config.model.window_batch_size_per_image = 16
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
