"""Anchor grids: torchvision AnchorGenerator goldens, the documented order, rounding."""

import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import ops
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

# The configurations of experiments/golden/make_box_fixtures.py (image 64 x 96).
CONFIGS = {
    "fpn": (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5, (4, 8, 16, 32, 64)),
    "multi": (((16, 24.5, 40),), ((0.25, 0.5, 1.0, 1.5, 3.0),), (8,)),
    "odd": (((20, 50), (100,)), ((0.7, 1.3), (1.0, 2.0)), (6, 12)),
}


@pytest.mark.parametrize("name", ["fpn", "multi", "odd"])
def test_generate_anchors_matches_torchvision_anchor_generator(name):
    fx = np.load(FIXTURES / "anchors.npz")
    sizes, ratios, _ = CONFIGS[name]
    grids = [tuple(int(v) for v in g) for g in fx[f"grid_{name}"]]
    image_h, image_w = (int(v) for v in fx["image_hw"])
    strides = [(image_h // h, image_w // w) for h, w in grids]  # torchvision's rule
    levels = ops.generate_anchors(grids, strides, sizes, ratios)
    assert len(levels) == len(grids)
    for level, (h, w), s, r in zip(levels, grids, sizes, ratios, strict=True):
        chex.assert_shape(level, (h * w * len(s) * len(r), 4))
        chex.assert_type(level, jnp.float32)
    np.testing.assert_array_equal(np.concatenate(levels), fx[f"anchors_{name}"])


# --- cell anchors ----------------------------------------------------------------------------


def test_cell_anchors_rounded_like_torchvision():
    cells = ops.cell_anchors((32,), (0.5, 1.0, 2.0))
    np.testing.assert_array_equal(
        cells, [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]
    )


def test_cell_anchors_unrounded_keep_size_squared_area():
    cells = ops.cell_anchors((32,), (0.5, 2.0), round_cells=False)
    a, b = 16 * math.sqrt(2), 16 / math.sqrt(2)  # w/2, h/2 at ratio h/w = 0.5
    np.testing.assert_allclose(cells, [[-a, -b, a, b], [-b, -a, b, a]], rtol=1e-6)
    areas = (cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])
    np.testing.assert_allclose(areas, [32 * 32] * 2, rtol=1e-5)


def test_cell_anchors_round_half_to_even():
    # size 5, ratio 1: +-2.5 -> +-2 (half to even, as torch.round), not 3.
    np.testing.assert_array_equal(ops.cell_anchors((5,), (1.0,)), [[-2, -2, 2, 2]])
    np.testing.assert_array_equal(ops.cell_anchors((7,), (1.0,)), [[-4, -4, 4, 4]])


def test_cell_anchors_in_ratio_major_order():
    cells = ops.cell_anchors((10, 20), (0.25, 4.0), round_cells=False)
    widths = cells[:, 2] - cells[:, 0]
    heights = cells[:, 3] - cells[:, 1]
    np.testing.assert_allclose(widths, [20, 40, 5, 10], rtol=1e-6)
    np.testing.assert_allclose(heights, [5, 10, 20, 40], rtol=1e-6)


# --- grids -----------------------------------------------------------------------------------


def test_level_anchors_follow_documented_order_with_rectangular_stride():
    sizes, ratios = (8, 16), (0.5, 1.0, 2.0)
    h, w, stride = 3, 5, (4, 6)
    anchors = np.asarray(ops.generate_level_anchors((h, w), stride, sizes, ratios))
    cells = ops.cell_anchors(sizes, ratios)
    a = len(cells)
    chex.assert_shape(anchors, (h * w * a, 4))
    for i in range(h):
        for j in range(w):
            for k in range(a):
                shift = np.array([j * 6, i * 4, j * 6, i * 4], np.float32)
                np.testing.assert_array_equal(anchors[(i * w + j) * a + k], cells[k] + shift)


def test_generate_anchors_levels_equal_single_level_anchors():
    levels = ops.generate_anchors([(4, 6), (2, 3)], [8, 16], ((32,), (64,)), ((1.0, 2.0),) * 2)
    np.testing.assert_array_equal(
        levels[1], ops.generate_level_anchors((2, 3), 16, (64,), (1.0, 2.0))
    )
    centres = (levels[0][:, :2] + levels[0][:, 2:]) / 2
    np.testing.assert_array_equal(centres[-1], [5 * 8, 3 * 8])  # top-left of last cell


def test_generate_anchors_mismatched_levels_raise():
    with pytest.raises(ValueError):
        ops.generate_anchors([(4, 4)], [8, 16], ((32,),), ((1.0,),))


@helpers.with_and_without_jit
def test_anchors_usable_inside_jit_and_vmap(variant):
    def f(deltas):
        anchors = ops.generate_level_anchors((2, 2), 8, (16,), (1.0,))
        return ops.decode_boxes(deltas, anchors)

    out = variant(f)(jnp.zeros((4, 4)))
    np.testing.assert_array_equal(out[3], [0, 0, 16, 16])
    batched = jax.vmap(f)(jnp.zeros((2, 4, 4)))
    chex.assert_shape(batched, (2, 4, 4))
    np.testing.assert_array_equal(batched[1], out)
