"""Writes tests/fixtures/parity/: score_sde_pytorch's own numbers, for tests that need no torch.

    pip install torch   # CPU wheel; not a dependency of this package or its tests
    python benchmarks/make_parity_fixtures.py --pytorch_repo ~/score_sde_pytorch

For each network in ``NETWORKS`` (small settings of the paper's configs that between them use
every architecture option those configs use: FIR and plain resampling, progressive input
'residual' / 'input_skip', progressive output 'output_skip', Fourier and positional time
embeddings, BigGAN and DDPM residual blocks, attention, ``scale_by_sigma``, and the DDPM
network), the port builds the network from the same ``ml_collections`` config, takes
``--train_steps`` steps of its own train step (``losses.get_step_fn``: the SDE loss of the
config, Adam with warm-up and gradient clipping, its EMA) on fixed random images, and then

* saves the state with its own ``utils.save_checkpoint`` as ``<name>.pth`` (so the EMA differs
  from the weights and Adam's moments are not zero), and
* evaluates ``model(x, t)`` (``eval()`` mode) with the trained weights and, after
  ``ema.copy_to``, with the EMA weights, at fixed inputs, into ``<name>.npz`` (NHWC, float32).

``tests/test_parity.py`` converts each ``.pth`` with ``score_sde.conversion.pytorch_checkpoints``
and checks this project's networks against the stored outputs. NCSNv2, whose port layers are named
by attribute, is written as ``ncsnv2.npz`` instead: this project's initial parameters copied into
the port's network by name, with the port's outputs (``_mend_ncsn_layers`` for what the port needs
first). ``--only`` writes some fixtures only. The port compiles CUDA kernels when its ``op`` package
is imported; on CPU it calls only the pure-PyTorch ``upfirdn2d_native``, so
``torch.utils.cpp_extension.load`` is replaced by a stub first (as ``pytorch_parity.py`` does), and
its ``utils`` module gets an empty ``tensorflow`` (imported for gfile, unused here).
"""
import importlib.machinery
import json
import os
import subprocess
import sys
import types

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from tests.parity_networks import NETWORKS, ncsnv2_config, network_config  # noqa: E402

_REPO = flags.DEFINE_string('pytorch_repo', None, 'Checkout of score_sde_pytorch.')
_OUT = flags.DEFINE_string('out', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                               'tests', 'fixtures', 'parity'), 'Output folder.')
_STEPS = flags.DEFINE_integer('train_steps', 3, 'Port train steps before saving.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Images per input and per train step.')
_ONLY = flags.DEFINE_string('only', '', 'Comma-separated fixture names to write (default all: '
                            'NETWORKS, <name>_small_t of SMALL_T_NETWORKS and ncsnv2).')


def _import_port(repo: str):
  import torch
  import torch.utils.cpp_extension
  torch.utils.cpp_extension.load = lambda *args, **kwargs: None
  # The port's utils.py imports tensorflow for gfile, which save_checkpoint does not use.
  stub = types.ModuleType('tensorflow')
  stub.__spec__ = importlib.machinery.ModuleSpec('tensorflow', None)
  sys.modules.setdefault('tensorflow', stub)
  sys.path.insert(0, os.path.expanduser(repo))
  import losses
  import sde_lib
  import utils
  from models import ddpm, ncsnpp, ncsnv2  # noqa: F401  (registers the models)
  from models import layerspp
  from models import utils as mutils
  from models.ema import ExponentialMovingAverage
  interpolate = layerspp.F.interpolate

  def nearest(x, size=None, scale_factor=None, *args, **kwargs):
    # The port's layerspp.Upsample (DDPM blocks without FIR) calls interpolate(x, size,
    # 'nearest'), which torch reads as a scale factor and refuses; it means mode='nearest'.
    if isinstance(scale_factor, str):
      return interpolate(x, size=size, mode=scale_factor)
    return interpolate(x, size, scale_factor, *args, **kwargs)
  layerspp.F = types.SimpleNamespace(**{**vars(layerspp.F), 'interpolate': nearest})
  _mend_ncsn_layers(torch)
  return torch, losses, sde_lib, utils, mutils, ExponentialMovingAverage


