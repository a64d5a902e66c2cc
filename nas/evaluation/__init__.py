"""How one network is trained and scored: data, references, attacks, the one training loop (with its
fast double backward), fitness, transfer, caches."""
