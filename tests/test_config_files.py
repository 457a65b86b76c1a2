"""Loading config files and overrides outside absl, and spec dataclasses from sections."""

import dataclasses

import ml_collections
import pytest

from jaxdet import config_files


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


def test_load_module_loads_a_sibling_file_once(tmp_path):
    (tmp_path / "shared.py").write_text("COUNT = [0]\nCOUNT[0] += 1\n")
    config_file = str(tmp_path / "some_config.py")
    first = config_files.load_module(config_file, "shared.py")
    assert config_files.load_module(config_file, "shared.py") is first
    assert first.COUNT == [1]
    with pytest.raises(ValueError, match="cannot load"):
        config_files.load_module(config_file, "missing.py")