def _mend_ncsn_layers(torch):
  """Two mends and two alignments that let the port's NCSNv2 stand as a reference:

  * ``ncsn_conv3x3`` scales ``conv.bias`` even when ``bias=False``, so every ``RCUBlock`` and
    ``CRPBlock`` (bias-free) raises and NCSNv2 cannot be built at all; the mend skips the
    missing bias.
  * It pads by 1 whatever the dilation, so dilated blocks shrink their input by 2 (dilation 2)
    or 6 (dilation 4) pixels; NCSNv2's own code and score_sde's JAX layers pad to keep the size
    (``padding = dilation``, ``'SAME'``), and so does the mend.
  * Two differences between NCSNv2's PyTorch code, which the port keeps, and score_sde's JAX
    code, which this project follows: ``MSFBlock`` upsamples with ``align_corners=True``
    where JAX resizes with half-pixel centres (``jax.image.resize``), and InstanceNorm++ takes
    the unbiased variance of the channel means where JAX takes the biased one. The fixture
    aligns the port to JAX in both, so that the test checks everything else;
    docs/fidelity.md records them.
  """
  from models import layers
  conv2d = torch.nn.Conv2d

  def ncsn_conv3x3(in_planes, out_planes, stride=1, bias=True, dilation=1, init_scale=1.,
                   padding=None):
    init_scale = 1e-10 if init_scale == 0 else init_scale
    conv = conv2d(in_planes, out_planes, stride=stride, bias=bias, dilation=dilation,
                  padding=dilation if padding is None else padding, kernel_size=3)
    conv.weight.data *= init_scale
    if conv.bias is not None:
      conv.bias.data *= init_scale
    return conv
  layers.ncsn_conv3x3 = ncsn_conv3x3
  interpolate = layers.F.interpolate

  def half_pixel(x, size=None, scale_factor=None, mode='nearest', align_corners=None):
    return interpolate(x, size, scale_factor, mode,
                       align_corners=False if mode == 'bilinear' else align_corners)
  layers.F = types.SimpleNamespace(**{**vars(layers.F), 'interpolate': half_pixel})
  from models import normalization
  var = torch.var

  def biased_var(x, dim=None, keepdim=False):
    return var(x, dim=dim, keepdim=keepdim, unbiased=False)
  normalization.torch = types.SimpleNamespace(**{**vars(torch), 'var': biased_var})


def _port_sde(sde_lib, config):
  m, name = config.model, config.training.sde.lower()
  if name == 'vesde':
    return sde_lib.VESDE(m.sigma_min, m.sigma_max, m.num_scales)
  cls = sde_lib.VPSDE if name == 'vpsde' else sde_lib.subVPSDE
  return cls(m.beta_min, m.beta_max, m.num_scales)


def _time_labels(config, batch: int, rng: np.random.Generator) -> np.ndarray:
  """What the network is called with: sigma (Fourier), 999 t (continuous VP), or a step index."""
  m = config.model
  if m.embedding_type == 'fourier' and m.name == 'ncsnpp':
    return np.exp(rng.uniform(np.log(m.sigma_min), np.log(m.sigma_max), batch)).astype(np.float32)
  if config.training.continuous:
    return (999. * rng.uniform(1e-3, 1., batch)).astype(np.float32)
  return rng.integers(0, m.num_scales, batch).astype(np.float32)


