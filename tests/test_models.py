"""Tests of the score networks (score_sde.models): resampling, embeddings, parameter layout,
forward passes of every registered model and the score-function adapter.

Shapes are tiny (16x16, nf=8) and each model variant is compiled once, so the file runs in
seconds. The released-checkpoint layout is written out by hand from the released NCSN++ code.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from score_sde import models, sde_lib
from score_sde.configs import default
from score_sde.models import layers, layerspp, up_or_down_sampling as ud


def _flat_shapes(tree):
  return {'/'.join(k.key for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _conv_same(x, w):
  """Per-image 'SAME' cross-correlation with HWIO ``w``, computed with scipy."""
  n, h, wd, cin = x.shape
  out = np.zeros((n, h, wd, w.shape[-1]), np.float64)
  for b in range(n):
    for o in range(w.shape[-1]):
      for i in range(cin):
        out[b, :, :, o] += signal.correlate2d(x[b, :, :, i], w[:, :, i, o], mode='same')
  return out


# ------------------------------------------------------------------------ FIR resampling

def _up_1331(x, axis):
  """Closed form of [1,3,3,1] 2x upsampling along ``axis``: new pixels at i -/+ 1/4 get
  3/4 of pixel i and 1/4 of its neighbour (zero beyond the border)."""
  x = np.moveaxis(x, axis, 0)
  pad = np.concatenate([np.zeros_like(x[:1]), x, np.zeros_like(x[:1])])
  out = np.empty((2 * len(x),) + x.shape[1:], x.dtype)
  out[0::2] = 0.75 * x + 0.25 * pad[:-2]
  out[1::2] = 0.75 * x + 0.25 * pad[2:]
  return np.moveaxis(out, 0, axis)


def _down_1331(x, axis):
  """Closed form of [1,3,3,1] 2x downsampling: y_i = (x_{2i-1} + 3x_{2i} + 3x_{2i+1} +
  x_{2i+2}) / 8, zero beyond the border."""
  x = np.moveaxis(x, axis, 0)
  pad = np.concatenate([np.zeros_like(x[:1]), x, np.zeros_like(x[:1])])
  out = (pad[0:-2:2] + 3 * pad[1:-1:2] + 3 * pad[2::2] + pad[3::2]) / 8
  return np.moveaxis(out, 0, axis)


def test_fir_resampling_matches_closed_forms():
  """Protects the FIR filters' alignment, normalisation and zero borders: [1,3,3,1] up- and
  down-sampling equal their separable closed forms, and [1,1] is nearest / average pooling."""
  x = np.random.default_rng(0).normal(size=(2, 6, 8, 3)).astype(np.float32)
  up = ud.upsample_2d(jnp.asarray(x), (1, 3, 3, 1))
  np.testing.assert_allclose(up, _up_1331(_up_1331(x, 1), 2), rtol=1e-5, atol=1e-6)
  down = ud.downsample_2d(jnp.asarray(x), (1, 3, 3, 1))
  np.testing.assert_allclose(down, _down_1331(_down_1331(x, 1), 2), rtol=1e-5, atol=1e-6)
  nearest = np.kron(x, np.ones((1, 2, 2, 1), np.float32))
  mean = x.reshape(2, 3, 2, 4, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(ud.upsample_2d(jnp.asarray(x), (1, 1)), nearest, rtol=1e-6)
  np.testing.assert_allclose(ud.naive_upsample_2d(jnp.asarray(x)), nearest, rtol=1e-6)
  np.testing.assert_allclose(ud.downsample_2d(jnp.asarray(x), (1, 1)), mean, rtol=1e-5)
  np.testing.assert_allclose(ud.naive_downsample_2d(jnp.asarray(x)), mean, rtol=1e-5)


def test_fused_resampling_convolutions():
  """Protects the fused conv + FIR layers (StyleGAN2's Conv2d up/down): away from the border
  they equal filtering then / after a 'SAME' convolution (scipy), and the upsampling conv is 4x
  the adjoint of the downsampling conv with the transposed kernel, borders included."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 8, 8, 2)).astype(np.float32)
  w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
  k = (1, 3, 3, 1)
  down = np.asarray(ud.conv_downsample_2d(jnp.asarray(x), jnp.asarray(w), k))
  want = np.asarray(ud.downsample_2d(jnp.asarray(_conv_same(x, w), jnp.float32), k))
  assert down.shape == (1, 4, 4, 3)
  np.testing.assert_allclose(down[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-5)

  small = x[:, :4, :4]
  up = np.asarray(ud.upsample_conv_2d(jnp.asarray(small), jnp.asarray(w), k))
  want = _conv_same(np.asarray(ud.upsample_2d(jnp.asarray(small), k)), w)
  assert up.shape == (1, 8, 8, 3)
  np.testing.assert_allclose(up[:, 2:-2, 2:-2], want[:, 2:-2, 2:-2], rtol=1e-4, atol=1e-5)

  y = rng.normal(size=(1, 8, 8, 3)).astype(np.float32)
  w_t = np.transpose(w[::-1, ::-1], (0, 1, 3, 2))
  adjoint = ud.conv_downsample_2d(jnp.asarray(y), jnp.asarray(w_t), k)
  np.testing.assert_allclose(np.sum(up * y), 4 * np.sum(small * np.asarray(adjoint)), rtol=1e-4)


def _dilated_upsample_conv(x, w, k, factor, gain):
  """``upsample_conv_2d`` by its definition: an input-dilated (transposed) convolution, then a
  depthwise FIR pass (``upfirdn_2d``)."""
  kw = w.shape[0]
  p = (len(k) - factor) - (kw - 1)
  y = jax.lax.conv_general_dilated(
      x, w, (1, 1), [(kw - 1, factor - 1 + max(kw - factor, 0))] * 2,
      lhs_dilation=(factor, factor), dimension_numbers=ud._DN)
  return ud.upfirdn_2d(y, ud.setup_kernel(k) * (gain * factor ** 2),
                       pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


@pytest.mark.parametrize('k, factor', [((1, 3, 3, 1), 2), ((1, 1), 2), ((1, 2, 1), 2),
                                       ((1, 4, 6, 4, 1), 2), ((1, 3, 3, 1), 3), ((1, 2, 1), 3)])
def test_polyphase_resampling_equals_the_depthwise_definition(k, factor):
  """Protects the fast polyphase paths (every NCSN++ config's 1-D FIR kernels): each layer
  equals, in value and in gradient, the same layer given the 2-D kernel ``outer(k, k)``, which
  runs the definition (one depthwise convolution of the zero-inserted image, ``upfirdn_2d``);
  the upsampling conv also equals the input-dilated transposed convolution it replaces. Odd
  and even kernels, factors 2 and 3, 1x1 / 3x3 / 5x5 convolutions and a gain."""
  rng = np.random.default_rng(factor)
  x = jnp.asarray(rng.normal(size=(2, 6, 12, 3)), jnp.float32)  # H != W: separate axis plans
  ws = [jnp.asarray(rng.normal(size=(kw, kw, 3, 4)), jnp.float32) for kw in (1, 3, 5)]
  k2 = np.outer(k, k)
  layers_ = [(functools.partial(ud.upsample_2d, factor=factor, gain=2.), None),
             (functools.partial(ud.downsample_2d, factor=factor, gain=2.), None)]
  for i in range(len(ws)):
    layers_ += [(functools.partial(ud.upsample_conv_2d, factor=factor, gain=2.), i),
                (functools.partial(ud.conv_downsample_2d, factor=factor), i)]

  @jax.jit
  def values_and_gradients(x, ws):
    """Per layer: (fast, definition) outputs and gradients of <output, fixed cotangent>."""
    out = []
    for layer, w in layers_:
      for kernel in (k, k2):
        args = (x,) if w is None else (x, ws[w])
        f = lambda *a: layer(*a, k=kernel)
        y = f(*args)
        cotangent = jnp.sin(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        out.append((y, jax.grad(lambda *a: jnp.sum(f(*a) * cotangent),
                                argnums=tuple(range(len(args))))(*args)))
    dilated = [_dilated_upsample_conv(x, w, k, factor, 2.) for w in ws]
    fused = [ud.upsample_conv_2d(x, w, k, factor, gain=2.) for w in ws]
    return out, dilated, fused

  out, dilated, fused = values_and_gradients(x, ws)
  for (fast, fast_grads), (slow, slow_grads) in zip(out[0::2], out[1::2]):
    assert fast.shape == slow.shape and fast.dtype == slow.dtype
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-4)
    for g_fast, g_slow in zip(fast_grads, slow_grads):
      np.testing.assert_allclose(g_fast, g_slow, rtol=1e-5, atol=1e-4)
  for a, b in zip(fused, dilated):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_polyphase_resampling_keeps_bfloat16():
  """Protects mixed precision: the polyphase FIR and upsampling conv compute in the input's
  dtype (Python-float taps do not promote bfloat16 to float32)."""
  x = jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.bfloat16)
  w = jax.ShapeDtypeStruct((3, 3, 2, 2), jnp.bfloat16)
  k = (1, 3, 3, 1)
  for layer, args in ((ud.upsample_2d, (x,)), (ud.downsample_2d, (x,)),
                      (ud.upsample_conv_2d, (x, w)), (ud.conv_downsample_2d, (x, w))):
    assert jax.eval_shape(lambda *a: layer(*a, k=k), *args).dtype == jnp.bfloat16


# ------------------------------------------------------------------------ embeddings

def test_gaussian_fourier_projection():
  """Protects the NCSN++ noise embedding: [sin(2 pi x W), cos(2 pi x W)] with W ~ N(0, s^2)
  held fixed (no gradient reaches W)."""
  module = layerspp.GaussianFourierProjection(embedding_size=4096, scale=16.)
  x = jnp.array([0.3, -1.2])
  params = module.init(jax.random.key(0, impl='rbg'), x)['params']
  w = np.asarray(params['W'], np.float64)
  assert w.shape == (4096,)
  assert abs(w.std() / 16. - 1) < 0.05 and abs(w.mean()) < 16. * 0.05  # 4096 draws: ~1% noise.
  out = module.apply({'params': params}, x)
  proj = 2 * np.pi * np.asarray(x, np.float64)[:, None] * w[None, :]
  np.testing.assert_allclose(out, np.concatenate([np.sin(proj), np.cos(proj)], 1), atol=2e-3)
  grad = jax.grad(lambda p: module.apply({'params': p}, x).sum())(params)
  assert not np.any(np.asarray(grad['W']))


def test_timestep_embedding():
  """Protects the DDPM sinusoidal embedding: frequencies 10000^(-j / (h - 1)), sin then cos,
  zero padding for an odd width."""
  t = np.array([0., 3., 517.5])
  for dim in (8, 9):
    half = dim // 2
    freqs = 10000. ** (-np.arange(half) / (half - 1))
    want = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], 1)
    want = np.pad(want, ((0, 0), (0, dim % 2)))
    got = layers.get_timestep_embedding(jnp.asarray(t), dim)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------ parameter layout

