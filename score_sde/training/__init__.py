"""Training: the state (``train_state``: parameters, EMA, optimizer state; ``create_train_state``)
and the loop (``train``: ``train_and_evaluate``, ``train_classifier``). The optimizer and the EMA
update are ``score_sde.optim``; the objectives and the step, ``score_sde.losses``."""