def _make(name: str, ports, out_dir: str, commit: str) -> None:
  torch, losses, sde_lib, utils, mutils, Ema = ports
  config = network_config(name)
  with config.unlocked():
    config.device = torch.device('cpu')
  torch.manual_seed(0)
  model = mutils.create_model(config)  # DataParallel: names are 'module.'-prefixed, as released.
  ema = Ema(model.parameters(), decay=config.model.ema_rate)
  optimizer = losses.get_optimizer(config, model.parameters())
  state = dict(optimizer=optimizer, model=model, ema=ema, step=0)
  step_fn = losses.get_step_fn(
      _port_sde(sde_lib, config), train=True, optimize_fn=losses.optimization_manager(config),
      reduce_mean=config.training.reduce_mean, continuous=config.training.continuous,
      likelihood_weighting=config.training.weighting == 'likelihood')  # The port: no 'elbo'.
  c, s = config.data.num_channels, config.data.image_size
  gen = torch.Generator().manual_seed(1)
  for _ in range(_STEPS.value):
    step_fn(state, torch.rand((_BATCH.value, c, s, s), generator=gen))
  utils.save_checkpoint(os.path.join(out_dir, f'{name}.pth'), state)

  rng = np.random.default_rng(2)
  x = rng.uniform(0., 1., (_BATCH.value, s, s, c)).astype(np.float32)
  t = _time_labels(config, _BATCH.value, rng)
  model.eval()
  with torch.no_grad():
    def apply():
      y = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t))
      return y.numpy().transpose(0, 2, 3, 1).astype(np.float32)
    out_model = apply()
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    out_ema = apply()
  provenance = dict(port_commit=commit, torch=torch.__version__, train_steps=_STEPS.value,
                    generator='benchmarks/make_parity_fixtures.py')
  np.savez(os.path.join(out_dir, f'{name}.npz'), x=x, t=t, out_model=out_model, out_ema=out_ema,
           step=np.int64(state['step']), provenance=json.dumps(provenance))
  if name in STEP_VARIANTS:
    ema.restore(model.parameters())  # Back to the trained weights.
    _sampling_fixture(name, torch, sde_lib, config, model, out_dir)
    _likelihood_fixture(name, torch, sde_lib, config, model, out_dir)
    _step_fixture(name, ports, state, config, out_dir)
  print(f'{name}: {sum(p.numel() for p in model.parameters()):,} parameters, output range '
        f'{np.ptp(out_ema):.3g}, |ema - model| {np.abs(out_ema - out_model).max():.3g}')


# Loss variants per network: (sde, continuous, likelihood_weighting). The first also takes a whole
# train step (clipping, warmed-up Adam, the EMA) from the saved state.
STEP_VARIANTS = {
    'ncsnpp_ve': (('vesde', True, False), ('vesde', True, True), ('vesde', False, False)),
    'ddpmpp_vp': (('vpsde', True, True), ('vpsde', True, False), ('subvpsde', True, False),
                  ('subvpsde', True, True), ('vpsde', False, False)),
}


class _FixedNoise:
  """The port's ``torch`` as its losses module sees it, drawing the given t, labels and z."""

  def __init__(self, torch, u, labels, z):
    self._torch, self._u, self._labels, self._z = torch, u, labels, z

  def __getattr__(self, name):
    return getattr(self._torch, name)

  def rand(self, *args, **kwargs):
    return self._torch.from_numpy(self._u)

  def randint(self, *args, **kwargs):
    return self._torch.from_numpy(self._labels)

  def randn_like(self, x):
    return self._torch.from_numpy(self._z.transpose(0, 3, 1, 2).copy())


