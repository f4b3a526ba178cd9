"""A run directory's files: ``checkpoint`` (orbax checkpoints, checked and restored, with
``io_errors`` telling a transient I/O error from damage and ``orbax_reports`` keeping orbax's
own reports of handled failures quiet), ``summary`` (metric writers: TensorBoard, W&B; image
grids; the profiler window), ``files`` (atomic writes, disk space) and ``workdir`` (checking
``--workdir``, where the classifier lives). Imports only ``score_sde.common``."""
