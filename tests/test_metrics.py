"""Tests of score_sde.metrics: FID / KID / IS math, the Inception port, weight conversion, stats."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, stats as scipy_stats

from score_sde import data
from score_sde.common import parallel
from score_sde.metrics import dataset_stats, fid, inception, inception_weights


def _random_spd(rng, d, rank=None):
  a = rng.standard_normal((d, rank or d))
  return a @ a.T / d + (0. if rank else 0.1 * np.eye(d))


# ------------------------------------------------------------------------------------------ FID


def test_frechet_distance_matches_direct_sqrtm_formula():
  """The eigenvalue route to Tr((S1 S2)^1/2) agrees with scipy.linalg.sqrtm of the product."""
  rng = np.random.default_rng(0)
  for d in (1, 3, 8):
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    direct = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
              - 2. * np.trace(linalg.sqrtm(s1 @ s2)).real)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-9, abs=1e-10)


def test_frechet_distance_of_identical_singular_statistics_is_zero():
  """FID(x, x) = 0 even for the rank-deficient covariances of fewer examples than dimensions."""
  rng = np.random.default_rng(1)
  mu, sigma = fid.feature_statistics(rng.standard_normal((5, 16)) * 3. + 7.)
  assert np.linalg.matrix_rank(sigma) == 4
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)


def test_frechet_distance_commuting_covariances_closed_form():
  """For S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: d^2 = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2."""
  rng = np.random.default_rng(2)
  d = 6
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  a, b = rng.uniform(0.1, 4., d), rng.uniform(0., 4., d)
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = fid.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
  assert got == pytest.approx(want, rel=1e-10)
  assert fid.frechet_distance(0., 4., 1., 1.) == pytest.approx(1. + 1.)  # 1-D: (2 - 1)^2 + 1^2


def test_frechet_distance_rejects_mismatched_statistics():
  """Statistics from different layers (dimensions) or with NaNs fail with a ValueError."""
  with pytest.raises(ValueError, match='dimensions differ'):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match='NaN'):
    fid.frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))


def test_streaming_moments_equal_numpy_cov():
  """Batch-merged moments equal np.mean / np.cov of all rows, even with a large common offset."""
  rng = np.random.default_rng(3)
  feats = rng.standard_normal((37, 5)) * 0.01 + 1e4
  moments = fid.init_moments(5)
  for lo, hi in ((0, 1), (1, 1), (1, 20), (20, 37)):
    moments = fid.update_moments(moments, feats[lo:hi])
  mu, sigma = fid.moments_statistics(moments)
  np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-14)
  np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-6, atol=1e-12)


# ------------------------------------------------------------------------------------------ KID


def _mmd2_unbiased_loops(x, y):
  """Unbiased MMD^2 with the cubic polynomial kernel, written as plain double loops."""
  d = len(x[0])

  def k(a, b):
    return (sum(ai * bi for ai, bi in zip(a, b)) / d + 1.) ** 3

  m, n = len(x), len(y)
  kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
  return kxx + kyy - 2. * kxy


def test_kid_matches_double_loop_reference():
  """One subset holding every row (a permutation) gives the O(n^2) loop's unbiased MMD^2."""
  rng = np.random.default_rng(4)
  x, y = rng.standard_normal((9, 4)), rng.standard_normal((9, 4)) + 0.5
  want = _mmd2_unbiased_loops(x.tolist(), y.tolist())
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=3, subset_size=50)
  assert mean == pytest.approx(want, rel=1e-10)
  assert std == pytest.approx(0., abs=1e-10)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
  """Averaged over independent draws, MMD^2_u of one law is ~0 (the biased estimate is not)."""
  rng = np.random.default_rng(5)
  m, d, trials = 20, 4, 400
  unbiased, biased, shifted = [], [], []
  for _ in range(trials):
    x, y = rng.standard_normal((m, d)), rng.standard_normal((m, d))
    unbiased.append(fid.mmd2_unbiased(x, y))
    kxx, kyy = fid.polynomial_kernel(x, x), fid.polynomial_kernel(y, y)
    biased.append(kxx.mean() + kyy.mean() - 2. * fid.polynomial_kernel(x, y).mean())
    shifted.append(fid.mmd2_unbiased(x, y + 1.))
  se = np.std(unbiased) / math.sqrt(trials)
  assert abs(np.mean(unbiased)) < 4. * se
  assert np.mean(biased) > 10. * se
  assert np.mean(shifted) > 10. * se


# ------------------------------------------------------------------------------------------ IS


