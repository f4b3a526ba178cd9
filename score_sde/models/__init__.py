"""Score networks: NCSN++ / DDPM++ ('ncsnpp') and DDPM ('ddpm'), and their score adapters.

Importing this package registers every model in ``MODELS``; ``get_model(config)`` builds the one
``config.model.name`` names.
"""
from score_sde.models import ddpm, ncsnpp  # noqa: F401  (fill MODELS)
from score_sde.models.ddpm import DDPM
from score_sde.models.ncsnpp import NCSNpp
from score_sde.models.utils import (MODELS, abstract_params, count_params, get_model,
                                    get_model_fn, get_score_fn, get_sigmas, init_params)

__all__ = ['MODELS', 'DDPM', 'NCSNpp', 'abstract_params', 'count_params', 'get_model',
           'get_model_fn', 'get_score_fn', 'get_sigmas', 'init_params']
