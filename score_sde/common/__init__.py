"""What every layer uses and that uses nothing of the package: ``errors`` (the user-fixable
errors ``main.py`` prints without a traceback), ``registry`` (names in configs to classes),
``rng`` (the run's random streams), ``parallel`` (the device mesh and shardings) and ``logs``
(the commands' log filter)."""