def test_inception_score_extremes():
  """Confident predictions spread evenly over K classes score K; identical predictions score 1."""
  k, splits = 7, 3
  labels = np.tile(np.arange(k), 4 * splits)
  one_hot = np.eye(k)[labels]
  assert fid.inception_score(one_hot, splits, from_logits=False)[0] == pytest.approx(k)
  mean, std = fid.inception_score(60. * one_hot, splits)  # Logits: softmax is ~one-hot.
  assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0., abs=1e-6)
  same = np.tile(np.random.default_rng(6).standard_normal(k), (12, 1))
  assert fid.inception_score(same, splits) == pytest.approx((1., 0.))


def test_inception_score_equals_entropy_identity():
  """exp(E KL(p(y|x) || p(y))) = exp(H(p(y)) - E H(p(y|x))), the entropy form, on one split."""
  rng = np.random.default_rng(7)
  logits = rng.standard_normal((50, 10)) * 2.
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  want = np.exp(scipy_stats.entropy(p.mean(0)) - scipy_stats.entropy(p, axis=1).mean())
  assert fid.inception_score(logits, splits=1)[0] == pytest.approx(want, rel=1e-10)


# ------------------------------------------------------------------------------------ stats files


def test_stats_file_round_trip_and_features_only_files(tmp_path):
  """save/load keeps mu, sigma, pool_3; a pool_3-only file (original score_sde) gets mu, sigma."""
  rng = np.random.default_rng(8)
  feats = rng.standard_normal((10, 3)).astype(np.float32)
  mu, sigma = fid.feature_statistics(feats)
  fid.save_stats(str(tmp_path / 'a.npz'), mu, sigma, feats, num_images=10)
  loaded = fid.load_stats(str(tmp_path / 'a.npz'))
  np.testing.assert_array_equal(loaded['mu'], mu)
  np.testing.assert_array_equal(loaded['pool_3'], feats)
  assert int(loaded['num_images']) == 10
  np.savez(tmp_path / 'b.npz', pool_3=feats)
  np.testing.assert_allclose(fid.load_stats(str(tmp_path / 'b.npz'))['sigma'],
                             np.cov(feats.astype(np.float64), rowvar=False))
  with pytest.raises(FileNotFoundError, match='dataset_stats'):
    fid.load_stats(str(tmp_path / 'missing.npz'))


