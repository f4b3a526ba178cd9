"""Score networks: NCSN++ / DDPM++ ('ncsnpp'), DDPM ('ddpm'), NCSN and NCSNv2 ('ncsn',
'ncsnv2_64', 'ncsnv2_128', 'ncsnv2_256'), and their score adapters; the noise-conditional
classifier of classifier guidance ('wideresnet_noise_conditional').

Importing this package registers every model in ``MODELS`` and every classifier in
``CLASSIFIERS``; ``get_model(config)`` builds the one ``config.model.name`` names,
``get_classifier(config)`` the one ``config.classifier.name`` names.
"""
from score_sde.models import ddpm, ncsnpp, ncsnv2, wideresnet_noise_conditional  # noqa: F401  (fill MODELS)
from score_sde.models.ddpm import DDPM
from score_sde.models.ncsnpp import NCSNpp
from score_sde.models.ncsnv2 import NCSN, NCSNv2, NCSNv2_128, NCSNv2_256
from score_sde.models.utils import (abstract_params, CLASSIFIERS, count_params, get_classifier,
                                    get_classifier_fn, get_model, get_model_fn, get_score_fn,
                                    get_sigmas, init_params, MODELS, module_order)
from score_sde.models.wideresnet_noise_conditional import WideResnet

__all__ = ['CLASSIFIERS', 'MODELS', 'DDPM', 'NCSN', 'NCSNpp', 'NCSNv2', 'NCSNv2_128',
           'NCSNv2_256', 'WideResnet', 'abstract_params', 'count_params', 'get_classifier',
           'get_classifier_fn', 'get_model', 'get_model_fn', 'get_score_fn', 'get_sigmas',
           'init_params', 'module_order']
