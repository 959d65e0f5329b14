"""One package per chapter, every one with the same protocol, so a reader finds the same thing in the same place.

``distillbook.chapters.<id with underscores>`` holds four modules:

- ``params``: ``CHAPTER`` (the chapter id) and ``Params``, a :class:`~distillbook.core.params.ChapterParams`
  whose field defaults are the papers' constants and whose ``PRESETS`` hold only what differs between the
  smoke, cpu and gpu profiles;
- ``experiment``: the test bed and the runs. ``build_bed(run) -> Bed`` builds what every seed shares (data,
  teachers, priors; cached through ``run.fit``), ``run_seed(run, seed, bed) -> dict`` runs one seed's
  experiments, records its numbers with ``run.record`` and returns what the figures show (samples, images);
- ``claims``: ``claims(p) -> tuple[Claim, ...]`` (the papers' claims with their margins), ``evaluate_claims(run)
  -> list[dict]`` (the verdicts from the recorded per-seed numbers), ``record_health(run)`` (the test-bed
  health table), ``glue_values(run, bed) -> dict[str, float | str]`` (every number or phrase the prose glues) and
  ``summary_markdown(run, results) -> str``;
- ``figures``: ``plot_*`` functions returning matplotlib figures.

The package re-exports the protocol's names, so a notebook reads::

    bed = chapter.build_bed(run)
    shown = parallel.map_seeds(run, chapter.run_seed, bed)
    results = chapter.evaluate_claims(run)
    fig = chapter.figures.plot_...(run)

The method code itself (losses, gradients, samplers, student wrappers) lives in :mod:`distillbook.methods`.
``tests/test_chapter_protocol.py`` checks every written chapter against this protocol.
"""

PROTOCOL = {
    "params": {"CHAPTER": None, "Params": None},
    "experiment": {"build_bed": ("run",), "run_seed": ("run", "seed", "bed")},
    "claims": {"claims": ("p",), "evaluate_claims": ("run",), "record_health": ("run",),
               "glue_values": ("run", "bed"), "summary_markdown": ("run", "results")},
}
"""Module -> {name: positional parameter names (None for a non-function)} of the chapter protocol."""
