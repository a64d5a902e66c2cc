"""The search space: block vocabulary, parameter choices and caps (a frozen dataclass).

``SearchSpace`` is plain configuration that round-trips through ``dataclasses.asdict`` into a
run's config. ``space.limits()`` turns it into the :class:`genome.MutationLimits` the mutation
operators take, so ``genome`` never imports this package.
"""

from __future__ import annotations

from dataclasses import dataclass

from genome import MutationLimits

Shape = tuple[int, int, int]

#: Input shapes the project knows by name (MNIST-like and CIFAR-like images).
INPUT_SHAPES: dict[str, Shape] = {"1x28x28": (1, 28, 28), "3x32x32": (3, 32, 32)}


def parse_input_shape(text: str) -> Shape:
    """``"1x28x28"`` -> ``(1, 28, 28)``; raises ValueError with the expected form."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"input shape must look like 1x28x28 (CxHxW), got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input shape must be three positive integers CxHxW, got {text!r}")
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class SearchSpace:
    """Choices and caps of the architecture search.

    Attributes:
        name: a label for reports.
        channels: channel choices for conv / sconv blocks (mutation).
        initial_channels: channel choices of randomly sampled initial genomes (kept small so
            the first generation trains quickly on a CPU).
        kernels: kernel sizes of conv / sconv blocks.
        pool_kinds: pooling kinds.
        hidden_choices: hidden width of the head's optional fully-connected layer (0 = none).
        max_channels: cap on the channels of any node (concat grows channels).
        max_nodes: cap on the number of nodes, input and output included.
        input_shapes: every input shape a genome must be valid for.
        min_blocks / max_blocks: length range of a sampled chain (conv / pool / sconv blocks).
        max_initial_skips: at most this many skip blocks in a sampled genome.
        skip_probability: probability of each of those skip blocks being added.
        max_macs: cap on a genome's multiply-accumulates per image (0 = none); a sampled
            genome over it is drawn again, a mutation over it is not taken.
    """

    name: str = "default"
    channels: tuple[int, ...] = (16, 32, 48, 64, 96, 128)
    initial_channels: tuple[int, ...] = (16, 32, 48, 64)
    kernels: tuple[int, ...] = (1, 3, 5)
    pool_kinds: tuple[str, ...] = ("max", "avg")
    hidden_choices: tuple[int, ...] = (0, 64, 128)
    max_channels: int = 256
    max_nodes: int = 32
    input_shapes: tuple[Shape, ...] = ((1, 28, 28), (3, 32, 32))
    min_blocks: int = 2
    max_blocks: int = 12
    max_initial_skips: int = 3
    skip_probability: float = 0.35
    max_macs: int = 0

    def limits(self) -> MutationLimits:
        """The :class:`genome.MutationLimits` of this space."""
        return MutationLimits(
            channels=self.channels, kernels=self.kernels, pool_kinds=self.pool_kinds,
            max_channels=self.max_channels, max_nodes=self.max_nodes,
            input_shapes=self.input_shapes, max_macs=self.max_macs,
        )


#: The default search space.
DEFAULT_SPACE = SearchSpace()
