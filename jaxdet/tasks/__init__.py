"""Tasks: what the generic training loop needs to know about one kind of model.

A task module provides data sources, preprocessing, model construction, a loss function of
``(params, batch_stats, batch, rng)``, an additive evaluation statistic and its summary, and
pictures of predictions (:class:`jaxdet.core.Task`). :func:`get_task` maps ``config.task`` to
the module explicitly (no registry).
"""

from __future__ import annotations

import types

from jaxdet.core import ConfigError


def get_task(name: str) -> types.ModuleType:
    """The task module for ``config.task``."""
    if name == "segmentation":
        from jaxdet.tasks import segmentation

        return segmentation
    if name == "localization":
        from jaxdet.tasks import localization

        return localization
    if name == "pose":
        from jaxdet.tasks import pose

        return pose
    if name == "detection":
        from jaxdet.tasks import detection

        return detection
    raise ConfigError(
        f"config.task={name!r}; expected one of 'segmentation', 'localization', 'pose', "
        "'detection'"
    )