def test_compute_statistics_leaves_out_padded_rows():
  """Masked (padding) rows do not enter mu / sigma; the first rows are kept for KID."""
  rng = np.random.default_rng(9)
  images = rng.uniform(size=(7, 2, 2, 1)).astype(np.float32)

  class FakeSource:
    def __len__(self):
      return len(images)

    def get(self, idx):
      return {'image': np.round(images[idx] * 255.).astype(np.uint8)}

  def fake_inception(x):  # A stand-in network: features are the flattened pixels.
    return {'pool_3': x.reshape(len(x), -1)}

  batches = list(dataset_stats.source_batches(FakeSource(), batch_size=3))
  assert [b['mask'].tolist() for b in batches][-1] == [True, False, False]
  out = dataset_stats.compute_statistics(fake_inception, batches, num_features=5)
  feats = np.round(images * 255.).reshape(7, -1) / 255.
  np.testing.assert_allclose(out['mu'], feats.mean(0), rtol=1e-6)
  np.testing.assert_allclose(out['sigma'], np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(out['pool_3'], feats[:5], rtol=1e-6)
  assert int(out['num_images']) == 7


# ------------------------------------------------------------------------------------------ network


@pytest.fixture(scope='module')
def inception_fn():
  """One compilation of the 299x299 network (random weights) shared by the tests below."""
  mesh = parallel.make_mesh(jax.devices()[:2])
  return inception.get_inception_fn(inception.init_random_params(0), mesh)


@pytest.mark.parametrize('size', [32, 64])
def test_network_output_shapes(inception_fn, size):
  """pool_3 is (B, 2048) and logits (B, 1008) whatever the input resolution."""
  x = np.random.default_rng(size).uniform(size=(2, size, size, 3)).astype(np.float32)
  out = inception_fn(x)
  assert out['pool_3'].shape == (2, 2048) and out['logits'].shape == (2, 1008)
  assert all(np.all(np.isfinite(np.asarray(v))) for v in out.values())


def test_network_is_deterministic_and_per_example(inception_fn):
  """Same input, same output; permuting the batch permutes the rows (no cross-example mixing)."""
  x = np.random.default_rng(10).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  a, b, swapped = inception_fn(x), inception_fn(x), inception_fn(x[::-1])
  for key in ('pool_3', 'logits'):
    np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    np.testing.assert_allclose(np.asarray(swapped[key])[::-1], np.asarray(a[key]),
                               rtol=1e-5, atol=1e-6)


def test_grayscale_is_replicated_to_rgb(inception_fn):
  """A 1-channel image gives the features of the same image repeated on 3 channels."""
  grey = np.random.default_rng(11).uniform(size=(2, 32, 32, 1)).astype(np.float32)
  a, b = inception_fn(grey), inception_fn(np.repeat(grey, 3, axis=-1))
  np.testing.assert_allclose(np.asarray(a['pool_3']), np.asarray(b['pool_3']), rtol=1e-6)
  with pytest.raises(ValueError, match='C in'):
    inception.preprocess(np.zeros((1, 8, 8, 2)))


def _torch_bilinear(img, out_h, out_w):
  """torch.nn.functional.interpolate(mode='bilinear', align_corners=False) in numpy loops."""
  in_h, in_w = img.shape[:2]

  def taps(out_i, in_n, out_n):
    src = max((out_i + 0.5) * in_n / out_n - 0.5, 0.)
    i0 = min(int(math.floor(src)), in_n - 1)
    return i0, min(i0 + 1, in_n - 1), src - i0

  out = np.zeros((out_h, out_w) + img.shape[2:])
  for i, j in itertools.product(range(out_h), range(out_w)):
    y0, y1, ly = taps(i, in_h, out_h)
    x0, x1, lx = taps(j, in_w, out_w)
    out[i, j] = ((1 - ly) * ((1 - lx) * img[y0, x0] + lx * img[y0, x1])
                 + ly * ((1 - lx) * img[y1, x0] + lx * img[y1, x1]))
  return out


@pytest.mark.parametrize('in_hw, size', [((5, 7), 13), ((13, 11), 5)])
def test_preprocess_matches_torch_bilinear_resize(in_hw, size):
  """Resizing (up and down) follows pytorch-fid's resize, then maps [0, 1] to [-1, 1]."""
  img = np.random.default_rng(12).uniform(size=(1, *in_hw, 3))
  want = 2. * _torch_bilinear(img[0], size, size) - 1.
  got = np.asarray(inception.preprocess(img, size))[0]
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_pools_follow_tensorflow_padding():
  """SAME avg pools divide by the real inputs in the window; SAME max pools ignore the padding."""
  x = -np.arange(1., 17.).reshape(1, 4, 4, 1)
  avg = np.asarray(inception._avg_pool_same(jnp.asarray(x)))[0, :, :, 0]
  assert avg[0, 0] == pytest.approx(np.mean(x[0, :2, :2, 0]))
  assert avg[1, 2] == pytest.approx(np.mean(x[0, :3, 1:4, 0]))
  mx = np.asarray(inception._max_pool_same(jnp.asarray(x)))[0, :, :, 0]
  assert mx[0, 0] == -1. and mx[3, 3] == -11.  # A zero pad would give 0 at the border.


# ------------------------------------------------------------------------------------------ weights


def _pytorch_fid_layers():
  """(torch module path, in, out, kh, kw) of every BasicConv2d, from torchvision's Inception3."""
  layers = [('Conv2d_1a_3x3', 3, 32, 3, 3), ('Conv2d_2a_3x3', 32, 32, 3, 3),
            ('Conv2d_2b_3x3', 32, 64, 3, 3), ('Conv2d_3b_1x1', 64, 80, 1, 1),
            ('Conv2d_4a_3x3', 80, 192, 3, 3)]
  for name, cin, pool in (('Mixed_5b', 192, 32), ('Mixed_5c', 256, 64), ('Mixed_5d', 288, 64)):
    layers += [(f'{name}.{n}', i, o, h, w) for n, i, o, h, w in (
        ('branch1x1', cin, 64, 1, 1), ('branch5x5_1', cin, 48, 1, 1),
        ('branch5x5_2', 48, 64, 5, 5), ('branch3x3dbl_1', cin, 64, 1, 1),
        ('branch3x3dbl_2', 64, 96, 3, 3), ('branch3x3dbl_3', 96, 96, 3, 3),
        ('branch_pool', cin, pool, 1, 1))]
  layers += [('Mixed_6a.branch3x3', 288, 384, 3, 3), ('Mixed_6a.branch3x3dbl_1', 288, 64, 1, 1),
             ('Mixed_6a.branch3x3dbl_2', 64, 96, 3, 3), ('Mixed_6a.branch3x3dbl_3', 96, 96, 3, 3)]
  for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
    layers += [(f'{name}.{n}', i, o, h, w) for n, i, o, h, w in (
        ('branch1x1', 768, 192, 1, 1), ('branch7x7_1', 768, c7, 1, 1),
        ('branch7x7_2', c7, c7, 1, 7), ('branch7x7_3', c7, 192, 7, 1),
        ('branch7x7dbl_1', 768, c7, 1, 1), ('branch7x7dbl_2', c7, c7, 7, 1),
        ('branch7x7dbl_3', c7, c7, 1, 7), ('branch7x7dbl_4', c7, c7, 7, 1),
        ('branch7x7dbl_5', c7, 192, 1, 7), ('branch_pool', 768, 192, 1, 1))]
  layers += [('Mixed_7a.branch3x3_1', 768, 192, 1, 1), ('Mixed_7a.branch3x3_2', 192, 320, 3, 3),
             ('Mixed_7a.branch7x7x3_1', 768, 192, 1, 1),
             ('Mixed_7a.branch7x7x3_2', 192, 192, 1, 7),
             ('Mixed_7a.branch7x7x3_3', 192, 192, 7, 1),
             ('Mixed_7a.branch7x7x3_4', 192, 192, 3, 3)]
  for name, cin in (('Mixed_7b', 1280), ('Mixed_7c', 2048)):
    layers += [(f'{name}.{n}', i, o, h, w) for n, i, o, h, w in (
        ('branch1x1', cin, 320, 1, 1), ('branch3x3_1', cin, 384, 1, 1),
        ('branch3x3_2a', 384, 384, 1, 3), ('branch3x3_2b', 384, 384, 3, 1),
        ('branch3x3dbl_1', cin, 448, 1, 1), ('branch3x3dbl_2', 448, 384, 3, 3),
        ('branch3x3dbl_3a', 384, 384, 1, 3), ('branch3x3dbl_3b', 384, 384, 3, 1),
        ('branch_pool', cin, 192, 1, 1))]
  return layers


def _fake_pytorch_fid_state_dict(rng, random_layers=()):
  """pytorch-fid key names and shapes; zeros except for ``random_layers`` (cheap to build)."""
  sd = {}
  for path, cin, cout, kh, kw in _pytorch_fid_layers():
    fill = rng.standard_normal if path in random_layers else np.zeros
    sd[f'{path}.conv.weight'] = fill((cout, cin, kh, kw)).astype(np.float32)
    sd[f'{path}.bn.weight'] = (1. + fill((cout,))).astype(np.float32)
    sd[f'{path}.bn.bias'] = fill((cout,)).astype(np.float32)
    sd[f'{path}.bn.running_mean'] = fill((cout,)).astype(np.float32)
    sd[f'{path}.bn.running_var'] = (1. + np.abs(fill((cout,)))).astype(np.float32)
    sd[f'{path}.bn.num_batches_tracked'] = np.zeros((), np.int64)
  sd['fc.weight'] = rng.standard_normal((1008, 2048)).astype(np.float32)
  sd['fc.bias'] = rng.standard_normal(1008).astype(np.float32)
  return sd


@pytest.fixture(scope='module')
def converted():
  rng = np.random.default_rng(13)
  sd = _fake_pytorch_fid_state_dict(rng, random_layers=('Mixed_6b.branch7x7_2',))
  return sd, inception_weights.convert_pytorch_fid_state_dict(sd)


def test_converter_gives_exactly_the_network_tree(converted):
  """Every pytorch-fid tensor lands on a parameter of our network with its shape, none left."""
  _, params = converted
  want = jax.tree.map(lambda s: s.shape, inception.param_shapes())
  assert jax.tree.map(np.shape, params) == want


def test_converted_layer_computes_torch_conv_bn_relu(converted):
  """A converted 1x7 layer equals relu(BN(conv)) in numpy with torch's layout; fc likewise."""
  sd, params = converted
  p = 'Mixed_6b.branch7x7_2'
  x = np.random.default_rng(14).standard_normal((1, 3, 9, 128))
  w = sd[f'{p}.conv.weight'].astype(np.float64)  # (out, in, kh=1, kw=7)
  xp = np.pad(x, ((0, 0), (0, 0), (3, 3), (0, 0)))
  conv = sum(np.einsum('bhwc,oc->bhwo', xp[:, :, dj:dj + 9], w[:, :, 0, dj]) for dj in range(7))
  bn = ((conv - sd[f'{p}.bn.running_mean']) / np.sqrt(sd[f'{p}.bn.running_var'] + 1e-3)
        * sd[f'{p}.bn.weight'] + sd[f'{p}.bn.bias'])
  layer = inception.ConvBN(128, (1, 7), padding=((0, 0), (3, 3)))
  got = layer.apply({'params': params['Mixed_6b']['branch7x7_2']}, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), np.maximum(bn, 0.), rtol=1e-4, atol=1e-4)
  feats = np.random.default_rng(15).standard_normal((2, 2048))
  logits = feats @ params['fc']['kernel'] + params['fc']['bias']
  np.testing.assert_allclose(logits, feats @ sd['fc.weight'].T + sd['fc.bias'], rtol=1e-5,
                             atol=1e-4)


