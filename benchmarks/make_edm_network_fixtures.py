"""Writes tests/fixtures/edm_{ddpmpp,ncsnpp_cond}.pkl and edm_networks.npz: small networks of
EDM's own code (NVlabs/edm ``training/networks.py``: ``EDMPrecond`` around ``SongUNet``), saved as
EDM's training loop saves ``network-snapshot-*.pkl``, with their outputs, so that
``tests/test_edm_networks.py`` and ``tests/test_edm_checkpoints.py`` can hold ``ncsnpp`` and
``conversion.edm_checkpoints`` to them without torch.

Run once, with torch and a checkout of NVlabs/edm (commit 008a4e5 made the committed files):

    python benchmarks/make_edm_network_fixtures.py --edm_dir /path/to/edm

Networks (``NETWORKS``): EDM's DDPM++ layout (positional embedding, standard encoder, [1, 1]
resampling; unconditional) and its NCSN++ layout (Fourier embedding, residual encoder,
[1, 3, 3, 1] resampling; 3 classes, with augmentation labels and EDM's augmentation pipe in
the snapshot), shrunk to a few thousand parameters. EDM starts some layers at (nearly) zero;
every parameter and the Fourier frequencies are redrawn from a seeded generator so that each
one moves the output. Each network is evaluated in eval mode, as the snapshot's EMA network,
on ``x, sigma`` and one-hot labels (the all-zero label, EDM's dropped label, included): the
inner ``SongUNet`` on EDM's ``c_in x`` and ``c_noise`` (``F``) and ``EDMPrecond`` itself
(``D``). Arrays are stored NHWC.

Also printed and stored: the parameter counts of EDM's full-size CIFAR-10 SongUNets (DDPM++ and
NCSN++ as EDM's ``train.py`` builds them, unconditional and 10-class, without and with the 9
augmentation labels), and the size of the Fourier frequencies, a buffer in EDM.
"""
import argparse
import copy
import json
import os
import pickle
import subprocess
import sys

import numpy as np

# EDM's train.py --arch settings (its CIFAR-10 networks).
ARCHS = {
    'ddpmpp': dict(embedding_type='positional', encoder_type='standard', decoder_type='standard',
                   channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
                   channel_mult=[2, 2, 2]),
    'ncsnpp': dict(embedding_type='fourier', encoder_type='residual', decoder_type='standard',
                   channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128,
                   channel_mult=[2, 2, 2]),
}
SMALL = dict(model_channels=4, num_blocks=1, dropout=0.13)
NETWORKS = {
    'edm_ddpmpp': dict(
        ARCHS['ddpmpp'], **SMALL, channel_mult=[2, 2], attn_resolutions=[4], img_resolution=8,
        label_dim=0),
    'edm_ncsnpp_cond': dict(
        ARCHS['ncsnpp'], **SMALL, channel_mult=[1, 2, 2], attn_resolutions=[8],
        img_resolution=16, label_dim=3, augment_dim=9, label_dropout=0.1),
}
SIGMAS = {'edm_ddpmpp': [0.002, 0.3, 2.5, 80.], 'edm_ncsnpp_cond': [0.05, 1., 20.]}
IMG_CHANNELS = 3
SEED = 11


def _nhwc(x):
  return np.ascontiguousarray(x.detach().numpy().astype(np.float32).transpose(0, 2, 3, 1))


def _randomize(net, generator, torch):
  """Every parameter and buffer of ``net`` redrawn: weights ``N(0, 1 / fan_in)``, biases
  ``N(0, 0.2^2)``, norm scales ``1 + N(0, 0.2^2)``; the Fourier frequencies ``N(0, 16^2)`` as
  EDM draws them. Resampling filters (buffers of fixed taps) are kept."""
  with torch.no_grad():
    for name, p in net.named_parameters():
      draw = torch.randn(p.shape, generator=generator)
      if p.ndim >= 2:
        p.copy_(draw / np.sqrt(np.prod(p.shape[1:])))
      elif name.endswith('norm0.weight') or name.endswith('norm1.weight') or name.endswith(
          'norm2.weight') or name.endswith('aux_norm.weight'):
        p.copy_(1 + 0.2 * draw)
      else:
        p.copy_(0.2 * draw)
    for name, b in net.named_buffers():
      if name.endswith('freqs'):
        b.copy_(16 * torch.randn(b.shape, generator=generator))


