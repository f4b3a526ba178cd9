"""Checkpoints of the original code bases as runs of this one: ``released_checkpoints``
(score_sde's released Flax checkpoints, downloaded and checked, and the ``python -m`` command),
``pytorch_checkpoints`` (score_sde_pytorch ``.pth`` files, mapped by module name) and
``torch_files`` (``torch.save`` files read without torch, trusting nothing in them)."""
