"""Writes tests/fixtures/improved_diffusion_vb.npz: improved-diffusion's own variational bound.

    git clone https://github.com/openai/improved-diffusion ~/improved-diffusion
    pip install torch   # CPU wheel; not a dependency of this package or its tests
    python benchmarks/make_elbo_fixtures.py --improved_diffusion ~/improved-diffusion

``--improved_diffusion`` is the folder that holds the ``improved_diffusion`` package (only its
``gaussian_diffusion.py``, ``losses.py`` and ``nn.py`` are imported).
``tests/test_elbo_reference.py`` reads the fixture with numpy alone: the tests never need torch.

The reference is ``GaussianDiffusion.calc_bpd_loop`` (Ho et al. 2020, Eq. 5, as improved-diffusion
computes it: ``_vb_terms_bpd`` per step, ``_prior_bpd``), on

* the chain ``betas = linspace(0.1 / N, 20 / N, N)``, ``N = 40`` (improved-diffusion's 'linear'
  schedule at ``N`` steps, and this project's ``sde_lib.VPSDE(0.1, 20., 40)`` DDPM chain),
* ``x_start`` of shape ``(3, 4, 4, 3)``, 8-bit values ``2 k / 255 - 1`` with pixels at both edges
  (every reference function used is elementwise or a mean over the non-batch axes, so the layout
  is immaterial; the fixture is read as NHWC),
* the deterministic elementwise model ``out = tanh(A x_t + B t / N)`` (``t`` the integer step
  index, ``rescale_timesteps=False``), read once as the noise (``EPSILON``) and once as the clean
  image (``START_X``),
* every pair of ``model_var_type`` in (``FIXED_SMALL``, ``FIXED_LARGE``) and ``clip_denoised``,
* fixed noise: the loop's one ``th.randn_like`` per step returns ``noise[t]`` (drawn here with
  numpy; the loop walks ``t = N - 1`` down to ``0``, and the draws are counted).

Each case is run three ways (``_variant``): as written (``float32``), in float64 (``float64``),
and in float64 with the exact normal CDF in the decoder (``float64_ndtr``), and stored per
``<variant>/<mean>/<var>/<clip>/`` (``epsilon|start_x``, ``fixed_small|fixed_large``,
``clip|noclip``): ``total_bpd`` and ``prior_bpd`` ``(B,)``, ``vb``, ``xstart_mse`` and ``mse``
``(B, N)``. The loop stacks its terms in the order it visits them (``t = N - 1`` first); here
column ``t`` holds step ``t``. Beside them: ``discretized_gaussian_log_likelihood`` at fixed
``x`` (every 8-bit level in ``[-1, 1]``), means and log-scales (``decoder/*``, its output per
variant), and ``normal_kl`` at fixed inputs (``normal_kl/*``, float64), with ``provenance``.
"""
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags

_DIR = flags.DEFINE_string('improved_diffusion', None,
                           'Folder holding the improved_diffusion package (a checkout of '
                           'openai/improved-diffusion).')
_COMMIT = flags.DEFINE_string('commit', '', 'The reference commit to record (default: git '
                              'rev-parse HEAD in --improved_diffusion).')
_OUT = flags.DEFINE_string('out', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                               'tests', 'fixtures', 'improved_diffusion_vb.npz'),
                           'Output file.')

N = 40
SHAPE = (3, 4, 4, 3)
A, B = 0.8, 0.5  # The model: out = tanh(A x_t + B t / N).
CASES = [(mean, var, clip) for mean in ('epsilon', 'start_x')
         for var in ('fixed_small', 'fixed_large') for clip in ('clip', 'noclip')]
VARIANTS = ('float32', 'float64', 'float64_ndtr')


class _FixedNoise:
  """The reference's ``torch`` as ``calc_bpd_loop`` sees it: ``randn_like`` returns ``noise[t]``
  for ``t = N - 1, ..., 0`` in turn."""

  def __init__(self, torch, noise):
    self._torch, self._noise, self.draws = torch, noise, 0

  def __getattr__(self, name):
    return getattr(self._torch, name)

  def randn_like(self, x):
    t = len(self._noise) - 1 - self.draws
    self.draws += 1
    assert t >= 0 and x.shape == self._noise[t].shape, 'calc_bpd_loop drew more than N times'
    return self._torch.from_numpy(self._noise[t]).to(x.dtype)


@contextlib.contextmanager
def _variant(torch, gd, losses, variant):
  """The reference as written ('float32'), in float64 ('float64': ``_extract_into_tensor`` keeps
  the schedule's float64 instead of casting to float32), or in float64 with the exact normal CDF
  in the decoder ('float64_ndtr': ``approx_standard_normal_cdf``, Ho et al.'s tanh approximation,
  replaced by ``torch.special.ndtr``)."""
  extract, cdf = gd._extract_into_tensor, losses.approx_standard_normal_cdf

  def extract64(arr, timesteps, broadcast_shape):
    res = torch.from_numpy(arr)[timesteps].double()
    return res.view(-1, *([1] * (len(broadcast_shape) - 1))).expand(broadcast_shape)
  if variant != 'float32':
    gd._extract_into_tensor = extract64
  if variant == 'float64_ndtr':
    losses.approx_standard_normal_cdf = torch.special.ndtr
  try:
    yield torch.float32 if variant == 'float32' else torch.float64
  finally:
    gd._extract_into_tensor, losses.approx_standard_normal_cdf = extract, cdf


