"""Training objectives ("defenses"), one registry, one verb each.

``create_defense("gm", lam=1.0)`` builds one; ``list_defenses()`` lists them. Importing this
package registers every defense module below.
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
)
from defenses.base import Adversary, Batch, Defense, DefenseOutput, TrainContext
from defenses.registry import (
    DEFENSES,
    Registry,
    UnknownName,
    create_defense,
    list_defenses,
    register_defense,
)

__all__ = [
    "DEFENSES",
    "Adversary",
    "Batch",
    "Registry",
    "Defense",
    "DefenseOutput",
    "TrainContext",
    "UnknownName",
    "create_defense",
    "list_defenses",
    "register_defense",
]
