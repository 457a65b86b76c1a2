"""Segmentation models: shapes/dtypes of every variant, the sliding-window contract, config
errors, normalisation collections, cross-device BatchNorm, and a short overfit."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet.models import segmentation as seg
from jaxdet.models import sliding_window_segmentation as swseg

NUM_CLASSES = 5
TINY_ED = {"name": "encoder_decoder", "width": 4, "num_levels": 3, "blocks_per_level": 1}


def _images(b=2, hw=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(b, hw, hw, 3)), jnp.float32)


def _init(model, x):
    return model.init(jax.random.key(0), x, train=False)


def _init_and_run(model, x):
    """Variables, train output, updated collections, eval output.

    Runs op by op: the tiny models share most op shapes, so JAX's per-op compile cache makes
    this several times cheaper than compiling one program per model.
    """
    variables = _init(model, x)
    train_out, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return variables, train_out, updated, model.apply(variables, x, train=False)


_ED_MODES = [
    (d, u) for d in seg.DOWNSAMPLE_MODES for u in seg.UPSAMPLE_MODES
    if not (u == "max_unpool" and d != "max_pool")
]


# --- output shapes and dtypes of every variant -----------------------------------------------


@pytest.mark.parametrize(
    "downsample, upsample", _ED_MODES, ids=[f"{d}-{u}" for d, u in _ED_MODES]
)
def test_encoder_decoder_every_resampling_mode_shapes_and_dtypes(downsample, upsample):
    model = seg.create_model(
        {**TINY_ED, "downsample": downsample, "upsample": upsample,
         "transpose_kernel_size": 3}, NUM_CLASSES)
    _, train_out, _, eval_out = _init_and_run(model, _images())
    for out in (train_out, eval_out):
        chex.assert_shape(out, (2, 16, 16, NUM_CLASSES))
        chex.assert_type(out, jnp.float32)
        chex.assert_tree_all_finite(out)


@pytest.mark.parametrize(
    "skip, upsample_input",
    [("add", "reduce_1x1"), ("none", "full"), ("none", "reduce_3x3")],
    ids=["add-reduce_1x1", "none-full", "none-reduce_3x3"],
)
def test_encoder_decoder_skip_modes_shapes_and_dtypes(skip, upsample_input):
    config = {**TINY_ED, "skip": skip, "norm": "group", "upsample_input": upsample_input}
    model = seg.create_model(config, NUM_CLASSES)
    _, out, _, _ = _init_and_run(model, _images())
    chex.assert_shape(out, (2, 16, 16, NUM_CLASSES))
    chex.assert_type(out, jnp.float32)


def test_add_skip_needs_reduced_channels():
    with pytest.raises(ValueError, match="skip='add'.*upsample_input"):
        seg.create_model({**TINY_ED, "skip": "add"}, NUM_CLASSES)


@pytest.mark.parametrize(
    "config, hw_out",
    [
        pytest.param({"name": "fcn_full_res", "fcn_width": 4, "fcn_depth": 2}, 16, id="fcn"),
        pytest.param({"name": "pixel_colour", "pixel_width": 4, "pixel_depth": 2}, 16,
                     id="pixel"),
        pytest.param({"name": "sliding_window", "patch_size": 7, "patch_width": 4,
                      "train_stride": 4, "eval_stride": 2}, None, id="sliding"),
    ],
)
def test_other_models_output_shapes_and_dtypes(config, hw_out):
    model = seg.create_model(config, NUM_CLASSES)
    _, train_out, _, eval_out = _init_and_run(model, _images())
    for out, stride in ((train_out, 4), (eval_out, 2)):
        side = hw_out or 16 // stride
        chex.assert_shape(out, (2, side, side, NUM_CLASSES))
        chex.assert_type(out, jnp.float32)


def test_per_level_widths_and_blocks_set_kernel_shapes():
    config = {**TINY_ED, "level_widths": (4, 8, 12), "level_blocks": (1, 2, 1),
              "decoder_blocks": 1, "upsample_input": "reduce_1x1"}
    model = seg.create_model(config, NUM_CLASSES)
    variables, out, _, _ = _init_and_run(model, _images())
    chex.assert_shape(out, (2, 16, 16, NUM_CLASSES))
    shapes = [v["Conv_0"]["kernel"].shape for v in variables["params"].values()
              if "Conv_0" in v]
    # Encoder 3x3 kernels: 3->4 | 4->8, 8->8 | 8->12; decoder: concat(8+8)->8, (4+4)->4.
    assert [k for k in shapes if k[:2] == (3, 3)] == [
        (3, 3, 3, 4), (3, 3, 4, 8), (3, 3, 8, 8), (3, 3, 8, 12), (3, 3, 16, 8), (3, 3, 8, 4)]
    with pytest.raises(ValueError, match="level_blocks"):
        seg.create_model({**config, "level_blocks": (1, 2)}, 3).levels()
    with pytest.raises(ValueError, match="level_blocks"):
        seg.create_model({**config, "level_blocks": (1, 0, 1)}, 3).levels()
    # max-unpool of the full deeper map reuses switches: 12 channels over 8 switches fails.
    full = seg.create_model({**config, "upsample_input": "full"}, NUM_CLASSES)
    with pytest.raises(ValueError, match="must be a multiple of 8"):
        _init(full, _images())


@pytest.mark.parametrize("upsample", ["max_unpool", "nearest"])
def test_unet_concat_skip_decoder_input_channels(upsample):
    def kernels(upsample_input):
        config = {**TINY_ED, "upsample": upsample, "upsample_input": upsample_input}
        model = seg.create_model(config, NUM_CLASSES)
        params = jax.eval_shape(functools.partial(_init, model), _images())["params"]
        return [v["Conv_0"]["kernel"].shape for v in params.values() if "Conv_0" in v]

    # Widths 4, 8, 16. "full": decoder level l sees concat(deeper map, skip) =
    # width(l+1) + width(l) channels; "reduce_1x1": a 1x1 block maps the deeper map to
    # width(l) first, so the 3x3 block after the concat sees 2 * width(l).
    assert [k for k in kernels("full") if k[:2] == (3, 3)][-2:] == [
        (3, 3, 24, 8), (3, 3, 12, 4)]
    reduced = kernels("reduce_1x1")
    assert [k for k in reduced if k[:2] == (3, 3)][-2:] == [(3, 3, 16, 8), (3, 3, 8, 4)]
    assert [k for k in reduced if k[:2] == (1, 1)][:2] == [(1, 1, 16, 8), (1, 1, 8, 4)]


# --- the sliding-window contract -------------------------------------------------------------
# Output (i, j) at stride s == the patch CNN on the crop centred at (i*s+s//2, j*s+s//2).


@pytest.mark.parametrize(
    "stride, padding, norm",
    [(1, "reflect", "group"), (4, "zero", "batch")],
    ids=["stride1-reflect-group", "stride4-zero-batch"],
)
def test_sliding_window_matches_explicit_per_crop_evaluation(stride, padding, norm):
    p = 7
    model = swseg.SlidingWindowClassifier(
        num_classes=NUM_CLASSES, patch_size=p, patch_width=4, patch_padding=padding,
        train_stride=stride, eval_stride=stride, norm=norm)
    x = _images(b=2, hw=12, seed=1)
    variables, train_out, _, eval_out = _init_and_run(model, x)
    cnn = swseg.PatchCNN(num_classes=NUM_CLASSES, patch_width=4, norm=norm)
    cnn_vars = {col: tree["crops"]["cnn"] for col, tree in variables.items()}
    mode = "reflect" if padding == "reflect" else "constant"
    padded = np.pad(np.asarray(x) * 2 - 1, ((0, 0), (3, 3), (3, 3), (0, 0)), mode=mode)
    n = 12 // stride
    picks = [(0, 0, 0), (1, n - 1, n - 1), (0, n // 2, n - 1), (1, n - 1, 0)]
    crops = []
    for b, i, j in picks:
        cy, cx = i * stride + stride // 2, j * stride + stride // 2
        crops.append(padded[b, cy : cy + p, cx : cx + p])  # centred at (cy, cx)
    expected = cnn.apply(cnn_vars, jnp.asarray(np.stack(crops)), train=False)
    chex.assert_shape([train_out, eval_out], (2, n, n, NUM_CLASSES))
    # Crops are independent in eval; in training only GroupNorm keeps them independent
    # (BatchNorm normalises over all crops of the batch).
    for out in (train_out, eval_out) if norm == "group" else (eval_out,):
        got = np.stack([out[b, i, j] for b, i, j in picks])
        np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_sliding_window_chunking_does_not_change_eval():
    kw = dict(num_classes=NUM_CLASSES, patch_size=5, patch_width=4, eval_stride=2)
    x = _images(b=3, hw=8)

    @jax.jit
    def both(x):
        variables = _init(swseg.SlidingWindowClassifier(**kw), x)
        apply = lambda chunk: swseg.SlidingWindowClassifier(**kw, crop_chunk=chunk).apply(
            variables, x, train=False)
        return apply(1000), apply(7)

    one, many = both(x)
    np.testing.assert_allclose(np.asarray(one), np.asarray(many), atol=1e-6)


def test_sliding_window_even_patch_or_stride_mismatch_raises():
    with pytest.raises(ValueError, match="patch_size"):
        seg.create_model({"name": "sliding_window", "patch_size": 8}, NUM_CLASSES)
    model = seg.create_model({"name": "sliding_window", "patch_size": 5, "eval_stride": 3},
                             NUM_CLASSES)
    with pytest.raises(ValueError, match="multiple of the stride"):
        jax.eval_shape(functools.partial(_init, model), _images(hw=16))


# --- config errors ---------------------------------------------------------------------------


def test_max_unpool_with_strided_conv_raises():
    with pytest.raises(ValueError, match="max_unpool.*max_pool"):
        seg.create_model({"downsample": "strided_conv", "upsample": "max_unpool"}, 3)
    model = seg.EncoderDecoder(num_classes=3, width=4, num_levels=2,
                               downsample="strided_conv", upsample="max_unpool")
    with pytest.raises(ValueError, match="max_unpool.*max_pool"):
        jax.eval_shape(functools.partial(_init, model), _images())


@pytest.mark.parametrize(
    "field, value",
    [("name", "unet"), ("upsample", "pixel_shuffle"), ("downsample", "avg_pool"),
     ("skip", "sum"), ("norm", "layer"), ("patch_padding", "edge")],
    ids=lambda v: v,
)
def test_unknown_choice_error_names_field_and_allowed_values(field, value):
    config = {"name": "sliding_window"} if field == "patch_padding" else {}
    with pytest.raises(ValueError, match=rf"model\.{field}='{value}'.*\[") as err:
        seg.create_model({**config, field: value}, 3)
    assert "'" + value + "'" in str(err.value)


def test_unknown_field_raises():
    with pytest.raises(ValueError, match="upsampel"):
        seg.create_model({"upsampel": "nearest"}, 3)


def test_defaults_are_documented_and_configdict_is_accepted():
    assert seg.DEFAULT_MODEL_FIELDS["name"] == "encoder_decoder"
    for field in seg.DEFAULT_MODEL_FIELDS:  # every field is documented
        assert f"``{field}``" in seg.__doc__, field
    config = ml_collections.ConfigDict(dict(seg.DEFAULT_MODEL_FIELDS))
    config.width = 8
    model = seg.create_model(config, 4, bn_axis_name="batch")
    assert isinstance(model, seg.EncoderDecoder)
    assert (model.width, model.num_levels, model.upsample) == (8, 5, "max_unpool")
    assert (model.num_classes, model.bn_axis_name) == (4, "batch")
    assert isinstance(seg.create_model({}, 4), seg.EncoderDecoder)


def test_image_size_must_match_levels():
    model = seg.create_model({**TINY_ED, "num_levels": 4}, 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        jax.eval_shape(functools.partial(_init, model), _images(hw=12))


# --- normalisation collections, cross-device BatchNorm ---------------------------------------


@pytest.mark.parametrize(
    "name", ["encoder_decoder", "fcn_full_res", "pixel_colour", "sliding_window"]
)
def test_batch_stats_only_with_batchnorm_and_they_update(name):
    small = {"width": 4, "num_levels": 2, "fcn_width": 4, "fcn_depth": 1, "pixel_width": 4,
             "patch_size": 5, "patch_width": 4, "train_stride": 4}
    x = _images(hw=8)
    bn = seg.create_model({**small, "name": name}, 3)
    variables, _, updated, _ = _init_and_run(bn, x)
    assert "batch_stats" in variables
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                         updated["batch_stats"], variables["batch_stats"])
    assert max(jax.tree.leaves(moved)) > 1e-3  # running stats really update
    gn = seg.create_model({**small, "name": name, "norm": "group"}, 3)
    assert set(jax.eval_shape(functools.partial(_init, gn), x)) == {"params"}


def test_group_norm_output_does_not_depend_on_the_batch():
    model = seg.create_model(
        {**TINY_ED, "skip": "add", "norm": "group", "upsample_input": "reduce_1x1"}, 3
    )
    x = _images(b=2)
    other = x.at[1].set(1.0 - x[1])  # same first example, different batch-mate
    variables = _init(model, x)
    a = model.apply(variables, x, train=True)
    b = model.apply(variables, other, train=True)
    np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), atol=1e-5)
    assert np.abs(np.asarray(a[1] - b[1])).max() > 1e-3


def test_cross_device_batchnorm_equals_global_batch():
    """bn_axis_name: per-device halves under a named axis == one device, whole batch."""
    config = {**TINY_ED, "num_levels": 2}
    x = _images(b=4)
    single = seg.create_model(config, 3)
    mapped = seg.create_model(config, 3, bn_axis_name="batch")
    variables = jax.jit(_init, static_argnums=0)(single, x)
    shards = x.reshape(2, 2, 16, 16, 3)

    @jax.jit
    def run_all(x, shards):
        ref = single.apply(variables, x, train=True, mutable=["batch_stats"])
        cross = jax.vmap(lambda xs: mapped.apply(variables, xs, train=True,
                                                 mutable=["batch_stats"]),
                         axis_name="batch")(shards)
        alone = jax.vmap(lambda xs: single.apply(variables, xs, train=True,
                                                 mutable=["batch_stats"])[0])(shards)
        return ref, cross, alone

    (ref, ref_stats), (out, stats), alone = run_all(x, shards)
    np.testing.assert_allclose(np.asarray(out).reshape(ref.shape), ref, atol=1e-4)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], stats), ref_stats, atol=1e-5)
    # Without the axis each half is normalised alone: different outputs.
    assert np.abs(np.asarray(alone).reshape(ref.shape) - ref).max() > 1e-2


def _tiny_scene(hw=32):
    """One image with a square and a disc of different colours on a striped background."""
    yy, xx = np.mgrid[:hw, :hw]
    image = np.stack([0.3 + 0.2 * ((xx + yy) // 3 % 2)] * 3, axis=-1)
    labels = np.zeros((hw, hw), np.int32)
    square = (yy >= 4) & (yy < 14) & (xx >= 5) & (xx < 15)
    disc = (yy - 21) ** 2 + (xx - 20) ** 2 <= 36
    image[square], labels[square] = (0.9, 0.2, 0.1), 1
    image[disc], labels[disc] = (0.1, 0.3, 0.9), 2
    return jnp.asarray(image[None], jnp.float32), jnp.asarray(labels[None])


def test_encoder_decoder_overfits_one_image():
    x, y = _tiny_scene()
    model = seg.create_model({**TINY_ED, "width": 8, "upsample": "max_unpool"}, 3)
    variables = jax.jit(_init, static_argnums=0)(model, x)
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, batch_stats, opt_state):
        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                      mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd

        (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), upd["batch_stats"], opt_state, loss

    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    for _ in range(60):
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
    logits = jax.jit(functools.partial(model.apply, train=False))(
        {"params": params, "batch_stats": batch_stats}, x)
    accuracy = float((logits.argmax(-1) == y).mean())
    assert accuracy >= 0.98, (accuracy, float(loss))
