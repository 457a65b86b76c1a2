r"""The detectors before Faster R-CNN (sliding windows, R-CNN, Fast R-CNN) on the same scenes.

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

from jaxdet import config_files

common = config_files.load_module(__file__, "common.py")

LOSS_TERMS = ("roi_classifier", "roi_box", "window_classifier", "window_box")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    detector, runlocal = common.parse_arg(arg, __file__, ("sliding_window", "rcnn", "fast_rcnn"),
                                          default=None)
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.seed = 0
    config.data = common.scenes_detection_data()

    config.proposals = ml_collections.ConfigDict()  # Selective Search (rcnn, fast_rcnn)
    config.proposals.mode = "fast"  # "fast", "quality" or "single" (jaxdet.data.proposals)
    config.proposals.max_proposals = 500
    config.proposals.min_size = 2.0

    config.model = ml_collections.ConfigDict()
    config.model.detector = detector
    common.resnet_backbone(config.model, width=16)
    if detector in ("rcnn", "sliding_window"):
        config.model.stem = "small"  # 24-32 px crops: no stride-4 stem
    # RoI sampling and inference, as Faster R-CNN's (jaxdet.detection.fast_rcnn.ClassicSpec)
    config.model.roi_feature = "C3"  # Fast R-CNN pools from C3 (stride 8) at 128 px
    config.model.roi = ml_collections.ConfigDict(dict(
        output_size=7, fg_iou=0.5, bg_iou=0.5, batch_size_per_image=128, positive_fraction=0.25,
        smooth_l1_beta=1.0 / 9, representation_size=256))
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
    config.model.postprocess = common.postprocess(score_thresh=0.05, nms_thresh=0.5,
                                                  detections_per_img=100)
    config.model.recall_top_n = 100

    common.loss_weights_and_sweeps(config, LOSS_TERMS)
    config.optimizer = common.optimizer("adam", 2e-3, warmup_steps=100, grad_clip_norm=10.0)
    common.training_loop(config, batch_size=8, eval_batch_size=50,
                         num_train_steps=3000 if detector == "fast_rcnn" else 1500,
                         log_every_steps=50, eval_every_steps=1000, checkpoint_every_steps=500)
    config.draw_score_threshold = 0.5

    if runlocal:
        config.data.update(dict(image_size=64, num_train=8, num_val=4))
        config.proposals.max_proposals = 50
        common.tiny_resnet(config.model)
        config.model.stage_sizes = (1, 1, 1)
        config.model.roi.representation_size = 16
        config.model.roi.batch_size_per_image = 16
        config.model.rcnn_crop_size = 16
        config.model.window_sizes = (16, 32)
        config.model.window_crop_size = 12
        config.model.window_batch_size_per_image = 16
        config.model.postprocess.detections_per_img = 10
        config.model.recall_top_n = 20
        common.runlocal_loop(config)
    return config
