"""Experiment configs as data (``ml_collections.ConfigDict``), one file per experiment:
``default.py`` lists every field the code reads; ``vp/``, ``subvp/``, ``ve/`` hold the paper's
experiments; ``embedded*.py`` and ``smoke.py`` the runs that need no download. Pass a file as
``--config configs/vp/cifar10_ddpmpp_continuous.py`` (``configs/`` in the checkout is this
folder) or import it as ``score_sde.configs.vp.cifar10_ddpmpp_continuous``.

Beside them: ``validation`` checks a config before a run writes anything, and ``record``
writes the config a run trains with into its workdir and reads it back."""
