"""Training objectives ("defenses"), one registry, one verb each.

``create_defense("gm", lam=1.0)`` builds one; ``list_defenses()`` lists them. Importing this
package registers every defense module below. Test-time input transformations (JPEG,
bilateral filtering) have their own registry: ``create_transform`` / ``list_transforms``
(defenses/transforms.py).
"""

from __future__ import annotations

# Registration happens by importing the modules (STYLE.md §1). Keep this list sorted.
from defenses import (  # noqa: F401 - importing registers them (STYLE.md §1)
    adversarial,
    cldl,
    gm,
    ncen,
    ot,
    plain,
    stylized,
    transforms,
)
from defenses.base import Adversary, Batch, Defense, DefenseOutput, TrainContext
from defenses.registry import (
    DEFENSES,
    create_defense,
    list_defenses,
    register_defense,
)
from defenses.transforms import (
    TRANSFORMS,
    InputTransform,
    Transformed,
    create_transform,
    list_transforms,
    register_transform,
)

__all__ = [
    "DEFENSES",
    "Adversary",
    "Batch",
    "Defense",
    "DefenseOutput",
    "TrainContext",
    "create_defense",
    "list_defenses",
    "register_defense",
    "TRANSFORMS",
    "InputTransform",
    "Transformed",
    "create_transform",
    "list_transforms",
    "register_transform",
]
