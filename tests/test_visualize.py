"""Drawing helpers: skeletons on an image."""

import numpy as np

from jaxdet import visualize


def test_draw_skeletons_draws_limbs_and_joints_only():
    image = np.zeros((20, 30, 3), np.uint8)
    # One person with 3 keypoints; limbs (0, 1) horizontal along row 5, (1, 2) vertical.
    kp = np.array([[[2.0, 5.0, 1.0], [20.0, 5.0, 1.0], [20.0, 15.0, 1.0]]])
    out = visualize.draw_skeletons(image, kp, [(0, 1), (1, 2)], colour=(255, 0, 0))
    assert out.shape == image.shape and out.dtype == np.uint8
    drawn = (out == (255, 0, 0)).all(-1)
    assert drawn[5, 2:21].all() and drawn[5:16, 20].all()
    assert not drawn[10:, :15].any() and not drawn[:3].any()
    assert not image.any()  # the input is left untouched
    # No persons: the image comes back unchanged.
    np.testing.assert_array_equal(
        visualize.draw_skeletons(image, np.zeros((0, 3, 3)), [(0, 1)]), image)