def _snapshot(net, loss_fn, augment_pipe, dataset_kwargs):
  """The dict EDM's training loop pickles as network-snapshot-*.pkl (training_loop.py)."""
  data = dict(ema=net, loss_fn=loss_fn, augment_pipe=augment_pipe,
              dataset_kwargs=dict(dataset_kwargs))
  for key, value in data.items():
    if hasattr(value, 'parameters'):
      data[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
  return data


def _param_counts(networks, torch):
  """EDM's parameter counts of its CIFAR-10 SongUNets, and the Fourier buffer's size."""
  counts = {}
  for arch, kwargs in ARCHS.items():
    for label_dim, cond in ((0, 'uncond'), (10, 'cond')):
      for augment_dim in (0, 9):
        unet = networks.SongUNet(img_resolution=32, in_channels=3, out_channels=3,
                                 label_dim=label_dim, augment_dim=augment_dim, **kwargs)
        name = f'{arch}_{cond}' + ('_augment' if augment_dim else '')
        counts[name] = sum(p.numel() for p in unet.parameters())
        counts[f'{arch}_buffer_freqs'] = sum(b.numel() for n, b in unet.named_buffers()
                                             if n.endswith('freqs'))
        print(f'EDM SongUNet {name}: {counts[name]:,} parameters')
        del unet
  return counts


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--edm_dir', required=True, help='a checkout of NVlabs/edm')
  parser.add_argument('--out_dir', default='tests/fixtures')
  args = parser.parse_args()
  sys.path.insert(0, args.edm_dir)
  import torch  # pylint: disable=g-import-not-at-top
  from training import augment, loss, networks  # pylint: disable=g-import-not-at-top

  commit = subprocess.run(['git', '-C', args.edm_dir, 'rev-parse', 'HEAD'], capture_output=True,
                          text=True, check=False).stdout.strip()
  out = {'provenance': json.dumps({'edm_commit': commit, 'torch': torch.__version__,
                                   'networks': NETWORKS, 'cifar10_archs': ARCHS,
                                   'seed': SEED})}
  generator = torch.Generator().manual_seed(SEED)
  torch.manual_seed(SEED)
  for name, kwargs in NETWORKS.items():
    net = networks.EDMPrecond(img_channels=IMG_CHANNELS, model_type='SongUNet', **kwargs)
    _randomize(net, generator, torch)
    net.eval()
    res, label_dim = kwargs['img_resolution'], kwargs['label_dim']
    sigma = torch.tensor(SIGMAS[name], dtype=torch.float32)
    batch = len(sigma)
    x = torch.randn([batch, IMG_CHANNELS, res, res], generator=generator) * (
        0.25 + sigma.reshape(-1, 1, 1, 1) ** 2).sqrt()
    # Classes label_dim, label_dim - 1, ...: the first is the null label.
    labels = (label_dim - np.arange(batch)) % (label_dim + 1) if label_dim else np.zeros(
        batch, np.int64)
    onehot = None
    if label_dim:  # Label label_dim is the all-zero vector: EDM's dropped (null) label.
      onehot = torch.zeros([batch, label_dim])
      for i, k in enumerate(labels):
        if k < label_dim:
          onehot[i, k] = 1.
    s = sigma.reshape(-1, 1, 1, 1)
    c_in = 1 / (net.sigma_data ** 2 + s ** 2).sqrt()
    c_noise = sigma.log() / 4
    with torch.no_grad():
      inner = net.model(c_in * x, c_noise, class_labels=onehot)
      denoised = net(x, sigma, class_labels=onehot)
    augment_pipe = None
    if kwargs.get('augment_dim'):  # EDM train.py's pipe for --augment=0.12.
      augment_pipe = augment.AugmentPipe(p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1,
                                         aniso=1, translate_frac=1)
    dataset_kwargs = dict(class_name='training.dataset.ImageFolderDataset',
                          path=f'datasets/tiny-{res}x{res}.zip', use_labels=bool(label_dim),
                          xflip=False, cache=True, resolution=res, max_size=1000)
    data = _snapshot(net, loss.EDMLoss(P_mean=-1.2, P_std=1.2, sigma_data=0.5), augment_pipe,
                     dataset_kwargs)
    path = os.path.join(args.out_dir, f'{name}.pkl')
    with open(path, 'wb') as f:
      pickle.dump(data, f)
    with open(path, 'rb') as f:  # The snapshot gives the same outputs when EDM loads it.
      reloaded = pickle.load(f)['ema']
    with torch.no_grad():
      assert torch.equal(reloaded(x, sigma, class_labels=onehot), denoised)
    count = sum(p.numel() for p in net.parameters())
    print(f'{path}: {os.path.getsize(path):,} bytes, {count:,} parameters, '
          f'|F| {inner.abs().max():.3g}, |D| {denoised.abs().max():.3g}')
    out.update({f'{name}/x': _nhwc(x), f'{name}/sigma': sigma.numpy(),
                f'{name}/class_labels': labels.astype(np.int32),
                f'{name}/net_input': _nhwc(c_in * x), f'{name}/c_noise': c_noise.numpy(),
                f'{name}/inner': _nhwc(inner), f'{name}/denoised': _nhwc(denoised),
                f'{name}/num_params': count})
  out.update({f'cifar10/{k}': v for k, v in _param_counts(networks, torch).items()})
  path = os.path.join(args.out_dir, 'edm_networks.npz')
  np.savez_compressed(path, **out)
  print(f'wrote {path}: {os.path.getsize(path):,} bytes')


if __name__ == '__main__':
  main()
