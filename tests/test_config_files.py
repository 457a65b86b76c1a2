"""Loading config files and overrides outside absl, and spec dataclasses from sections."""

import dataclasses

import ml_collections
import pytest

from jaxdet import config_files
from jaxdet.core import ConfigError
from jaxdet.detection import faster_rcnn


def test_load_with_arg_and_overrides():
    config = config_files.load("configs/faster_rcnn_shapes.py:c4,runlocal",
                               ["loss.roi_box_weight=2.5", "model.levels=c4", "seed=3"])
    assert config.model.levels == "c4" and config.data.image_size == 64
    assert config.loss.roi_box_weight == 2.5 and config.seed == 3
    with pytest.raises(ValueError, match="cannot load"):
        config_files.load("configs/nope.py")
    with pytest.raises(ValueError, match="key=value"):
        config_files.override(config, "seed")


@dataclasses.dataclass(frozen=True)
class _Spec:
    num_classes: int
    sizes: tuple = ((1,),)
    name: str = "x"


def test_dataclass_from_section_takes_declared_fields_as_tuples():
    section = ml_collections.ConfigDict({"sizes": [[8, 16], [32]], "other": 1,
                                         "num_classes": 99})
    spec = config_files.dataclass_from_section(_Spec, section, num_classes=4)
    assert spec == _Spec(num_classes=4, sizes=((8, 16), (32,)))
    hash(spec)


@dataclasses.dataclass(frozen=True)
class _Part:
    sizes: tuple = ((1,),)
    ratio: float = 0.5


def test_spec_from_section_reads_a_nested_section_strictly():
    section = ml_collections.ConfigDict({"sizes": [[8, 16], [32]]})
    part = config_files.spec_from_section(_Part, section, "model.part")
    assert part == _Part(sizes=((8, 16), (32,)), ratio=0.5)
    hash(part)
    assert config_files.spec_from_section(_Part, None, "model.part") == _Part()
    section.ratoi = 0.3
    with pytest.raises(ConfigError, match=r"config.model.part.ratoi: not a field of model.part "
                                          r"\(expected one of \['ratio', 'sizes'\]\)"):
        config_files.spec_from_section(_Part, section, "model.part")


def test_nested_sections_take_command_line_overrides():
    config = config_files.load("configs/mask_rcnn_shapes.py:runlocal",
                               ["model.rpn.fg_iou=0.6", "model.mask.width=4"])
    assert config.model.rpn.fg_iou == 0.6 and config.model.mask.width == 4
    config_files.override(config, "model.rpn.fg_iuo=0.6")  # a misspelt key: refused by the spec
    with pytest.raises(ConfigError, match="config.model.rpn.fg_iuo: not a field of model.rpn"):
        faster_rcnn.DetectorSpec.from_config(config.model, num_classes=4)


def test_load_module_loads_a_sibling_file_once(tmp_path):
    (tmp_path / "shared.py").write_text("COUNT = [0]\nCOUNT[0] += 1\n")
    config_file = str(tmp_path / "some_config.py")
    first = config_files.load_module(config_file, "shared.py")
    assert config_files.load_module(config_file, "shared.py") is first
    assert first.COUNT == [1]
    with pytest.raises(ValueError, match="cannot load"):
        config_files.load_module(config_file, "missing.py")


@pytest.mark.parametrize(("field", "value", "ok"), [
    ("num_train_steps", 0, False), ("num_train_steps", -3, False), ("num_train_steps", 1, True),
    ("batch_size", 0, False), ("batch_size", 2.0, False), ("batch_size", True, False),
    ("eval_every_steps", 0, True), ("eval_every_steps", -1, False), ("eval_limit", 0, True),
])
def test_loop_fields_out_of_range_are_named(field, value, ok):
    config = ml_collections.ConfigDict({"num_train_steps": 5, "batch_size": 4,
                                        "eval_every_steps": 5, "eval_limit": 0, field: value})
    errors = config_files.check_loop_fields(config)
    assert errors == ([] if ok else [f"config.{field}={value!r}: expected an integer >= "
                                     f"{0 if field in ('eval_every_steps', 'eval_limit') else 1}"])


@pytest.mark.parametrize(("value", "ok"), [
    ((8, 16), True), ((8.5, 16), False), (("8", 16), False), ((True, 16), False),
    ((), True), ((8.0, 16), True),
])
def test_tuple_elements_must_have_the_defaults_kind(value, ok):
    defaults = ml_collections.ConfigDict({"model": {"widths": (8, 16, 32), "ratios": (0.5, 1.0),
                                                    "sizes": ((32,), (64,)), "free": ()}})
    config = ml_collections.ConfigDict(defaults.to_dict())
    config.model.widths = value
    config.model.ratios = (1, 2.0)  # ints where floats are expected are fine
    errors = config_files.element_type_errors(defaults, config)
    assert errors == ([] if ok else [f"config.model.widths={value!r}: expected a tuple like the "
                                     "default (8, 16, 32)"])
    config.model.sizes = ((32,), ("64",))
    assert len(config_files.element_type_errors(defaults, config)) == 1 + (not ok)