def _sampling_fixture(name: str, torch, sde_lib, config, model, out_dir: str) -> None:
  """One reverse-diffusion, Euler-Maruyama and Langevin step and the probability-flow drift of
  the port's ``sampling.py`` at fixed x, t and noise, with the saved weights (eval mode)."""
  import sampling
  from models import utils as mutils
  sde = _port_sde(sde_lib, config)
  b, s, c = _BATCH.value, config.data.image_size, config.data.num_channels
  rng = np.random.default_rng(4)
  t = np.full((b,), 0.5, np.float32)
  x = rng.standard_normal((b, s, s, c)).astype(np.float32)
  z = rng.standard_normal((b, s, s, c)).astype(np.float32)
  sampling.torch = _FixedNoise(torch, None, None, z)
  score_fn = mutils.get_score_fn(sde, model, train=False, continuous=True)
  to_torch = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
  to_numpy = lambda a: a.detach().numpy().transpose(0, 2, 3, 1).copy()
  xt, tt = to_torch(x), torch.from_numpy(t)
  out = dict(x=x, t=t, z=z, snr=np.float32(0.16))
  with torch.no_grad():
    for key, step in (('reverse_diffusion', sampling.ReverseDiffusionPredictor(sde, score_fn)),
                      ('euler_maruyama', sampling.EulerMaruyamaPredictor(sde, score_fn)),
                      ('langevin', sampling.LangevinCorrector(sde, score_fn, 0.16, 1))):
      new, mean = step.update_fn(xt, tt)
      out[key], out[f'{key}_mean'] = to_numpy(new), to_numpy(mean)
    out['probability_flow_drift'] = to_numpy(
        sde.reverse(score_fn, probability_flow=True).sde(xt, tt)[0])
  sampling.torch = torch
  np.savez_compressed(os.path.join(out_dir, f'{name}_sampling.npz'), **out)


class _FixedProbe(_FixedNoise):
  """The port's ``torch`` as its likelihood module sees it: ``randint_like`` gives the probe."""

  def __init__(self, torch, bits):
    super().__init__(torch, None, None, None)
    self._bits = bits

  def randint_like(self, x, low=0, high=2):
    return self._torch.from_numpy(self._bits.transpose(0, 3, 1, 2).copy()).to(x.dtype)


def _likelihood_fixture(name: str, torch, sde_lib, config, model, out_dir: str) -> None:
  """bits/dim of fixed dequantized images through the port's ``likelihood.py`` (scipy RK45 at
  rtol = atol = 1e-7, tighter than the port's 1e-5) with a fixed Rademacher probe."""
  import likelihood  # The port's datasets.py (its scalers) needs tensorflow; they are these:
  centered = config.data.centered
  scaler = (lambda x: 2. * x - 1.) if centered else (lambda x: x)
  inverse_scaler = (lambda x: (x + 1.) / 2.) if centered else (lambda x: x)
  sde = _port_sde(sde_lib, config)
  b, s, c = _BATCH.value, config.data.image_size, config.data.num_channels
  rng = np.random.default_rng(5)
  images = (rng.integers(0, 256, (b, s, s, c)) + rng.uniform(0., 1., (b, s, s, c))) / 256.
  data = np.asarray(scaler(images), np.float32)
  bits = rng.integers(0, 2, (b, s, s, c)).astype(np.float32)
  likelihood.torch = _FixedProbe(torch, bits)
  fn = likelihood.get_likelihood_fn(sde, inverse_scaler, rtol=1e-7, atol=1e-7)
  bpd, _, nfe = fn(model, torch.from_numpy(data.transpose(0, 3, 1, 2).copy()))
  likelihood.torch = torch
  np.savez_compressed(os.path.join(out_dir, f'{name}_likelihood.npz'), data=data,
                      probe=2. * bits - 1., bpd=bpd.numpy().astype(np.float64), nfe=np.int64(nfe))
  print(f'{name}: bits/dim {bpd.numpy().round(4).tolist()} in {nfe} evaluations')


# Networks whose score near t = 0 is stored (``<name>_small_t.npz``), and the times: near the
# losses' eps, where the original's float32 std rounds.
SMALL_T_NETWORKS = ('ddpmpp_vp',)
SMALL_TIMES = (1e-5, 3e-5, 1e-4, 1e-3)


