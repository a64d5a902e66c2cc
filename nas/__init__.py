"""Neuroevolution NAS toward low adversarial transferability: data, references, attacks, the
training loop, fitness, the GA and every command-line entry point (``python -m nas.<cmd>``)."""

__version__ = "0.1.0"
