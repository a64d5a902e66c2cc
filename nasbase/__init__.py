"""The small base every part of the project uses: errors, checked values, progress lines,
atomic files (with the test kill points and stale-temporary cleanup) and the registry.

It imports nothing of the project, so every package may import it (``genome`` and
``defenses`` included, which import nothing else of ours).
"""
