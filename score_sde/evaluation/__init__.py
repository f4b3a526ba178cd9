"""Evaluation of a run's checkpoints: the resumable driver (``evaluate``: held-out loss,
bits/dim, FID / KID / IS), the sample rounds behind FID (``samples``) and the report table and
config record an evaluation folder holds (``report``)."""