def test_converter_rejects_other_state_dicts():
  """torchvision's Inception (AuxLogits, 1000 classes) or a truncated dict is refused."""
  sd = _fake_pytorch_fid_state_dict(np.random.default_rng(16))
  with pytest.raises(ValueError, match='AuxLogits'):
    inception_weights.convert_pytorch_fid_state_dict(
        {**sd, 'AuxLogits.fc.weight': np.zeros((1000, 768))})
  del sd['Mixed_7c.branch_pool.bn.running_var']
  with pytest.raises(ValueError, match='Mixed_7c.branch_pool'):
    inception_weights.convert_pytorch_fid_state_dict(sd)


def test_npz_round_trip_and_missing_weights_message(tmp_path, converted):
  """Our .npz loads back identically; no file means an error naming URL, command and field."""
  _, params = converted
  inception_weights.save_params(str(tmp_path / 'w.npz'), params)
  loaded = inception_weights.load_inception_params(str(tmp_path / 'w.npz'))
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  with pytest.raises(FileNotFoundError) as err:
    inception_weights.load_inception_params('', cache_dir=str(tmp_path / 'empty'))
  for needed in (inception_weights.PYTORCH_FID_URL, '--from-pytorch-fid', 'eval.inception_path'):
    assert needed in str(err.value)
  np.savez(tmp_path / 'stats.npz', mu=np.zeros(3), sigma=np.eye(3))
  with pytest.raises(ValueError, match='Not FID Inception parameters'):
    inception_weights.load_inception_params(str(tmp_path / 'stats.npz'))


