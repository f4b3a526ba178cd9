"""Training: the loop (``train``: ``train_and_evaluate``, ``train_classifier``), its state
(``train_state``: parameters, EMA, optimizer state; ``create_train_state``) and the paper's
optimizer (``optim``: clipping, Adam, warmup). Also importable by their earlier top-level
names, ``score_sde.training.train``, ``score_sde.training.train_state`` and ``score_sde.optim``."""
