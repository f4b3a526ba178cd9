"""Writes tests/fixtures/edm_precond.npz: EDM's preconditioned denoisers and losses (NVlabs/edm
``training/networks.py`` ``EDMPrecond``, ``VPPrecond``, ``VEPrecond``; ``training/loss.py``
``EDMLoss``, ``VPLoss``, ``VELoss``) around a closed-form inner network, so that
``tests/test_edm_precond.py`` can hold ``models.parameterization``'s ``'edm'``, ``'edm_vp'``,
``'edm_ve'`` and ``losses.edm_loss`` / ``dsm_loss`` to them without torch.

Run once, with torch and a checkout of NVlabs/edm (commit 008a4e5 made the committed file):

    python benchmarks/make_edm_precond_fixtures.py --edm_dir /path/to/edm

The inner network is ``F(x, c_noise) = tanh(a x + b c_noise + c)`` with fixed per-element
``a, b, c``: any function of both inputs serves, since the fixture checks what EDM wraps around
the network (``c_in``, ``c_noise``, ``c_skip``, ``c_out``, the loss's levels and weight), not a
network. The losses' random draws are recorded by replaying their generator.
"""
import argparse
import sys

import numpy as np

SHAPE = (8, 2, 4, 4)  # NCHW, as EDM; the fixture stores NHWC.
SIGMAS = (0.002, 0.01, 0.1, 0.5, 1., 5., 20., 80.)
SIGMA_DATA = 0.5
SEED = 3


def _closed_form_class():
  """EDM's inner-network interface on ``tanh(a x + b c_noise + c)``, ``coefficients = (a, b,
  c)`` set on the class."""
  import torch  # pylint: disable=g-import-not-at-top

  class ClosedForm(torch.nn.Module):
    coefficients = ()

    def __init__(self, **kwargs):
      del kwargs
      super().__init__()

    def forward(self, x, noise_labels, class_labels=None, **kwargs):
      del class_labels, kwargs
      a, b, c = self.coefficients
      return torch.tanh(a * x + b * noise_labels.reshape(-1, 1, 1, 1) + c)

  return ClosedForm


def _nhwc(x):
  return np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--edm_dir', required=True, help='a checkout of NVlabs/edm')
  parser.add_argument('--out', default='tests/fixtures/edm_precond.npz')
  args = parser.parse_args()
  sys.path.insert(0, args.edm_dir)
  import torch  # pylint: disable=g-import-not-at-top
  from torch_utils import persistence  # pylint: disable=g-import-not-at-top
  from training import loss as edm_loss, networks  # pylint: disable=g-import-not-at-top

  # The wrappers check at construction that they would pickle; these are never pickled.
  persistence._check_pickleable = lambda obj: None  # pylint: disable=protected-access

  rng = np.random.default_rng(SEED)
  a, b, c = (rng.uniform(-1., 1., SHAPE[1:]).astype(np.float32) for _ in range(3))

  ClosedForm = _closed_form_class()
  ClosedForm.coefficients = tuple(torch.as_tensor(v) for v in (a, b, c))
  networks.ClosedForm = ClosedForm  # EDM's wrappers find the model class by name there.
  kwargs = dict(img_resolution=SHAPE[2], img_channels=SHAPE[1], model_type='ClosedForm')
  nets = {'edm': networks.EDMPrecond(sigma_data=SIGMA_DATA, **kwargs),
          'edm_vp': networks.VPPrecond(**kwargs), 'edm_ve': networks.VEPrecond(**kwargs)}

  clean = rng.uniform(-1., 1., SHAPE).astype(np.float32)
  sigma = np.asarray(SIGMAS, np.float32)
  noisy = clean + sigma[:, None, None, None] * rng.standard_normal(SHAPE).astype(np.float32)
  out = {'a': _nhwc(a[None])[0], 'b': _nhwc(b[None])[0], 'c': _nhwc(c[None])[0],
         'clean': _nhwc(clean), 'noisy': _nhwc(noisy), 'sigma': sigma,
         'sigma_data': np.float32(SIGMA_DATA)}
  with torch.no_grad():
    for name, net in nets.items():
      out[f'denoised_{name}'] = _nhwc(net(torch.as_tensor(noisy), torch.as_tensor(sigma)))

    # Each loss at the draws of torch.manual_seed(seed); replaying the generator in the loss's
    # order (one level per image, then the noise) records them.
    images = torch.as_tensor(clean)
    losses = {'edm': (edm_loss.EDMLoss(P_mean=-1.2, P_std=1.2, sigma_data=SIGMA_DATA),
                      nets['edm'], torch.randn),
              'vp': (edm_loss.VPLoss(), nets['edm_vp'], torch.rand),
              've': (edm_loss.VELoss(), nets['edm_ve'], torch.rand)}
    for i, (name, (loss_fn, net, level_draw)) in enumerate(losses.items()):
      torch.manual_seed(100 + i)
      per_element = loss_fn(net, images, labels=None)
      torch.manual_seed(100 + i)
      level = level_draw([SHAPE[0], 1, 1, 1])
      z = torch.randn_like(images)
      out[f'loss_{name}'] = per_element.sum(dim=(1, 2, 3)).numpy().astype(np.float32)
      out[f'level_{name}'] = level.reshape(-1).numpy().astype(np.float32)
      out[f'z_{name}'] = _nhwc(z)
  np.savez(args.out, **out)
  print(f'wrote {args.out}: ' + ', '.join(f'{k} {v.shape}' for k, v in out.items()))


if __name__ == '__main__':
  main()