def _small_t_fixture(name: str, ports, out_dir: str, commit: str) -> None:
  """The port's network output, marginal std and continuous score (``-output / std``) of VP and
  sub-VP at ``SMALL_TIMES``, one image each, with the trained weights of ``<name>.pth`` in
  ``out_dir`` (eval mode). The port's std, ``sqrt(1 - exp(2 m))`` (sub-VP: ``1 - exp(2 m)``) in
  float32, rounds there; its scores differ from this project's by that rounding alone."""
  torch, _, sde_lib, _, mutils, _ = ports
  config = network_config(name)
  with config.unlocked():
    config.device = torch.device('cpu')
  model = mutils.create_model(config)
  # This project's reader: no unpickling (the file holds numpy scalars torch.load refuses).
  from score_sde.conversion import torch_files
  saved = torch_files.read_pth(os.path.join(out_dir, f'{name}.pth'))
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in saved['model'].items()})
  model.eval()
  m, s, c = config.model, config.data.image_size, config.data.num_channels
  rng = np.random.default_rng(6)
  t = np.asarray(SMALL_TIMES, np.float32)
  x = rng.uniform(-1., 1., (t.size, s, s, c)).astype(np.float32)
  xt, tt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t)
  to_numpy = lambda a: a.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)
  provenance = dict(port_commit=commit, torch=torch.__version__, weights=f'{name}.pth',
                    generator='benchmarks/make_parity_fixtures.py')
  out = dict(x=x, t=t, step=np.int64(saved['step']), provenance=json.dumps(provenance))
  with torch.no_grad():
    out['out'] = to_numpy(model(xt, tt * 999))  # The port's continuous VP label.
    for key, cls in (('vpsde', sde_lib.VPSDE), ('subvpsde', sde_lib.subVPSDE)):
      sde = cls(m.beta_min, m.beta_max, m.num_scales)
      out[f'std_{key}'] = sde.marginal_prob(torch.zeros_like(xt), tt)[1].numpy()
      out[f'score_{key}'] = to_numpy(
          mutils.get_score_fn(sde, model, train=False, continuous=True)(xt, tt))
  np.savez_compressed(os.path.join(out_dir, f'{name}_small_t.npz'), **out)
  print(f'{name}: score near t = 0 at t = {SMALL_TIMES}')


def _step_fixture(name: str, ports, state, config, out_dir: str) -> None:
  """Losses, gradient, the Adam step and the EMA update from the saved state at fixed noise."""
  torch, losses, sde_lib, _, _, _ = ports
  model, optimizer, ema = state['model'], state['optimizer'], state['ema']
  c, s, b = config.data.num_channels, config.data.image_size, _BATCH.value
  rng = np.random.default_rng(3)
  data = rng.uniform(0., 1., (b, s, s, c)).astype(np.float32)
  u = rng.uniform(0., 1., b).astype(np.float32)
  labels = rng.integers(0, config.model.num_scales, b).astype(np.int64)
  z = rng.standard_normal((b, s, s, c)).astype(np.float32)
  losses.torch = _FixedNoise(torch, u, labels, z)
  batch = torch.from_numpy(data.transpose(0, 3, 1, 2).copy())
  out = dict(data=data, u=u, labels=labels, z=z, reduce_mean=config.training.reduce_mean,
             variants=json.dumps(STEP_VARIANTS[name]))
  names = [k for k in model.state_dict() if '.all_modules.' in k]
  params = [p for n, p in model.named_parameters() if '.all_modules.' in n]
  values = []
  for sde_name, continuous, weighting in STEP_VARIANTS[name]:
    m = config.model
    if sde_name == 'vesde':
      sde = sde_lib.VESDE(m.sigma_min, m.sigma_max, m.num_scales)
    else:
      sde = (sde_lib.VPSDE if sde_name == 'vpsde' else sde_lib.subVPSDE)(
          m.beta_min, m.beta_max, m.num_scales)
    if continuous:
      loss_fn = losses.get_sde_loss_fn(sde, False, config.training.reduce_mean, True, weighting)
    elif sde_name == 'vesde':
      loss_fn = losses.get_smld_loss_fn(sde, False, config.training.reduce_mean)
    else:
      loss_fn = losses.get_ddpm_loss_fn(sde, False, config.training.reduce_mean)
    values.append(loss_fn(model, batch))
  # The whole step on the first variant's loss, after every loss is taken at the saved weights.
  optimizer.zero_grad()
  values[0].backward()
  for n, p in zip(names, params):
    out[f'grad/{n}'] = (p.grad.numpy().copy() if p.grad is not None
                        else np.zeros(p.shape, np.float32))
  losses.optimization_manager(config)(optimizer, model.parameters(), step=state['step'])
  ema.update(model.parameters())
  shadow = iter(ema.shadow_params)  # Trainable parameters only; frozen ones keep their value.
  for n, p in zip(names, params):
    out[f'after/{n}'] = p.detach().numpy().copy()
    out[f'ema_after/{n}'] = (next(shadow) if p.requires_grad else p.detach()).numpy().copy()
  values = [float(v) for v in values]
  losses.torch = torch
  out['losses'] = np.asarray(values, np.float64)
  np.savez_compressed(os.path.join(out_dir, f'{name}_step.npz'), **out)
  print(f'{name}: losses {np.round(values, 4).tolist()} at {STEP_VARIANTS[name]}')


