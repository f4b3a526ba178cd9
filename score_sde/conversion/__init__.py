"""Checkpoints of the original code bases as runs of this one: ``released_checkpoints``
(score_sde's released Flax checkpoints, downloaded and checked, and the ``python -m`` command),
``pytorch_checkpoints`` (score_sde_pytorch ``.pth`` files, mapped by module name),
``edm_checkpoints`` (NVlabs/edm's network pickles onto ``ncsnpp``; ``edm_pickles`` reads them as
data, running none of their code) and ``torch_files`` (``torch.save`` files and plain pickles of
tensors read without torch, trusting nothing in them)."""
