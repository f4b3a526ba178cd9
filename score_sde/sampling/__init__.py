"""Samplers on a plain ``score_fn(x, t)``: PC, probability-flow ODE, adaptive reverse SDE, EDM
Heun, and the multistep DPM-Solver++, UniPC, DEIS and iPNDM.

Every sampler is built once from an SDE and a sample shape and called as
``sampler(rng, score_fn) -> (samples, nfe)`` (see ``sampling.base`` for the contract and how to
jit it once); ``get_sampler(config, ...)`` picks one from ``config.sampling``. Class-conditional
sampling is a score like any other (``guidance``: classifier-free and classifier guidance).
Importing the package fills ``PREDICTORS`` and ``CORRECTORS``.
"""
from score_sde.sampling import deis, dpm_solver, unipc
from score_sde.sampling.adaptive import get_adaptive_sampler
from score_sde.sampling.base import identity, InverseScaler, Sampler
from score_sde.sampling.controllable import (get_conditional_score_fn, get_pc_colorizer,
                                             get_pc_inpainter)
from score_sde.sampling.correctors import (AnnealedLangevinDynamics, Corrector, CORRECTORS,
                                           LangevinCorrector, NoneCorrector,
                                           PerExampleLangevinCorrector)
from score_sde.sampling.deis import get_deis_sampler
from score_sde.sampling.dpm_solver import get_dpm_solver_sampler
from score_sde.sampling.edm import get_heun_sampler
from score_sde.sampling.from_config import get_sampler
from score_sde.sampling.guidance import get_cfg_score_fn, get_guided_score_fn, sample_labels
from score_sde.sampling.methods import (default_final, DEFAULT_FINALS, DEFAULT_ORDERS,
                                        DEFAULT_SCHEDULES, FIXED_STEP_METHODS, grid_levels,
                                        grid_steps, METHODS, MULTISTEP_METHODS, ODE_METHODS)
from score_sde.sampling.ode import (get_ode_encoder, get_ode_sampler, probability_flow_drift,
                                    solve_probability_flow)
from score_sde.sampling.pc import get_pc_sampler
from score_sde.sampling.predictors import (AncestralSamplingPredictor, EulerMaruyamaPredictor,
                                           NonePredictor, Predictor, PREDICTORS,
                                           ReverseDiffusionPredictor)
from score_sde.sampling.shard import get_sharded_sampler
from score_sde.sampling.network import get_network_sampler, sampled_classes
from score_sde.sampling.unipc import get_unipc_sampler

# The largest order of each multistep solver, read off the solvers themselves.
MAX_ORDERS = {'dpm_solver': dpm_solver.method().max_order,
              'unipc': unipc.method('bh2', True).max_order,
              'deis': deis.method(True).max_order, 'ipndm': deis.method(False).max_order}


# The released code's name.
get_sampling_fn = get_sampler

__all__ = [
    'AncestralSamplingPredictor', 'AnnealedLangevinDynamics', 'CORRECTORS', 'Corrector',
    'DEFAULT_FINALS', 'DEFAULT_ORDERS', 'DEFAULT_SCHEDULES', 'EulerMaruyamaPredictor',
    'FIXED_STEP_METHODS',
    'InverseScaler', 'LangevinCorrector', 'MAX_ORDERS', 'METHODS', 'MULTISTEP_METHODS',
    'NoneCorrector', 'NonePredictor', 'ODE_METHODS', 'PREDICTORS', 'PerExampleLangevinCorrector',
    'Predictor', 'ReverseDiffusionPredictor', 'Sampler', 'get_adaptive_sampler', 'get_cfg_score_fn',
    'get_conditional_score_fn', 'get_deis_sampler', 'get_dpm_solver_sampler', 'get_guided_score_fn',
    'get_heun_sampler', 'get_ode_encoder', 'get_ode_sampler', 'get_pc_colorizer',
    'get_pc_inpainter', 'get_pc_sampler', 'get_sampler', 'get_sampling_fn', 'get_sharded_sampler',
    'default_final', 'get_network_sampler', 'get_unipc_sampler', 'grid_levels', 'grid_steps',
    'identity',
    'probability_flow_drift', 'sample_labels', 'sampled_classes', 'solve_probability_flow',
]
