"""Samplers on a plain ``score_fn(x, t)``: PC, probability-flow ODE, adaptive reverse SDE, EDM
Heun, and the multistep DPM-Solver++, UniPC, DEIS and iPNDM.

Every sampler is built from an SDE, a sample shape, the inverse scaler, the grid ``times`` and its
own settings, and called as ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe)``
(``sampling.base`` for the contract and how to jit it once). ``methods.METHODS`` holds one entry
per ``config.sampling.method`` (its builder, family, defaults, maximum order and level count);
``get_times`` builds a method's grid from a step count and ``get_sampler(config, ...)`` the
sampler ``config.sampling`` names. Class-conditional sampling is a score like any other
(``guidance``: classifier-free and classifier guidance). Importing the package fills
``PREDICTORS`` and ``CORRECTORS``.
"""
from score_sde.sampling import methods
from score_sde.sampling.adaptive import get_adaptive_sampler
from score_sde.sampling.base import Callback, identity, InverseScaler, Method, Sampler
from score_sde.sampling.controllable import (get_conditional_score_fn, get_pc_colorizer,
                                             get_pc_inpainter)
from score_sde.sampling.correctors import (AnnealedLangevinDynamics, Corrector, CORRECTORS,
                                           LangevinCorrector, NoneCorrector,
                                           PerExampleLangevinCorrector)
from score_sde.sampling.deis import get_deis_sampler
from score_sde.sampling.dpm_solver import get_dpm_solver_sampler
from score_sde.sampling.edm import get_heun_sampler
from score_sde.sampling.from_config import config_times, get_sampler
from score_sde.sampling.guidance import get_cfg_score_fn, get_guided_score_fn, sample_labels
from score_sde.sampling.methods import get_times, METHODS
from score_sde.sampling.ode import (get_ode_encoder, get_ode_sampler, probability_flow_drift,
                                    solve_probability_flow)
from score_sde.sampling.pc import get_pc_sampler
from score_sde.sampling.predictors import (AncestralSamplingPredictor, EulerMaruyamaPredictor,
                                           NonePredictor, Predictor, PREDICTORS,
                                           ReverseDiffusionPredictor)
from score_sde.sampling.shard import get_sharded_sampler
from score_sde.sampling.network import get_network_sampler, sampled_classes
from score_sde.sampling.unipc import get_unipc_sampler

# The released code's name.
get_sampling_fn = get_sampler

__all__ = [
    'AncestralSamplingPredictor', 'AnnealedLangevinDynamics', 'CORRECTORS', 'Callback',
    'Corrector', 'EulerMaruyamaPredictor', 'InverseScaler', 'LangevinCorrector', 'METHODS',
    'Method', 'NoneCorrector', 'NonePredictor', 'PREDICTORS', 'PerExampleLangevinCorrector',
    'Predictor', 'ReverseDiffusionPredictor', 'Sampler', 'config_times', 'get_adaptive_sampler',
    'get_cfg_score_fn', 'get_conditional_score_fn', 'get_deis_sampler', 'get_dpm_solver_sampler',
    'get_guided_score_fn', 'get_heun_sampler', 'get_network_sampler', 'get_ode_encoder',
    'get_ode_sampler', 'get_pc_colorizer', 'get_pc_inpainter', 'get_pc_sampler', 'get_sampler',
    'get_sampling_fn', 'get_sharded_sampler', 'get_times', 'get_unipc_sampler', 'identity',
    'methods', 'probability_flow_drift', 'sample_labels', 'sampled_classes',
    'solve_probability_flow',
]
