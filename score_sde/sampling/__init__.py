"""Samplers on a plain ``score_fn(x, t)``: PC, probability-flow ODE, EDM Heun, DPM-Solver++.

Every sampler is built once from an SDE and a sample shape and called as
``sampler(rng, score_fn) -> (samples, nfe)`` (see ``sampling.base`` for the contract and how to
jit it once); ``get_sampler(config, ...)`` picks one from ``config.sampling``. Class-conditional
sampling is a score like any other (``guidance``: classifier-free and classifier guidance).
Importing the package fills ``PREDICTORS`` and ``CORRECTORS``.
"""
import ml_collections

from score_sde import sde_lib
from score_sde.sampling.base import InverseScaler, Sampler, identity
from score_sde.sampling.controllable import (get_conditional_score_fn, get_pc_colorizer,
                                             get_pc_inpainter)
from score_sde.sampling.correctors import (CORRECTORS, AnnealedLangevinDynamics, Corrector,
                                           LangevinCorrector, NoneCorrector,
                                           PerExampleLangevinCorrector)
from score_sde.sampling.dpm_solver import get_dpm_solver_sampler
from score_sde.sampling.edm import get_heun_sampler
from score_sde.sampling.ode import (get_ode_encoder, get_ode_sampler, probability_flow_drift,
                                    solve_probability_flow)
from score_sde.sampling.guidance import get_cfg_score_fn, get_guided_score_fn, sample_labels
from score_sde.sampling.pc import get_pc_sampler
from score_sde.sampling.predictors import (PREDICTORS, AncestralSamplingPredictor,
                                           EulerMaruyamaPredictor, NonePredictor, Predictor,
                                           ReverseDiffusionPredictor)
from score_sde.sampling.shard import get_sharded_sampler
from score_sde.sampling.snapshot import get_snapshot_sampler, snapshot_labels

METHODS = ('pc', 'ode', 'heun', 'dpm_solver')


def get_sampler(config: ml_collections.ConfigDict, sde: sde_lib.SDE, shape,
                inverse_scaler: InverseScaler, eps: float) -> Sampler:
  """The sampler named by ``config.sampling.method``, configured from ``config.sampling``.

  Reads ``method``, ``predictor``, ``corrector``, ``snr``, ``n_steps_each``,
  ``probability_flow``, ``noise_removal`` (denoise), ``rtol``, ``atol``, ``pc_num_steps`` (PC),
  ``num_steps`` (Heun / DPM-Solver++; for both 0 means ``sde.N``), ``s_churn`` (Heun) and
  ``dpm_solver_order``, and
  ``config.training.continuous``.

  Args:
    config: the full experiment config.
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    eps: the smallest time (``sde.sampling_eps`` in the released code, 1e-3 / 1e-5).
  Returns:
    ``sampler(rng, score_fn) -> (samples, nfe)``.
  Raises:
    KeyError: for an unknown method, predictor or corrector, listing the known ones.
  """
  s = config.sampling
  method = str(s.method).lower()
  num_steps = int(s.num_steps) or sde.N
  if method == 'pc':
    return get_pc_sampler(sde, shape, s.predictor, s.corrector, inverse_scaler, s.snr,
                          n_steps=s.n_steps_each, probability_flow=s.probability_flow,
                          continuous=config.training.continuous, denoise=s.noise_removal,
                          eps=eps, num_steps=int(s.get('pc_num_steps', 0)) or sde.N)
  if method == 'ode':
    return get_ode_sampler(sde, shape, inverse_scaler, denoise=s.noise_removal, rtol=s.rtol,
                           atol=s.atol, eps=eps)
  if method == 'heun':
    return get_heun_sampler(sde, shape, inverse_scaler, num_steps, denoise=s.noise_removal,
                            eps=eps, s_churn=s.s_churn)
  if method == 'dpm_solver':
    return get_dpm_solver_sampler(sde, shape, inverse_scaler, num_steps,
                                  order=s.dpm_solver_order, denoise=s.noise_removal, eps=eps)
  raise KeyError(f'Unknown sampling method {s.method!r}; known: {", ".join(METHODS)}.')


# The released code's name.
get_sampling_fn = get_sampler

__all__ = [
    'AncestralSamplingPredictor', 'AnnealedLangevinDynamics', 'CORRECTORS', 'Corrector',
    'EulerMaruyamaPredictor', 'InverseScaler', 'LangevinCorrector', 'METHODS', 'NoneCorrector',
    'NonePredictor', 'PREDICTORS', 'PerExampleLangevinCorrector', 'Predictor',
    'ReverseDiffusionPredictor', 'Sampler', 'get_cfg_score_fn', 'get_conditional_score_fn',
    'get_dpm_solver_sampler', 'get_guided_score_fn',
    'get_heun_sampler', 'get_ode_encoder', 'get_ode_sampler', 'get_pc_colorizer',
    'get_pc_inpainter', 'get_pc_sampler', 'get_sampler', 'get_sampling_fn', 'get_sharded_sampler',
    'get_snapshot_sampler', 'identity', 'probability_flow_drift', 'sample_labels',
    'snapshot_labels', 'solve_probability_flow',
]
