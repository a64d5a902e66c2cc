"""The search: its configuration, the DEAP genetic algorithm, the parallel map, run directories and
the search driver."""