def _biggan(cin, cout, temb, shortcut):
  block = {'GroupNorm_0/scale': (cin,), 'GroupNorm_0/bias': (cin,),
           'Conv_0/kernel': (3, 3, cin, cout), 'Conv_0/bias': (cout,),
           'Dense_0/kernel': (temb, cout), 'Dense_0/bias': (cout,),
           'GroupNorm_1/scale': (cout,), 'GroupNorm_1/bias': (cout,),
           'Conv_1/kernel': (3, 3, cout, cout), 'Conv_1/bias': (cout,)}
  if shortcut:
    block.update({'Conv_2/kernel': (1, 1, cin, cout), 'Conv_2/bias': (cout,)})
  return block


def _attn(c):
  block = {'GroupNorm_0/scale': (c,), 'GroupNorm_0/bias': (c,)}
  for i in range(4):
    block.update({f'NIN_{i}/W': (c, c), f'NIN_{i}/b': (c,)})
  return block


def _released_smoke_layout():
  """The params_ema layout the released NCSN++ code gives the smoke config (VE NCSN++, nf=8,
  ch_mult (1, 2), one block per level, attention at 8x8, 1 channel), read off its module
  creation order."""
  nf, temb = 8, 32
  modules = {
      'GaussianFourierProjection_0': {'W': (nf,)},
      'Dense_0': {'kernel': (2 * nf, temb), 'bias': (temb,)},
      'Dense_1': {'kernel': (temb, temb), 'bias': (temb,)},
      'Conv_0': {'kernel': (3, 3, 1, nf), 'bias': (nf,)},
      'ResnetBlockBigGANpp_0': _biggan(8, 8, temb, False),
      'ResnetBlockBigGANpp_1': _biggan(8, 8, temb, True),  # Down.
      'Downsample_0': {'Conv2d_0/weight': (3, 3, 1, 8), 'Conv2d_0/bias': (8,)},  # Input pyramid.
      'ResnetBlockBigGANpp_2': _biggan(8, 16, temb, True),
      'AttnBlockpp_0': _attn(16),
      'ResnetBlockBigGANpp_3': _biggan(16, 16, temb, False),  # Middle.
      'AttnBlockpp_1': _attn(16),
      'ResnetBlockBigGANpp_4': _biggan(16, 16, temb, False),
      'ResnetBlockBigGANpp_5': _biggan(32, 16, temb, True),  # Up path, skip concatenations.
      'ResnetBlockBigGANpp_6': _biggan(24, 16, temb, True),
      'AttnBlockpp_2': _attn(16),
      'ResnetBlockBigGANpp_7': _biggan(16, 16, temb, True),  # Up.
      'ResnetBlockBigGANpp_8': _biggan(24, 8, temb, True),
      'ResnetBlockBigGANpp_9': _biggan(16, 8, temb, True),
      'GroupNorm_0': {'scale': (8,), 'bias': (8,)},
      'Conv_1': {'kernel': (3, 3, 8, 1), 'bias': (1,)},
  }
  return {f'{m}/{p}': s for m, params in modules.items() for p, s in params.items()}


