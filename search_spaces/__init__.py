"""Search spaces: block choices and caps, random samplers, named hand-engineered genomes."""

from search_spaces.named import (
    UnknownGenomeName,
    he_baseline,
    he_ref,
    list_named_genomes,
    named_genome,
    resolve_genome,
)
from search_spaces.sampling import sample_genome
from search_spaces.space import DEFAULT_SPACE, INPUT_SHAPES, SearchSpace, parse_input_shape

__all__ = [
    "DEFAULT_SPACE", "INPUT_SHAPES", "SearchSpace",
    "UnknownGenomeName", "he_baseline", "he_ref", "list_named_genomes",
    "named_genome", "parse_input_shape", "resolve_genome", "sample_genome",
]
