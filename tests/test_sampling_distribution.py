"""Every sampler, on every SDE, draws the right distribution and counts its score evaluations.

Target: a centred 3-component Gaussian mixture in 8 dimensions (``test_sampling_support``), whose
perturbed score is exact (``analytic.score_fn``), so any mismatch is the sampler's. Each test
checks the mode weights and the per-mode means and variances of 10^4 samples against
``p_eps = analytic.marginal(target, sde, eps)`` and compares the returned ``nfe`` with the
number of ``score_fn`` calls counted by a host callback.

Tolerance: 5 two-sample standard errors (noise floor of fresh exact draws) for every statistic,
plus, for variances of denoised samples, ``3 std(eps)^2``: Tweedie's denoiser maps a mode of
variance ``s^2 + std^2`` to one of variance ``s^4 / (s^2 + std^2) = s^2 - std^2 + O(std^4)``, a
``2 std^2`` gap from ``p_eps``. The step counts were chosen so that the discretisation bias,
measured offline with 10^5 samples, stays below ~1.5 standard errors of these 10^4-sample tests.
"""
import jax
import numpy as np
import pytest

import test_sampling_support as support
from score_sde import analytic, sampling
from score_sde.sampling import multistep

BATCH, DIM = 10000, 8
PC_STEPS = 300  # The SDE's N, which the PC samplers step through.
FAST_STEPS = 40  # Heun and multistep steps.
SNR = 0.075  # Corrector bias grows as snr^2; 0.075 keeps it below the noise floor here.


def _make(kind, sde, eps):
  shape = (BATCH, DIM)
  identity = sampling.identity
  pc_times = sampling.get_times(sde, 'pc', eps=eps)  # linspace(T, eps, N): the chain's levels.
  ode_times = sampling.get_times(sde, 'ode', eps=eps)  # [T, eps].
  if kind == 'em':
    return sampling.get_pc_sampler(sde, shape, identity, pc_times, 'euler_maruyama', 'none', SNR)
  if kind == 'rd_langevin':
    return sampling.get_pc_sampler(sde, shape, identity, pc_times, 'reverse_diffusion',
                                   'langevin', SNR)
  if kind == 'ancestral_ald':
    return sampling.get_pc_sampler(sde, shape, identity, pc_times, 'ancestral_sampling', 'ald',
                                   SNR)
  if kind == 'ode':
    return sampling.get_ode_sampler(sde, shape, identity, ode_times, denoise=True)
  if kind == 'adaptive':  # Its default tolerances (Jolicoeur-Martineau et al.'s).
    return sampling.get_adaptive_sampler(sde, shape, identity, ode_times)
  if kind == 'heun':
    return sampling.get_heun_sampler(sde, shape, identity,
                                     sampling.get_times(sde, 'heun', FAST_STEPS, eps=eps))
  if kind == 'heun_churn':  # EDM's Algorithm 2, gamma = min(20 / 80, sqrt(2) - 1) = 0.25.
    return sampling.get_heun_sampler(sde, shape, identity,
                                     sampling.get_times(sde, 'heun', 2 * FAST_STEPS, eps=eps),
                                     s_churn=20.)
  builder = {'dpm_solver': sampling.get_dpm_solver_sampler, 'unipc': sampling.get_unipc_sampler,
             'deis': sampling.get_deis_sampler}[kind]
  # Each SDE's own end (multistep.DEFAULT_FINALS), which sets the levels of FAST_STEPS steps.
  final = multistep.default_final(sde)
  return builder(sde, shape, identity,
                 sampling.get_times(sde, kind, FAST_STEPS, eps=eps, final=final), final=final)


# Multistep samplers end at sigma = 0 (``sampling.multistep``): their law is the data itself.
TO_ZERO = ('dpm_solver', 'unipc', 'deis')


# The adaptive sampler on VP and VE only: about 20 s a case, and sub-VP adds no new step.
CASES = [(sde_name, kind) for kind in ['em', 'rd_langevin', 'ancestral_ald', 'ode', 'adaptive',
                                       'heun', 'heun_churn'] + list(TO_ZERO)
         for sde_name in support.SDES if (sde_name, kind) != ('subvpsde', 'adaptive')]


@pytest.mark.parametrize('sde_name, kind', CASES)
def test_sampler_draws_p_eps_with_exact_nfe(sde_name, kind):
  """Samples (all denoised) match p_eps within the noise floor + denoising bias (module
  docstring), those of the multistep samplers the data p_0 itself within the noise floor (for
  VE too, whose sigma(0) = sigma_min > 0: the extrapolation reaches sigma = 0), and the reported
  nfe equals the counted score_fn calls exactly."""
  sde, eps = support.SDES[sde_name](PC_STEPS), support.EPS[sde_name]
  target = support.mixture(DIM)
  score_fn, calls = support.counting(analytic.score_fn(target, sde))
  sampler = _make(kind, sde, eps)
  samples, nfe = jax.jit(lambda rng: sampler(rng, score_fn))(jax.random.key(1))
  samples = np.asarray(samples)
  assert int(nfe) == calls[0]
  if kind in TO_ZERO:
    support.assert_matches(samples, target, seed=7)
    return
  _, std_eps = sde.marginal_coeffs(np.float32(eps))
  support.assert_matches(samples, analytic.marginal(target, sde, eps), seed=7,
                         var_bias=3. * float(std_eps) ** 2)