def test_ncsnpp_parameter_tree_is_the_released_layout(smoke_config):
  """Protects loading released checkpoints: names, nesting and HWIO shapes of every parameter
  match the released NCSN++ layout; abstract and real initialisation agree."""
  abstract = models.abstract_params(smoke_config)
  want = _released_smoke_layout()
  assert _flat_shapes(abstract) == want
  assert models.count_params(abstract) == sum(int(np.prod(s)) for s in want.values())
  real = models.init_params(jax.random.key(0, impl='rbg'), smoke_config)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), real) == jax.tree.map(
      lambda a: (a.shape, a.dtype), abstract)


def test_cifar10_ncsnpp_released_paths_and_size():
  """Protects the paper's CIFAR-10 NCSN++ cont. (VE) network (configs/default.py): paths of its
  released checkpoint (44 BigGAN blocks, 6 attention blocks, 3 input-pyramid convs) and its size,
  62.8M parameters as tabulated for the released model (Karras et al. 2022, Table 7)."""
  config = default.get_config()
  shapes = _flat_shapes(models.abstract_params(config))
  assert shapes['GaussianFourierProjection_0/W'] == (128,)
  assert shapes['Dense_0/kernel'] == (256, 512)
  assert shapes['Conv_0/kernel'] == (3, 3, 3, 128)
  assert shapes['Downsample_0/Conv2d_0/weight'] == (3, 3, 3, 128)
  assert shapes['Downsample_2/Conv2d_0/weight'] == (3, 3, 256, 256)
  assert shapes['AttnBlockpp_5/NIN_3/W'] == (256, 256)
  assert shapes['ResnetBlockBigGANpp_43/Conv_2/kernel'] == (1, 1, 256, 128)
  assert shapes['Conv_1/kernel'] == (3, 3, 128, 3)
  assert 'ResnetBlockBigGANpp_44/Conv_0/kernel' not in shapes
  assert 'AttnBlockpp_6/NIN_0/W' not in shapes
  count = sum(int(np.prod(s)) for s in shapes.values())
  assert abs(count / 62.8e6 - 1) < 0.01, count


