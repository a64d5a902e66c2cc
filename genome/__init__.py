"""The plain-data graph genome: format, validation, shapes, mutation, spectrum, hash, compiler.

A genome is a ``networkx.DiGraph`` with JSON-able node attributes (``op`` + params; see
:mod:`genome.ops` and ``docs/genome.md``). Everything here is a function of that plain data;
``genome`` imports nothing else of the project. The torch-dependent parts (``compile_genome``,
``GenomeNet``, ``export_source``, ``export_module``) are imported on first use, so working
with genomes as data (the GA driver, validation) does not pay for importing torch.
"""

from typing import Any

from genome.mutation import (
    MUTATIONS,
    MutationLimits,
    add_block,
    add_skip,
    delete_block,
    delete_skip,
    edit_block,
    is_valid_for,
    mutate,
)
from genome.ops import BLOCK_OPS, OPS, POOL_KINDS, SKIP_OPS, SPECTRUM_OPS
from genome.serialize import (
    FORMAT_VERSION,
    GenomeFormatError,
    UnknownGenomeName,
    from_dict,
    from_json,
    load,
    save,
    to_dict,
    to_json,
)
from genome.shapes import count_macs, count_params, infer_shapes
from genome.spectrum import canonical_hash, spectrum, spectrum_distance
from genome.structure import InvalidGenome
from genome.validate import assert_valid, check_genome

__all__ = [
    "BLOCK_OPS", "FORMAT_VERSION", "MUTATIONS", "OPS", "POOL_KINDS", "SKIP_OPS", "SPECTRUM_OPS",
    "GenomeFormatError", "GenomeNet", "InvalidGenome", "MutationLimits", "UnknownGenomeName",
    "add_block", "add_skip", "assert_valid", "canonical_hash",
    "check_genome", "compile_genome", "count_macs", "count_params", "delete_block",
    "delete_skip", "edit_block", "export_module", "export_source", "from_dict", "from_json",
    "infer_shapes", "is_valid_for",
    "load", "mutate", "save", "spectrum", "spectrum_distance", "to_dict", "to_json",
    "write_atomically", "write_text_atomically",
]

_LAZY = {"compile_genome": "genome.compile", "GenomeNet": "genome.compile",
         "export_source": "genome.export", "export_module": "genome.export"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'genome' has no attribute {name!r}")
