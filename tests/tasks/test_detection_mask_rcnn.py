"""The detection task end to end through the training loop, on Faster R-CNN with Mask R-CNN's
branch: two scenes overfitted to box AP50 = 1 and mask AP50 = 1, the mask loss falling, and
the loss and predict functions traced once each (one compiled train step, one eval step).

One run serves both detectors' overfitting checks (box AP50 = 1 on a 2-image
set, no recompilation; mask AP50 = 1): the box path is Faster R-CNN's, unchanged by
the branch (tests/detection/test_mask_head.py checks the wiring), and one run costs half of
two in the suite's time budget."""

import json

from jaxdet.tasks import detection as det_task
from jaxdet.tasks import detection_eval
from jaxdet.train import loop
from tests.helpers import load_config


def test_overfits_two_images_to_box_and_mask_ap50_one(tmp_path, data_dir, monkeypatch):
    """2 scenes (2-3 shapes each, 64 px): after 200 steps the box and mask AP50 on them are
    1.0 (masks pasted at the image size, thresholded at 0.5, RLE-scored by pycocotools against
    the full-resolution gt masks); the mask loss falls; traced and compiled once."""
    traces = {"loss": 0, "predict": 0}
    make_loss_fn, make_predict_fn = det_task.make_loss_fn, det_task.make_predict_fn

    def counting(kind, make):
        def factory(model, config):
            fn = make(model, config)

            def traced(*args, **kwargs):
                traces[kind] += 1
                return fn(*args, **kwargs)
            return traced
        return factory

    monkeypatch.setattr(det_task, "make_loss_fn", counting("loss", make_loss_fn))
    monkeypatch.setattr(det_task, "make_predict_fn", counting("predict", make_predict_fn))
    config = load_config("mask_rcnn_shapes", "runlocal")
    config.data.data_dir = data_dir
    config.data.max_instances = 4
    config.data.num_train, config.data.num_val = 2, 1
    config.data.min_objects, config.data.max_objects = 2, 3
    config.eval_split = "train"
    config.model.width = 8
    config.model.fpn_channels = 16
    config.model.roi.representation_size = 64
    config.model.mask.width = 16
    config.optimizer.learning_rate = 3e-3
    config.optimizer.schedule = "constant"
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 200
    config.log_every_steps = 25
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 200
    config.num_prediction_images = 0
    config.progress_bar = False
    config.recompile_policy = "fail"
    results = loop.train_and_evaluate(config, str(tmp_path))
    assert results["AP50"] == 1.0, results
    assert results["AR100@0.5"] == 1.0, results
    assert results["AP"] >= 0.5, results
    assert results["mask_AP50"] == 1.0, results
    assert results["mask_AP"] >= 0.5, results
    assert traces == {"loss": 1, "predict": 1}, traces  # two evaluations, one trace
    assert results["train_step_compilations"] == 1, results
    assert results["eval_step_compilations"] == 1, results
    assert (tmp_path / detection_eval.RESULTS_FILE).exists()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    mask_losses = [m["train/loss/roi_mask"] for m in logged if "train/loss/roi_mask" in m]
    assert len(mask_losses) >= 5, logged[:2]
    assert mask_losses[-1] < 0.5 * mask_losses[0], mask_losses