def _ncsnv2_port_name(model, key: str):
  """The linen parameter path (a tuple) of port state-dict entry ``key`` of NCSNv2.

  The port names NCSNv2's layers by attribute (``begin_conv``, ``res<a>.<b>``, ``refine<k>``,
  ``normalizer``, ``end_conv``); linen numbers them in the order ``__call__`` creates them.
  """
  parts = key.split('.')
  if parts[0] == 'module':
    parts = parts[1:]
  leaf = parts[-1]
  head = parts[0]
  if head in ('begin_conv', 'end_conv'):
    return ('Conv_0' if head == 'begin_conv' else 'Conv_1',), leaf
  if head == 'normalizer':
    return ('InstanceNorm2dPlus_0',), leaf
  if head.startswith('res'):
    a, b = int(head[3:]), int(parts[1])
    block = getattr(model, head)[b]
    name = f'ResidualBlock_{2 * (a - 1) + b}'
    sub = parts[2]
    if sub in ('normalize1', 'normalize2'):
      return (name, f'InstanceNorm2dPlus_{int(sub[-1]) - 1}'), leaf
    dilated = block.conv1.dilation[0] > 1
    if block.resample == 'down' and not dilated:
      table = {'conv1': ('Conv_0',), 'conv2': ('ConvMeanPool_0', 'Conv_0'),
               'shortcut': ('ConvMeanPool_1', 'Conv_0')}
    elif block.resample == 'down':
      table = {'conv1': ('Conv_0',), 'conv2': ('Conv_1',), 'shortcut': ('Conv_2',)}
    elif block.input_dim != block.output_dim:
      table = {'shortcut': ('Conv_0',), 'conv1': ('Conv_1',), 'conv2': ('Conv_2',)}
    else:
      table = {'conv1': ('Conv_0',), 'conv2': ('Conv_1',)}
    return (name,) + table[sub], leaf
  if head.startswith('refine'):
    k = int(head[6:])
    block = getattr(model, head)
    name = (f'RefineBlock_{k - 1}',)
    sub = parts[1]
    if sub == 'adapt_convs':
      rcu, conv = (f'RCUBlock_{int(parts[2])}',), parts[3]
    elif sub == 'output_convs':
      rcu, conv = (f'RCUBlock_{block.n_blocks}',), parts[2]
    else:  # msf.convs.<j> / crp.convs.<j>
      return name + ({'msf': 'MSFBlock_0', 'crp': 'CRPBlock_0'}[sub], f'Conv_{parts[3]}'), leaf
    i, j = (int(v) for v in conv.split('_')[:2])  # '<block>_<stage>_conv', both from 1.
    return name + rcu + (f'Conv_{(i - 1) * 2 + (j - 1)}',), leaf
  raise KeyError(key)