# ------------------------------------------------------------------------ forward passes

VARIANTS = {
    # The smoke config: NCSN++ (VE) with FIR, BigGAN blocks, residual input pyramid, Fourier.
    'ncsnpp_ve': {},
    # DDPM++ (VP): no FIR, no pyramids, positional labels, centred data.
    'ddpmpp_vp': dict(fir=False, progressive_input='none', embedding_type='positional',
                      scale_by_sigma=False, centered=True),
    'ddpm_blocks_output_skip_cat': dict(resblock_type='ddpm', progressive='output_skip',
                                        progressive_input='input_skip', progressive_combine='cat',
                                        nonlinearity='elu', skip_rescale=False),
    'ddpm_blocks_residual_pyramids': dict(resblock_type='ddpm', fir=False, progressive='residual',
                                          embedding_type='positional', resamp_with_conv=False,
                                          nonlinearity='lrelu', dropout=0.5),
    'ddpm': dict(name='ddpm', nf=32, image_size=8, attn_resolutions=(4,), scale_by_sigma=True,
                 dropout=0.5),
}


def _variant_config(name):
  from score_sde.configs import smoke
  config = smoke.get_config()
  for key, value in VARIANTS[name].items():
    if key == 'centered':
      config.data.centered = value
    elif key == 'image_size':
      config.data.image_size = value
    else:
      setattr(config.model, key, value)
  return config