def _inputs(rng):
  """``x_start`` (float32, the 8-bit grid in ``[-1, 1]``) and ``noise[t]``, ``(N,) + SHAPE``."""
  k = rng.integers(0, 256, SHAPE)
  k[:, 0, 0, :], k[:, -1, -1, :] = 0, 255  # The decoder's two open edge bins.
  k[0, 1, 2, 1], k[2, 3, 0, 0] = 0, 255
  x_start = (2. * k / 255. - 1.).astype(np.float32)
  noise = rng.standard_normal((N,) + SHAPE).astype(np.float32)
  return x_start, noise


def _bound(gd, torch, dtype, betas, x_start, noise, mean, var, clip):
  """``calc_bpd_loop`` of one case, with its terms indexed by step."""
  def model(x, t):
    return torch.tanh(A * x + B * (t.to(x.dtype) / N).view(-1, *([1] * (x.dim() - 1))))
  diffusion = gd.GaussianDiffusion(
      betas=betas, model_mean_type=getattr(gd.ModelMeanType, mean.upper()),
      model_var_type=getattr(gd.ModelVarType, var.upper()), loss_type=gd.LossType.KL,
      rescale_timesteps=False)
  fixed = _FixedNoise(torch, noise)
  gd.th = fixed
  try:
    out = diffusion.calc_bpd_loop(model, torch.from_numpy(x_start).to(dtype),
                                  clip_denoised=clip == 'clip')
  finally:
    gd.th = torch
  assert fixed.draws == N, f'calc_bpd_loop drew {fixed.draws} noises for {N} steps'
  out = {k: v.numpy() for k, v in out.items()}
  assert all(v.dtype == out['vb'].dtype for v in out.values())
  for key in ('vb', 'xstart_mse', 'mse'):
    out[key] = out[key][:, ::-1].copy()  # The loop's column j is step N - 1 - j.
  return out


def _decoder_inputs(rng):
  """Every 8-bit level, twice, at log-scales from 1e-3 (a fraction of a bin) to 0.2, with means
  within 4 scales of x (bin masses above 1e-6, off the reference's 1e-12 floor)."""
  x = np.tile(2. * np.arange(256) / 255. - 1., 2)
  log_scales = rng.uniform(np.log(1e-3), np.log(0.2), x.shape)
  z = np.clip(1.5 * rng.standard_normal(x.shape), -4., 4.)
  means = x - z * np.exp(log_scales)
  return [v.astype(np.float32) for v in (x, means, log_scales)]


def main(argv):
  del argv
  if not _DIR.value:
    raise app.UsageError('--improved_diffusion: the folder holding the improved_diffusion package.')
  folder = os.path.expanduser(_DIR.value)
  commit = _COMMIT.value or subprocess.run(
      ['git', '-C', folder, 'rev-parse', 'HEAD'], capture_output=True, text=True,
      check=False).stdout.strip() or 'unknown'
  import torch
  sys.path.insert(0, folder)
  from improved_diffusion import gaussian_diffusion as gd
  from improved_diffusion import losses

  rng = np.random.default_rng(0)
  betas = np.linspace(0.1 / N, 20. / N, N, dtype=np.float64)
  x_start, noise = _inputs(rng)
  out = dict(betas=betas, x_start=x_start, noise=noise, A=np.float32(A), B=np.float32(B))
  for variant in VARIANTS:
    with _variant(torch, gd, losses, variant) as dtype:
      for mean, var, clip in CASES:
        terms = _bound(gd, torch, dtype, betas, x_start, noise, mean, var, clip)
        for key, value in terms.items():
          out[f'{variant}/{mean}/{var}/{clip}/{key}'] = value
        print(f'{variant:12s} {mean:7s} {var:11s} {clip:6s}: total '
              f'{np.round(terms["total_bpd"], 5).tolist()} bits/dim, prior '
              f'{terms["prior_bpd"].max():.2e}, t = 0 {np.round(terms["vb"][:, 0], 5).tolist()}')

  x, means, log_scales = _decoder_inputs(rng)
  out.update({'decoder/x': x, 'decoder/means': means, 'decoder/log_scales': log_scales})
  for variant in VARIANTS:
    with _variant(torch, gd, losses, variant) as dtype:
      log_probs = losses.discretized_gaussian_log_likelihood(
          torch.from_numpy(x).to(dtype), means=torch.from_numpy(means).to(dtype),
          log_scales=torch.from_numpy(log_scales).to(dtype)).numpy()
    out[f'decoder/{variant}/log_probs'] = log_probs
    print(f'decoder {variant}: log-probabilities in [{log_probs.min():.3g}, '
          f'{log_probs.max():.3g}] nats')

  kl_in = [rng.standard_normal(64).astype(np.float32) for _ in range(4)]
  out.update({f'normal_kl/{k}': v for k, v in zip(('mean1', 'logvar1', 'mean2', 'logvar2'),
                                                   kl_in)})
  out['normal_kl/kl'] = losses.normal_kl(
      *(torch.from_numpy(v).double() for v in kl_in)).numpy()
  print(f'normal_kl: in [{out["normal_kl/kl"].min():.3g}, {out["normal_kl/kl"].max():.3g}] nats')

  out['provenance'] = json.dumps(dict(
      reference='openai/improved-diffusion', reference_commit=commit, torch=torch.__version__,
      model=f'tanh({A} x_t + {B} t / {N})', generator='benchmarks/make_elbo_fixtures.py'))
  path = os.path.abspath(_OUT.value)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez_compressed(path, **out)
  print(f'wrote {path}: {len(out)} arrays, {os.path.getsize(path) / 1024:.0f} KiB')


if __name__ == '__main__':
  app.run(main)
