"""Evaluation of a run's checkpoints: the resumable driver (``evaluate``: held-out loss,
bits/dim, FID / KID / IS), the sample rounds behind FID (``samples``) and the report table and
atomic files an evaluation folder holds (``report``). ``score_sde.evaluation.evaluate`` is this package's
``evaluate`` module, its earlier top-level name."""