def _key(seed):
  # RBG keys: the init graph compiles in a fraction of threefry's time on a CPU.
  return jax.random.key(seed, impl='rbg')


@functools.lru_cache(maxsize=None)
def _run(name):
  """Runs one variant: outputs of perturbed init params, in evaluation, with dropout (three keys)
  and without ``scale_by_sigma``. Perturbing the zero-initialised layers makes every path count.
  Each graph compiles once; dropout keys are arguments so their three runs share one compile."""
  config = _variant_config(name)
  model = models.get_model(config)
  size, channels = config.data.image_size, config.data.num_channels
  x = jax.random.uniform(jax.random.key(1), (2, size, size, channels))
  fourier = getattr(model, 'embedding_type', 'positional') == 'fourier'
  labels = jnp.array([0.05, 20.]) if fourier else jnp.array([3., 7.])
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda p: p + 0.05 * rng.normal(size=p.shape).astype(np.float32),
                        models.init_params(_key(0), model, x.shape))
  apply = jax.jit(model.apply, static_argnames='train')
  out = {'eval': apply({'params': params}, x, labels, train=False)}
  if model.scale_by_sigma:
    unscaled = model.clone(scale_by_sigma=False)
    out['unscaled'] = jax.jit(unscaled.apply)({'params': params}, x, labels)
  if model.dropout > 0:
    for tag, seed in (('drop_a', 7), ('drop_a2', 7), ('drop_b', 8)):
      out[tag] = apply({'params': params}, x, labels, train=True, rngs={'dropout': _key(seed)})
  return model, x, np.asarray(labels), jax.tree.map(np.asarray, out)


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_forward_shape_dtype_and_finiteness(name):
  """Protects every registered model and the architecture switches that change the graph:
  (B, H, W, C) float32 in, the same shape float32 out, finite."""
  model, x, _, out = _run(name)
  assert out['eval'].shape == x.shape and out['eval'].dtype == np.float32
  assert np.all(np.isfinite(out['eval']))


def test_every_registered_model_is_exercised():
  """Protects the forward-pass test's coverage: each registry entry has a variant."""
  covered = {VARIANTS[n].get('name', 'ncsnpp') for n in VARIANTS}
  covered |= {'ncsn', 'ncsnv2_64', 'ncsnv2_128', 'ncsnv2_256'}  # In tests/test_ncsnv2.py.
  assert covered == set(models.MODELS.names())


@pytest.mark.parametrize('name', ['ncsnpp_ve', 'ddpm_blocks_residual_pyramids', 'ddpm'])
def test_scale_by_sigma(name):
  """Protects the VE output parameterisation: the output is divided by sigma, the Fourier input
  itself or, for step labels, sigma_max (sigma_min / sigma_max)^(i / (N - 1)) of the geometric
  ladder."""
  model, _, labels, out = _run(name)
  if getattr(model, 'embedding_type', 'positional') == 'fourier':
    sigma = labels
  else:
    ratio = model.sigma_min / model.sigma_max
    sigma = model.sigma_max * ratio ** (labels.astype(int) / (model.num_scales - 1))
  np.testing.assert_allclose(out['eval'] * sigma[:, None, None, None], out['unscaled'],
                             rtol=1e-4, atol=1e-6 * np.abs(out['unscaled']).max())


