"""A run directory's files: ``checkpoint`` (orbax checkpoints, checked and restored),
``summary`` (logs, TensorBoard scalars, image grids) and ``workdir`` (checking ``--workdir``,
atomic writes, where the classifier lives). Imports only ``score_sde.common``."""
