"""Run a benchmark script on a machine that has JAX but not jaxdet's input/eval stack.

  python experiments/benchmarks/without_input_stack.py experiments/benchmarks/train_step.py \
      --config=configs/mask_rcnn_coco.py --batch=2

The GPU machines lent to this project (see ``experiments/benchmarks/README.md``) carry jax,
flax, optax, orbax and chex but not TensorFlow, TFDS, grain, clu or pycocotools, and nothing can
be installed there from the network (TensorFlow is far over what can be carried). The train
step on a random batch never touches those packages: they are imported at module level only by
the input pipeline, the metric writers and the COCO evaluator. This runner registers an import
hook that answers each of them with a placeholder module (every attribute a placeholder too),
then runs the script as ``__main__``. Calling a placeholder returns another (module-level code
such as ``tfds.core.Version("1.0.0")`` must run); what a benchmark computes from one is
meaningless, so only run scripts whose timed programs are pure JAX.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import runpy
import sys
import types

PLACEHOLDER_PACKAGES = ("tensorflow", "tensorflow_datasets", "grain", "clu", "pycocotools")


class _Placeholder(type):
    """A class (so modules can subclass it at import time) whose every attribute is another."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{cls.__name__}.{name}", (), {})

    def __call__(cls, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]  # used as a decorator
        return _Placeholder(f"{cls.__name__}()", (), {})


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self.__name__}.{name}", (), {})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in PLACEHOLDER_PACKAGES:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    sys.meta_path.insert(0, _Finder())
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
