"""configs/: every file loads with each of its args, builds on at most one other config, and
rejects a bad arg naming itself (configs/common.py)."""

import ast
import os

import pytest

from jaxdet import config_files
from tests.helpers import REPO, load_config

CONFIGS = sorted(f[:-3] for f in os.listdir(REPO / "configs")
                 if f.endswith(".py") and f != "common.py")
ARGS = {
    "detection_baselines": ("sliding_window", "rcnn", "fast_rcnn,runlocal"),
    "faster_rcnn_shapes": ("", "c4", "runlocal", "c4,runlocal"),
    "localization": ("", "resnet,runlocal"),
    "pose": ("", "resnet,runlocal"),
    "segmentation": ("", "transpose", "fcn", "sliding_window", "colour,runlocal"),
}


def _common():
    return config_files.load_module(str(REPO / "configs" / "x.py"), "common.py")


def _bases(name: str) -> list[str]:
    """The configs ``name`` builds on (``common.base_config(__file__, "<base>.py", ...)``)."""
    tree = ast.parse((REPO / "configs" / f"{name}.py").read_text())
    return [node.args[1].value[:-3] for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "base_config"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_with_each_arg_and_has_a_launch_command(name):
    for arg in ARGS.get(name, ("", "runlocal")):
        config = load_config(name, arg or None)
        assert config.task in ("segmentation", "localization", "pose", "detection")
        assert "variant" not in config
        assert config.num_train_steps > 0 and config.optimizer.name
        assert config_files.check_loop_fields(config) == []
        assert config_files.element_type_errors(config, config) == []
    doc = ast.get_docstring(ast.parse((REPO / "configs" / f"{name}.py").read_text()))
    assert f"--config=configs/{name}.py" in doc


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_on_at_most_one_config_and_never_on_a_chain(name):
    bases = _bases(name)
    assert len(bases) <= 1, bases
    for base in bases:
        assert _bases(base) == [], f"{name} -> {base} -> {_bases(base)}: a chain"


@pytest.mark.parametrize("name", CONFIGS)
def test_bad_arg_is_a_clear_error_naming_the_file(name):
    with pytest.raises(ValueError, match=rf"configs/{name}\.py: arg 'bogus'; expected"):
        load_config(name, "bogus")


def test_parse_arg_variants_default_and_required():
    common = _common()
    assert common.parse_arg(None, "c.py", ("a", "b"), default="a") == ("a", False)
    assert common.parse_arg("b,runlocal", "c.py", ("a", "b"), default="a") == ("b", True)
    assert common.parse_arg("runlocal", "c.py") == ("", True)
    with pytest.raises(ValueError, match=r"configs/c\.py: arg 'a,b'; expected at most one of"):
        common.parse_arg("a,b", "c.py", ("a", "b"), default="a")
    with pytest.raises(ValueError, match=r"arg 'runlocal'; expected one of \('a', 'b'\)"):
        common.parse_arg("runlocal", "c.py", ("a", "b"), default=None)
    with pytest.raises(ValueError, match=r"arg 'x'; expected '' or 'runlocal'"):
        common.parse_arg("x", "c.py")


def test_loss_weights_and_sweeps_pair_every_term():
    import ml_collections

    config = ml_collections.ConfigDict()
    _common().loss_weights_and_sweeps(config, ("a", "b"), {"b": 2.0})
    assert config.loss.to_dict() == {"a_weight": 1.0, "b_weight": 2.0}
    assert config.sweep.to_dict() == {"a_weight": (), "b_weight": (), "learning_rate": ()}
