"""The MACs cap of the search space (``max_macs``): sampling and mutation respect it."""

def test_a_macs_cap_holds_for_sampled_and_mutated_genomes_and_is_inactive_at_zero():
    import dataclasses

    import numpy as np

    from genome import count_macs, mutate
    from search_spaces.sampling import sample_genome
    from search_spaces.space import DEFAULT_SPACE

    shape = (1, 28, 28)
    space = dataclasses.replace(DEFAULT_SPACE, max_channels=32, channels=(16, 32),
                                initial_channels=(16, 32), max_nodes=16, input_shapes=(shape,))
    free = [count_macs(sample_genome(np.random.default_rng(s), space, shape), shape, 10)
            for s in range(30)]
    cap = sorted(free)[len(free) // 2]  # half the unconstrained draws are over it
    assert max(free) > cap
    capped = dataclasses.replace(space, max_macs=cap)
    rng = np.random.default_rng(0)
    for _ in range(10):
        g = sample_genome(rng, capped, shape)
        assert count_macs(g, shape, 10) <= cap
        for _ in range(5):
            g, _ = mutate(g, rng, limits=capped.limits(), count=2)
            assert count_macs(g, shape, 10) <= cap
    # no cap: the draw is the one it always was (seeded runs reproduce)
    again = [count_macs(sample_genome(np.random.default_rng(s), space, shape), shape, 10)
             for s in range(30)]
    assert again == free
