"""``python -m nas``: the project's commands, the product's verbs first, then the lab
instruments (each with the one question it answers)."""

from __future__ import annotations

import sys

#: The verbs a user runs, in the order of a project's life.
VERBS = (
    ("evolve", "search for networks adversarial examples do not transfer to (resume with "
               "--resume runs/<name>)"),
    ("train", "train and score one architecture with a defense (baselines, retraining)"),
    ("study", "is the search worth it? seeds x strategies x baselines, paired differences "
              "with 95 % intervals (resumable)"),
    ("report", "one self-contained HTML report of a run: tables, plots, Captum IG maps"),
    ("export", "a run's networks as standalone PyTorch modules, weights and ONNX"),
    ("table6", "the standard defenses side by side: GM against JPEG, bilateral filtering and "
               "adversarial training (paper Table 6)"),
    ("genome", "inspect, sample, mutate, validate, export or draw one genome"),
)
#: The lab instruments: measurements of the method itself.
INSTRUMENTS = (
    ("bench", "how fast is the hot path here (GM step against plain CE, attacks, children "
              "per hour)?"),
    ("cost", "what did each search's children cost (children per hour, epochs saved by "
             "early rejection)?"),
    ("fidelity", "does a child's fitness at the search's budget rank like its final fitness, "
                 "and how noisy is it over training seeds?"),
    ("recipes", "which training recipe trains one architecture best with plain CE?"),
    ("gpucheck", "does this GPU run everything, and how many children per GPU-hour does it "
                 "give (1-8 sharing it)?"),
)


def usage() -> str:
    """The listing ``python -m nas`` prints."""
    width = max(len(name) for name, _ in VERBS + INSTRUMENTS)
    lines = ["usage: python -m nas.<command> [--help]", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, what in VERBS]
    lines += ["", "lab instruments (measure the method, not needed to use it):"]
    lines += [f"  {name:<{width}}  {what}" for name, what in INSTRUMENTS]
    return "\n".join(lines)


def main() -> int:
    print(usage())
    return 0 if len(sys.argv) <= 1 or sys.argv[1] in ("-h", "--help") else 2


if __name__ == "__main__":
    raise SystemExit(main())
