"""experiments/benchmarks/vs_torchvision.py: the line that states how much RoI work each side did
(the timed comparison itself is a benchmark, not a test)."""

from __future__ import annotations

import pytest

from tests.helpers import load_config, load_script


@pytest.mark.parametrize("jax_positives, slots", [
    ([20.5], 128), ([20.5, 33.0], 192)])  # 82 / 132 positives in a batch of 4: 1 / 2 chunks
def test_mask_rcnn_line_counts_the_mask_heads_rois_of_both_sides(jax_positives, slots):
    module = load_script("experiments/benchmarks/vs_torchvision.py", "vs_torchvision")
    config = load_config("mask_rcnn_coco")
    line = module.positives_line(config, 4, jax_positives, [30.0, 31.0])
    assert f"jaxdet {slots} slots" in line
    assert "torchvision 122.0 (its positives)" in line
    assert "Sampled positive RoIs per image: jaxdet" in line and "torchvision 30.5" in line


def test_faster_rcnn_line_has_no_mask_head():
    module = load_script("experiments/benchmarks/vs_torchvision.py", "vs_torchvision")
    line = module.positives_line(load_config("faster_rcnn_coco"), 4, [20.0],
                                 [23.0])
    assert line == "Sampled positive RoIs per image: jaxdet 20.0, torchvision 23.0; "
