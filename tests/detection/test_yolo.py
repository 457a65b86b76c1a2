"""YOLO v1: targets on a hand-built grid, losses vs NumPy, decoding, NMS, train steps."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet.detection import yolo

SIZE = 32  # model tests: 32 px input, C3 at stride 8 -> S = 4


def _config(**overrides) -> ml_collections.ConfigDict:
    model = {
        "depth": 0, "stage_sizes": (1, 1), "block": "basic", "width": 4, "stem": "imagenet",
        "norm": "batch", "input_norm": "none", "yolo_grid_size": 4, "yolo_boxes_per_cell": 2,
        "yolo_head_convs": 1, "yolo_head_channels": 8,
        "postprocess": {"detections_per_img": 6},
    }
    model.update(overrides)
    return ml_collections.ConfigDict({"model": model})


def _inputs(batch=2):
    rng = np.random.default_rng(0)
    images = np.full((batch, SIZE, SIZE, 3), 0.2, np.float32)
    images += rng.uniform(0, 0.05, images.shape).astype(np.float32)
    images[:, 2:14, 2:14] = [0.9, 0.1, 0.1]
    images[:, 16:30, 12:28] = [0.1, 0.1, 0.9]
    gt_boxes = np.zeros((batch, 3, 4), np.float32)
    gt_boxes[:, 0] = [2, 2, 14, 14]
    gt_boxes[:, 1] = [12, 16, 28, 30]
    targets = {"gt_boxes": jnp.asarray(gt_boxes),
               "gt_labels": jnp.asarray([[0, 1, 0]] * batch, jnp.int32),
               "gt_valid": jnp.asarray([[True, True, False]] * batch)}
    return jnp.asarray(images), targets


@pytest.fixture(scope="module")
def setup():
    model = yolo.create_model(_config(), num_classes=2)
    images, targets = _inputs()
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), images, train=False)
    return model, variables, images, targets


# --- targets, losses, decoding: pure functions, hand-built and NumPy references ---------


def _boxes(cells_boxes: dict[tuple[int, int], list[float]], s: int, b: int) -> np.ndarray:
    """``[S*S, B, 4]`` predicted boxes: far away (IoU 0 with anything) except those given."""
    out = np.tile(np.asarray([200, 200, 201, 201], np.float32), (s * s, b, 1))
    for (cell, k), box in cells_boxes.items():
        out[cell, k] = box
    return out


def test_targets_hand_built_grid():
    # 64x64 input, S = 4: cells of 16 px; B = 2 predictors per cell.
    gt = np.asarray([
        [4, 20, 28, 36],  # centre (16, 28): x on the border 1.0 -> column 1; row 1 -> cell 5
        [40, 40, 60, 56],  # centre (50, 48): column 3 (3.125), row 3 (3.0) -> cell 15
        [48, 50, 52, 54],  # centre (50, 52): also cell 15, smaller -> gets no predictor
        [0, 0, 10, 10],  # padding (cell 0): ignored
    ], np.float32)
    labels = np.asarray([1, 2, 0, 1], np.int32)
    valid = np.asarray([True, True, True, False])
    pred = _boxes({(5, 0): [4, 20, 16, 36],  # IoU 0.5 with gt 0
                   (5, 1): [4, 20, 28, 30],  # IoU 10/16 = 0.625: responsible
                   (15, 0): [40, 40, 60, 56],  # exact: responsible
                   (15, 1): [48, 50, 52, 54],  # the small gt's twin, IoU 16/320
                   (0, 0): [0, 0, 10, 10]}, 4, 2)
    targets = jax.jit(chex.assert_max_traces(yolo.yolo_targets, n=1), static_argnums=(4, 5))
    t = targets(pred, gt, labels, valid, 4, (64, 64))
    expected_cell_gt = np.full(16, -1)
    expected_cell_gt[5], expected_cell_gt[15] = 0, 1
    np.testing.assert_array_equal(t.cell_gt, expected_cell_gt)
    resp = np.zeros((16, 2), bool)
    resp[5, 1] = resp[15, 0] = True
    np.testing.assert_array_equal(t.responsible, resp)
    np.testing.assert_allclose(t.xywh[5], [0.0, 0.75, np.sqrt(24 / 64), 0.5], atol=1e-6)
    np.testing.assert_allclose(t.xywh[15], [0.125, 0.0, np.sqrt(20 / 64), 0.5], atol=1e-6)
    assert np.all(np.asarray(t.xywh)[expected_cell_gt < 0] == 0)
    np.testing.assert_array_equal(np.asarray(t.labels)[[5, 15]], [1, 2])
    np.testing.assert_allclose(t.iou[5], [0.5, 0.625], atol=1e-6)
    np.testing.assert_allclose(t.iou[15], [1.0, 16 / 320], atol=1e-6)
    assert np.all(np.asarray(t.iou)[expected_cell_gt < 0] == 0)

    # Equal areas in one cell: the lower gt index wins; predictors tie at IoU 0 -> index 0.
    # (Same [4, 4] gt shape: no second compilation.)
    twins = np.zeros((4, 4), np.float32)
    twins[:2] = [[20, 20, 28, 28], [22, 22, 30, 30]]
    t2 = targets(_boxes({}, 4, 2), twins, labels, np.arange(4) < 2, 4, (64, 64))
    assert int(t2.cell_gt[5]) == 0 and np.sum(t2.cell_gt >= 0) == 1
    np.testing.assert_array_equal(t2.responsible[5], [True, False])
    # A centre on the far image border goes to the last cell (x = 1).
    edge = np.zeros((4, 4), np.float32)
    edge[0] = [64, 0, 64, 8]
    t3 = targets(_boxes({}, 4, 2), edge, labels, valid & (np.arange(4) == 0), 4, (64, 64))
    assert int(t3.cell_gt[3]) == 0 and np.sum(t3.cell_gt >= 0) == 1
    np.testing.assert_allclose(t3.xywh[3], [1.0, 0.25, 0.0, np.sqrt(8 / 64)], atol=1e-6)


def test_decode_by_hand():
    s, b, c = 2, 2, 3
    raw = np.zeros((s, s, b * 5 + c), np.float32)  # sigmoid 0.5 everywhere
    raw[1, 0, 5:10] = [np.log(3), 0, 0, np.log(3), 0]  # predictor 1 of cell (1, 0)
    decode = jax.jit(yolo.decode_predictions, static_argnums=(1, 2))
    pred = decode(raw, b, (64, 32))  # H = 64, W = 32: cells 16 x 32
    chex.assert_shape(pred.boxes, (4, 2, 4))
    chex.assert_shape(pred.class_probs, (4, 3))
    # cell (0, 0): centre (8, 16), w = 0.25 * 32 = 8, h = 0.25 * 64 = 16
    np.testing.assert_allclose(pred.boxes[0, 0], [4, 8, 12, 24], atol=1e-5)
    # cell (0, 1) = index 1: centre (24, 16)
    np.testing.assert_allclose(pred.boxes[1, 1], [20, 8, 28, 24], atol=1e-5)
    # cell (1, 0) = index 2, predictor 1: x = 0.75 -> cx 12, y 0.5 -> cy 48, w 8, h = 0.5625*64
    np.testing.assert_allclose(pred.boxes[2, 1], [8, 48 - 18, 16, 48 + 18], atol=1e-5)
    np.testing.assert_allclose(pred.confidence, 0.5)
    np.testing.assert_allclose(pred.class_probs, 1 / 3, rtol=1e-6)
    # [S * S, ch] input gives the same result
    flat = decode(raw.reshape(4, -1), b, (64, 32))
    np.testing.assert_allclose(flat.boxes, pred.boxes)


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _np_iou(a, g):
    iw = max(0.0, min(a[2], g[2]) - max(a[0], g[0]))
    ih = max(0.0, min(a[3], g[3]) - max(a[1], g[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter)


def _np_loss(raw, gt, labels, s, b, c, size, rescore):
    """The paper's loss with plain loops (assignment: largest gt in a cell, best-IoU box)."""
    cell_px = size / s
    terms = dict.fromkeys(yolo.LOSS_TERMS, 0.0)
    owner = {}
    for g, box in enumerate(gt):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        cell = int(min(cy // cell_px, s - 1)) * s + int(min(cx // cell_px, s - 1))
        area = (box[2] - box[0]) * (box[3] - box[1])
        if cell not in owner or area > owner[cell][1]:
            owner[cell] = (g, area)
    for cell in range(s * s):
        i, j = divmod(cell, s)
        out = raw[i, j]
        preds = []
        for k in range(b):
            x, y, sw, sh, conf = _np_sigmoid(out[5 * k: 5 * k + 5])
            cx, cy = (j + x) * cell_px, (i + y) * cell_px
            w, h = sw**2 * size, sh**2 * size
            preds.append(((x, y, sw, sh), conf, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
        if cell not in owner:
            for _, conf, _ in preds:
                terms["yolo_noobj"] += conf**2
            continue
        g = owner[cell][0]
        box = gt[g]
        ious = [_np_iou(p[2], box) for p in preds]
        r = int(np.argmax(ious))
        tx = ((box[0] + box[2]) / 2 / cell_px - j, (box[1] + box[3]) / 2 / cell_px - i,
              np.sqrt((box[2] - box[0]) / size), np.sqrt((box[3] - box[1]) / size))
        for k, (xywh, conf, _) in enumerate(preds):
            if k == r:
                terms["yolo_coord"] += sum((p - q) ** 2 for p, q in zip(xywh, tx, strict=True))
                terms["yolo_obj"] += (conf - (ious[k] if rescore else 1.0)) ** 2
            else:
                terms["yolo_noobj"] += conf**2
        e = np.exp(out[5 * b:] - out[5 * b:].max())
        probs = e / e.sum()
        terms["yolo_class"] += sum((probs[q] - (q == labels[g])) ** 2 for q in range(c))
    return terms


@pytest.mark.parametrize("rescore", [True, False])
def test_losses_match_numpy(rescore):
    s, b, c, size = 3, 2, 3, 48
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 1.0, (s, s, b * 5 + c)).astype(np.float32)
    gt = np.asarray([[5, 6, 30, 20], [20, 25, 44, 47], [26, 30, 34, 38], [0, 0, 1, 1]],
                    np.float32)  # gts 1 and 2 share cell (2, 2)... centre rows 36, 34 -> row 2
    labels = np.asarray([2, 0, 1, 0])
    valid = np.asarray([True, True, True, False])

    @jax.jit
    def fn(raw, gt, labels, valid):
        pred = yolo.decode_predictions(raw, b, (size, size))
        t = yolo.yolo_targets(pred.boxes, gt, labels, valid, s, (size, size))
        return yolo.yolo_losses(pred, t, rescore)

    got = fn(raw, gt, labels, valid)
    want = _np_loss(raw, gt[:3], labels, s, b, c, size, rescore)
    for k in yolo.LOSS_TERMS:
        np.testing.assert_allclose(float(got[k]), want[k], rtol=2e-5, err_msg=k)
    assert all(want[k] > 0 for k in yolo.LOSS_TERMS)


def test_postprocess_nms_and_candidates():
    # S = 1, B = 3, C = 2 on a 32x32 input: three boxes by hand through the raw outputs.
    def logit(p):
        return np.log(p / (1 - p))

    raw = np.zeros((1, 1, 3 * 5 + 2), np.float32)
    raw[0, 0, 0:5] = [0, 0, logit(0.5), logit(0.5), logit(0.9)]  # [12, 12, 20, 20], conf .9
    raw[0, 0, 5:10] = [0, 0, logit(0.45), logit(0.5), logit(0.8)]  # IoU 0.81 with box 0
    raw[0, 0, 10:15] = [logit(0.1), logit(0.1), logit(0.3), logit(0.3), logit(0.2)]
    raw[0, 0, 15:17] = [np.log(3.0), 0.0]  # p = (0.75, 0.25)
    post = jax.jit(lambda r, hw: yolo.postprocess(
        yolo.decode_predictions(r, 3, (32, 32)), hw, score_thresh=0.1, nms_thresh=0.5,
        detections_per_img=4))
    dets, cand, cand_valid = post(raw, jnp.asarray([32.0, 32.0]))
    # scores conf * p: box0 .675/.225, box1 .6/.2, box2 .15/.05; box1 suppressed per class
    np.testing.assert_allclose(dets.scores, [0.675, 0.225, 0.15, 0.0], atol=1e-5)
    np.testing.assert_array_equal(dets.classes, [0, 1, 0, 0])
    np.testing.assert_array_equal(dets.valid, [True, True, True, False])
    np.testing.assert_allclose(dets.boxes[0], [12, 12, 20, 20], atol=1e-4)
    np.testing.assert_allclose(dets.boxes[1], [12, 12, 20, 20], atol=1e-4)
    np.testing.assert_allclose(dets.boxes[3], 0.0)
    # candidates: all three boxes by descending confidence, before NMS
    np.testing.assert_allclose(cand[1], [16 - 3.24, 12, 16 + 3.24, 20], atol=1e-4)
    np.testing.assert_allclose(cand[0], np.asarray(dets.boxes[0]), atol=1e-6)
    assert np.all(cand_valid)
    # clipping to a smaller image: box2 [0.72 +- 1.44] is clipped at 0, still valid
    _, cand2, _ = post(raw, jnp.asarray([16.0, 14.0]))
    assert float(jnp.max(cand2[:, 2])) <= 14.0 and float(jnp.max(cand2[:, 3])) <= 16.0


# --- the module: shapes, padding, training, compilation ---------------------------------


def test_spec_and_errors():
    spec = yolo.YoloSpec.from_config(_config().model, num_classes=2)
    assert spec.yolo_grid_size == 4 and spec.channels == 2 * 5 + 2
    with pytest.raises(ValueError, match="yolo_head"):
        yolo.YoloSpec(num_classes=2, yolo_head="mlp")
    with pytest.raises(ValueError, match="dropout"):
        yolo.YoloSpec(num_classes=2, yolo_dropout=1.0)
    images, targets = _inputs(1)
    wrong = yolo.create_model(_config(yolo_grid_size=5), num_classes=2)
    with pytest.raises(ValueError, match="S x S"):
        jax.eval_shape(lambda: wrong.init(jax.random.key(0), images, train=False))
    # Dropout needs the per-image keys in training (traced only, nothing compiled).
    drop = yolo.create_model(_config(yolo_dropout=0.5), num_classes=2)
    variables = jax.eval_shape(lambda: drop.init(jax.random.key(0), images, train=False))
    train = lambda v, rng: drop.apply(v, images, train=True, targets=targets,  # noqa: E731
                                      rng=rng, mutable=["batch_stats"])
    with pytest.raises(ValueError, match="needs rng"):
        jax.eval_shape(lambda v: train(v, None), variables)
    out, _ = jax.eval_shape(train, variables, jax.random.split(jax.random.key(1), 1))
    assert set(out["terms"]) == set(yolo.LOSS_TERMS)


def test_train_and_test_outputs(setup):
    model, variables, images, targets = setup
    assert set(variables["params"]) == {"body", "head_conv0", "head_out"}
    train = jax.jit(lambda v, t: model.apply(v, images, train=True, targets=t,
                                             mutable=["batch_stats"]))
    out, _ = train(variables, targets)
    assert set(out["terms"]) == set(yolo.LOSS_TERMS)
    for s, n in out["terms"].values():
        chex.assert_shape([s, n], ())
        assert np.isfinite(float(s)) and float(n) == 2.0
    assert float(out["recall"][1]) == 4.0 and float(out["num_foreground_rois"][0]) == 4.0

    hw = jnp.asarray([[SIZE, SIZE], [24, SIZE]], jnp.int32)
    test = jax.jit(lambda v: model.apply(v, images, hw, train=False))(variables)
    chex.assert_shape(test["boxes"], (2, 6, 4))
    chex.assert_shape([test["scores"], test["classes"], test["valid"]], (2, 6))
    chex.assert_shape(test["proposals"], (2, 4 * 4 * 2, 4))
    chex.assert_shape(test["proposal_valid"], (2, 32))
    chex.assert_type([test["boxes"], test["scores"], test["classes"]],
                     [jnp.float32, jnp.float32, jnp.int32])
    assert float(jnp.max(test["boxes"][1, :, 3])) <= 24.0
    assert float(jnp.max(test["proposals"][1, :, 3])) <= 24.0

    # A padded example adds nothing, whatever its gt.
    padded = dict(targets, example_mask=jnp.asarray([1.0, 0.0]))
    a, _ = train(variables, padded)
    b, _ = train(variables, dict(padded, gt_boxes=padded["gt_boxes"].at[1].set(3.0)))
    for (sa, na), (sb, nb) in zip(a["terms"].values(), b["terms"].values(), strict=True):
        assert float(na) == float(nb) == 1.0
        np.testing.assert_allclose(sa, sb, rtol=1e-6)
    assert float(a["recall"][1]) == 2.0


def test_adam_steps_lower_the_loss_without_recompiling(setup):
    model, variables, images, targets = setup
    weights = {"yolo_coord": 5.0, "yolo_obj": 1.0, "yolo_noobj": 0.5, "yolo_class": 1.0}

    def loss(params, batch_stats, images):
        out, upd = model.apply({"params": params, "batch_stats": batch_stats}, images,
                               train=True, targets=targets, mutable=["batch_stats"])
        total = sum(weights[k] * s / n for k, (s, n) in out["terms"].items())
        return total, upd["batch_stats"]

    opt = optax.adam(1e-2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, batch_stats, state, images):
        (value, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(
            params, batch_stats, images)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), batch_stats, state, value

    params, batch_stats = variables["params"], variables["batch_stats"]
    state = opt.init(params)
    values = []
    for i in range(15):
        noisy = images + 0.01 * i  # new values, same shapes: one compilation
        params, batch_stats, state, value = step(params, batch_stats, state, noisy)
        values.append(float(value))
    assert np.all(np.isfinite(values))
    assert values[-1] < 0.5 * values[0], values


def test_fc_head_any_grid():
    model = yolo.create_model(_config(yolo_head="fc", yolo_grid_size=3, yolo_fc_size=16),
                              num_classes=2)
    images, targets = _inputs(2)
    # Shapes only (traced, not compiled): the fc head gives any S.
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    chex.assert_shape(variables["params"]["head_fc"]["kernel"], (4 * 4 * 8, 16))
    test = jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
    chex.assert_shape(test["proposals"], (2, 3 * 3 * 2, 4))
    chex.assert_shape(test["boxes"], (2, 6, 4))
    # vmap over images of the per-image targets gives [N, S2, ...] shapes
    def one(raw, g, lab, v):
        pred = yolo.decode_predictions(raw, 2, (SIZE, SIZE))
        return yolo.yolo_targets(pred.boxes, g, lab, v, 3, (SIZE, SIZE))

    t = jax.jit(jax.vmap(one))(jnp.zeros((2, 9, 12)), targets["gt_boxes"],
                               targets["gt_labels"], targets["gt_valid"])
    chex.assert_shape([t.responsible, t.iou], (2, 9, 2))
    chex.assert_shape(t.xywh, (2, 9, 4))
    np.testing.assert_array_equal(np.sum(t.cell_gt >= 0, axis=1), [2, 2])