@pytest.mark.parametrize('name', ['ddpm_blocks_residual_pyramids', 'ddpm'])
def test_dropout_is_keyed(name):
  """Protects reproducible training: dropout masks are a function of the 'dropout' key (same key,
  same output; another key, another output), and evaluation is deterministic."""
  _, _, _, out = _run(name)
  np.testing.assert_array_equal(out['drop_a'], out['drop_a2'])
  assert np.abs(out['drop_a'] - out['drop_b']).max() > 1e-4
  assert np.abs(out['drop_a'] - out['eval']).max() > 1e-4


def test_model_fn_needs_a_key_for_dropout(smoke_config):
  """Protects against silently missing dropout rngs: training mode without a key fails early."""
  smoke_config.model.dropout = 0.1
  model = models.get_model(smoke_config)
  with pytest.raises(ValueError, match='rng'):
    models.get_model_fn(model, {}, train=True)


def test_bad_names_and_inputs_fail_with_the_fix(smoke_config):
  """Protects config errors: unknown model names list the known ones; Fourier features with
  discrete training, and wrongly shaped labels, are refused with a message."""
  smoke_config.model.name = 'unet9000'
  with pytest.raises(KeyError, match='ddpm, ncsn, ncsnpp'):
    models.get_model(smoke_config)
  smoke_config.model.name = 'ncsnpp'
  smoke_config.training.continuous = False
  with pytest.raises(ValueError, match='continuous'):
    models.get_model(smoke_config)
  model = models.NCSNpp(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
  with pytest.raises(ValueError, match='time_cond'):
    model.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), jnp.ones((3,)))


# ------------------------------------------------------------------------ score adapter

class _LabelEcho(nn.Module):
  """A parameter-free stand-in network whose output is ``label + 1`` at every pixel."""

  @nn.compact
  def __call__(self, x, labels, train=False):
    return jnp.zeros_like(x) + (labels.astype(jnp.float32) + 1.)[:, None, None, None]


@pytest.mark.parametrize('kind, continuous', [
    ('vp', True), ('vp', False), ('subvp', True), ('ve', True), ('ve', False)])
def test_score_fn_label_and_scaling_conventions(kind, continuous):
  """Protects compatibility with released checkpoints: the time label each model was trained
  on and the output-to-score map, computed by hand from the SDE formulas."""
  n, t = 1000, np.array([0.001, 0.3, 0.97])
  x = jnp.ones((3, 4, 4, 1))
  sde = {'vp': sde_lib.VPSDE(0.1, 20., n), 'subvp': sde_lib.subVPSDE(0.1, 20., n),
         've': sde_lib.VESDE(0.01, 50., n)}[kind]
  score = models.get_score_fn(sde, _LabelEcho(), {}, continuous=continuous)(x, jnp.asarray(t))
  log_mean = -0.25 * t ** 2 * (20. - 0.1) - 0.5 * t * 0.1
  if kind == 'vp' and continuous:
    want = -(999 * t + 1) / np.sqrt(1 - np.exp(2 * log_mean))
  elif kind == 'vp':
    step = (t * (n - 1)).astype(int)
    alphabar = np.cumprod(1 - np.linspace(0.1 / n, 20. / n, n))[step]
    want = -(t * (n - 1) + 1) / np.sqrt(1 - alphabar)
  elif kind == 'subvp':
    want = -(999 * t + 1) / (1 - np.exp(2 * log_mean))
  elif continuous:
    want = 0.01 * (50. / 0.01) ** t + 1
  else:
    want = np.round((1 - t) * (n - 1)) + 1
  np.testing.assert_allclose(score[:, 0, 0, 0], want, rtol=2e-4)
  assert score.shape == x.shape