def _ncsnv2_fixture(ports, out_dir: str, commit: str) -> None:
  """Our initialised NCSNv2 parameters copied into the port's network by name, and both
  networks' inputs and the port's outputs, into ``ncsnv2.npz``."""
  import jax
  from score_sde.models import utils as jax_models
  torch, _, _, _, mutils, _ = ports
  config = ncsnv2_config()
  params = jax.tree.map(np.asarray, jax_models.init_params(jax.random.key(0), config))
  with config.unlocked():
    config.device = torch.device('cpu')
    config.data.channels = config.data.num_channels  # The port's NCSNv2 reads this name.
  model = mutils.create_model(config)
  # score_sde's NCSNv2 (JAX, the released checkpoints' layout, which this project follows)
  # refines at 2 nf down to the last block; the port's refine3 has nf. Built at score_sde's
  # widths, the port's layers are checked on the architecture this project implements.
  from models.layers import RefineBlock
  nf, act = config.model.nf, model.module.act
  model.module.refine3 = RefineBlock([2 * nf, 2 * nf], 2 * nf, act=act)
  model.module.refine4 = RefineBlock([nf, 2 * nf], nf, act=act, end=True)
  state = model.state_dict()
  used = set()
  for key in state:
    if key.endswith('sigmas'):
      continue
    path, leaf = _ncsnv2_port_name(model.module, key)
    node = params
    for p in path:
      node = node[p]
    ours_leaf = {'weight': 'kernel'}.get(leaf, leaf)
    value = node[ours_leaf]
    used.add(path + (ours_leaf,))
    value = value.transpose(3, 2, 0, 1) if value.ndim == 4 and leaf == 'weight' else value
    if value.size != state[key].numel():
      raise ValueError(f'{key} -> {path + (ours_leaf,)}: {value.shape} vs {tuple(state[key].shape)}')
    state[key] = torch.from_numpy(value.reshape(state[key].shape).copy())
  leaves = {tuple(getattr(k, 'key', k) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  if leaves != used:
    raise RuntimeError(f'Parameters not matched: {sorted(leaves ^ used)[:5]}')
  model.load_state_dict(state)
  model.eval()
  rng = np.random.default_rng(3)
  c, s = config.data.num_channels, config.data.image_size
  x = rng.uniform(0., 1., (_BATCH.value, s, s, c)).astype(np.float32)
  labels = rng.integers(0, config.model.num_scales, _BATCH.value)
  with torch.no_grad():
    out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels))
  out = out.numpy().transpose(0, 2, 3, 1).astype(np.float32)
  flat = {'params/' + '/'.join(str(getattr(k, 'key', k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  provenance = dict(port_commit=commit, torch=torch.__version__,
                    generator='benchmarks/make_parity_fixtures.py')
  np.savez_compressed(os.path.join(out_dir, 'ncsnv2.npz'), x=x, labels=labels, out=out,
                      provenance=json.dumps(provenance), **flat)
  print(f'ncsnv2: {sum(v.size for v in flat.values()):,} parameters, output range '
        f'{np.ptp(out):.3g}')


def main(argv):
  del argv
  if not _REPO.value:
    raise app.UsageError('--pytorch_repo: the path of a score_sde_pytorch checkout.')
  repo = os.path.expanduser(_REPO.value)
  commit = subprocess.run(['git', '-C', repo, 'rev-parse', 'HEAD'], capture_output=True,
                          text=True, check=False).stdout.strip() or 'unknown'
  os.makedirs(_OUT.value, exist_ok=True)
  ports = _import_port(repo)
  only = _ONLY.value.split(',') if _ONLY.value else None
  for name in NETWORKS:
    if only is None or name in only:
      _make(name, ports, _OUT.value, commit)
  for name in SMALL_T_NETWORKS:  # From the .pth in the folder: the one written above, if any.
    if only is None or f'{name}_small_t' in only:
      _small_t_fixture(name, ports, _OUT.value, commit)
  if only is None or 'ncsnv2' in only:
    _ncsnv2_fixture(ports, _OUT.value, commit)


if __name__ == '__main__':
  app.run(main)