def test_failed_download_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
  """--download with torch at hand but no network: one line naming the URL and the offline
  command, exit status 2, no traceback, nothing left in the cache folder."""
  import urllib.error
  import urllib.request

  def offline(*args, **kwargs):
    raise urllib.error.URLError(OSError(-2, 'Name or service not known'))

  monkeypatch.setattr(inception_weights, '_import_torch', lambda what: None)
  monkeypatch.setattr(urllib.request, 'urlopen', offline)
  with pytest.raises(SystemExit) as exit_:
    inception_weights.run(['--download', '--cache-dir', str(tmp_path)])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('Error: Could not download ')
  for needed in (inception_weights.PYTORCH_FID_URL, 'Name or service not known',
                 '--from-pytorch-fid PATH.pth'):
    assert needed in err
  assert not list(tmp_path.iterdir())


def test_download_command_offline_says_one_thing(tmp_path):
  """The command as a user runs it, with no way out (a dead proxy): whether torch is installed
  (the download fails) or not (torch is asked for first), one line on stderr and status 2."""
  import os
  import subprocess
  import sys
  proxy = 'http://127.0.0.1:9'  # Nothing listens on the discard port: refused at once.
  result = subprocess.run(
      [sys.executable, '-m', 'score_sde.metrics.inception_weights', '--download',
       '--cache-dir', str(tmp_path)], capture_output=True, text=True, timeout=300,
      env={**os.environ, 'https_proxy': proxy, 'HTTPS_PROXY': proxy, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('Error: '), lines
  assert 'needs torch' in lines[0] or 'Could not download' in lines[0]


def test_dataset_statistics_on_embedded_mnist(inception_fn, smoke_config, tmp_path):
  """The command's path: a real data source through the network into a loadable stats file."""
  out = dataset_stats.dataset_statistics(smoke_config, 'test', num_images=3, batch_size=2,
                                         num_features=2, inception_fn=inception_fn)
  assert int(out['num_images']) == 3 and out['sigma'].shape == (2048, 2048)
  first = data.get_dataset(smoke_config.data, 'test').get([0, 1])['image'] / 255.
  np.testing.assert_allclose(out['pool_3'], np.asarray(inception_fn(first)['pool_3']),
                             rtol=1e-5, atol=1e-6)
  fid.save_stats(str(tmp_path / 's.npz'), out['mu'], out['sigma'], out['pool_3'])
  np.testing.assert_array_equal(fid.load_stats(str(tmp_path / 's.npz'))['sigma'], out['sigma'])
