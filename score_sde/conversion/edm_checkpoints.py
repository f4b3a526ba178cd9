"""Reads EDM's network pickles (Karras et al. 2022, NVlabs/edm) as runs of this project, running
nothing from the file.

EDM's training loop pickles ``network-snapshot-<kimg>.pkl``, and EDM's CIFAR-10 releases
(``edm-cifar10-32x32-{cond,uncond}-{vp,ve}.pkl``) are the same, as

  {'ema': EDMPrecond | VPPrecond | VEPrecond, 'loss_fn': EDMLoss | VPLoss | VELoss,
   'augment_pipe': AugmentPipe or None, 'dataset_kwargs': {...}}

read as data by ``conversion.edm_pickles`` (no code from the file runs; any global but
containers, tensors and EDM's persistent objects is refused, naming it).

The wrapper is the preconditioning (``model.parameterization``): ``EDMPrecond`` -> ``'edm'``
(``model.sigma_data``; a VE SDE over EDM's sampling range 0.002 to 80), ``VPPrecond`` ->
``'edm_vp'`` (the VP SDE of ``beta_min``, ``beta_min + beta_d``), ``VEPrecond`` -> ``'edm_ve'``
(the VE SDE of its ``sigma_min``, ``sigma_max``). Its ``model`` is a ``SongUNet`` (EDM's DDPM++
and NCSN++), whose ``_init_kwargs`` set ``ncsnpp``'s options (``snapshot_config``) and whose
tensors map onto ``ncsnpp``'s modules in creation order (``convert_params``):

  ``map_noise.freqs`` (Fourier)      -> ``GaussianFourierProjection_0/W``
  ``map_label`` (Linear on one-hot)  -> ``ClassEmbed/embedding``: row k ``sqrt(K) W[:, k] + b``,
                                        null row ``b`` (``class_embedding='noise'``)
  ``map_layer0``, ``map_layer1``     -> ``Dense_0``, ``Dense_1``
  ``enc.*_conv``, ``dec.*_aux_conv`` -> ``Conv_*``; ``dec.*_aux_norm`` -> ``GroupNorm_0``
  ``UNetBlock`` norm0, conv0, affine, norm1, conv1, skip
                                     -> ``ResnetBlockBigGANpp_*`` GroupNorm_0, Conv_0, Dense_0,
                                        GroupNorm_1, Conv_1, Conv_2
  ``UNetBlock`` norm2, qkv, proj     -> ``AttnBlockpp_*`` GroupNorm_0, NIN_0..2 (q, k, v: output
                                        channels ``3 c + j`` of ``qkv``), NIN_3
  ``enc.*_aux_residual``             -> ``Downsample_*/Conv2d_0`` (FIR)

Convolutions go from OIHW to HWIO, linear maps are transposed, GroupNorm weights become scales.
``map_augment`` (augmentation labels; EDM samples without them, so it adds nothing) is dropped.
EDM's ADM network (``DhariwalUNet``), ``iDDPMPrecond`` and the 'skip' encoder and decoder are
refused, naming what is supported.

``convert`` writes the EMA network into a workdir as ``released_checkpoints.convert`` does
(``checkpoints/<step>`` with ``config.json``), so ``score_sde.load``, ``--mode sample`` and
``--mode eval`` use it. Command line (docs/edm.md)::

  python -m score_sde.conversion.edm_checkpoints \\
      --checkpoint edm-cifar10-32x32-uncond-vp.pkl --workdir DIR [--dataset CIFAR10]
"""
import math
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from absl import app, flags, logging
from etils import epath

from score_sde import models, optim
from score_sde.common import errors, logs
from score_sde.configs import default, edm, record, validation
from score_sde.conversion import released_checkpoints, torch_files
from score_sde.conversion.edm_pickles import PersistentObject, read_snapshot
from score_sde.io import checkpoint
from score_sde.models.parameterization import VPPreconditioning

USER_ERROR_STATUS = 2  # As main.py's.

# EDM's wrappers -> model.parameterization.
PRECONDITIONINGS = {'EDMPrecond': 'edm', 'VPPrecond': 'edm_vp', 'VEPrecond': 'edm_ve'}
# SongUNet's keyword defaults (NVlabs/edm training/networks.py), for the keywords a pickle omits.
SONG_UNET_DEFAULTS = dict(
    label_dim=0, augment_dim=0, model_channels=128, channel_mult=(1, 2, 2, 2),
    channel_mult_emb=4, num_blocks=4, attn_resolutions=(16,), dropout=0.1, label_dropout=0.,
    embedding_type='positional', channel_mult_noise=1, encoder_type='standard',
    decoder_type='standard', resample_filter=(1, 1))
# EDM's encoder types -> ncsnpp's progressive_input.
ENCODERS = {'standard': 'none', 'residual': 'residual'}
# EDM's resampling filters: [1, 1] is ncsnpp's plain nearest / average resampling, [1, 3, 3, 1]
# its FIR resampling.
FILTERS = ((1, 1), (1, 3, 3, 1))
# Its noise embedding widths (channel_mult_noise) that ncsnpp's embeddings have.
NOISE_MULTS = {'positional': 1, 'fourier': 2}
_PATTERN = re.compile(r'network-snapshot-(\d+)\.pkl$')


class UnsupportedNetworkError(errors.UserError, ValueError):
  """An EDM network or option that ``ncsnpp`` does not hold; the message names what is."""


def _networks(snapshot) -> Tuple[PersistentObject, PersistentObject]:
  """The preconditioning wrapper and its ``SongUNet``, refusing what ``ncsnpp`` does not hold."""
  wrapper = snapshot['ema']
  if wrapper.class_name not in PRECONDITIONINGS:
    raise UnsupportedNetworkError(
        f'The EDM network is a {wrapper.class_name}; the preconditionings read here are '
        f'{", ".join(PRECONDITIONINGS)} (iDDPMPrecond, of the ADM network, is not supported).')
  unet = wrapper.modules.get('model')
  if not isinstance(unet, PersistentObject) or unet.class_name != 'SongUNet':
    name = getattr(unet, 'class_name', type(unet).__name__)
    raise UnsupportedNetworkError(
        f'The EDM network\'s model is a {name}; only SongUNet (EDM\'s DDPM++ and NCSN++, model '
        'ncsnpp here) is supported: EDM\'s ADM network (DhariwalUNet) has no counterpart here.')
  return wrapper, unet


def _dataset(dataset: Optional[str], dataset_kwargs) -> str:
  if dataset:
    return dataset
  path = str((dataset_kwargs or {}).get('path', ''))
  if epath.Path(path).name.lower().startswith('cifar10-'):
    return 'CIFAR10'
  raise errors.ConfigError(f'The EDM snapshot\'s dataset ({path or "not recorded"}) is not one '
                           'this conversion recognises; pass --dataset (e.g. CIFAR10), a name '
                           'of the data registry, for the config it writes.')


def _attribute(obj: PersistentObject, name: str):
  """``obj``'s stored attribute ``name``, or the error naming the file's missing field."""
  if name not in obj.state:
    raise torch_files.CheckpointFileError(f'The EDM {obj.class_name} in the pickle has no '
                                          f'{name}: not a network EDM\'s code saved.')
  return obj.state[name]


def _architecture(unet: PersistentObject) -> Tuple[Dict[str, Any], List[str]]:
  """SongUNet's keywords, checked against what ``ncsnpp`` holds, and notes on what is dropped."""
  kw = dict(SONG_UNET_DEFAULTS, **unet.init_kwargs)
  missing = [k for k in ('img_resolution', 'in_channels', 'out_channels') if k not in kw]
  if missing:
    raise torch_files.CheckpointFileError(f'The EDM SongUNet\'s recorded keywords lack '
                                          f'{", ".join(missing)}: not a network EDM\'s code '
                                          'saved.')
  refusals, notes = [], []
  if kw['in_channels'] != kw['out_channels']:
    refusals.append(f'in_channels={kw["in_channels"]} and out_channels={kw["out_channels"]} '
                    'differ; ncsnpp outputs its input\'s channels')
  if kw['channel_mult_emb'] != 4:
    refusals.append(f'channel_mult_emb={kw["channel_mult_emb"]}; ncsnpp\'s embedding is '
                    '4 model_channels wide')
  if NOISE_MULTS.get(kw['embedding_type']) != kw['channel_mult_noise']:
    refusals.append(f'embedding_type={kw["embedding_type"]!r} with channel_mult_noise='
                    f'{kw["channel_mult_noise"]}; ncsnpp has '
                    + ', '.join(f'{k!r} with {v}' for k, v in NOISE_MULTS.items()))
  if kw['encoder_type'] not in ENCODERS or kw['decoder_type'] != 'standard':
    refusals.append(f'encoder_type={kw["encoder_type"]!r}, decoder_type='
                    f'{kw["decoder_type"]!r}; read here are the encoders {tuple(ENCODERS)} and '
                    'the decoder \'standard\' (EDM\'s CIFAR-10 networks)')
  if tuple(kw['resample_filter']) not in FILTERS:
    refusals.append(f'resample_filter={list(kw["resample_filter"])}; read here are '
                    f'{" and ".join(str(list(f)) for f in FILTERS)}')
  if refusals:
    raise UnsupportedNetworkError('The EDM SongUNet has options ncsnpp does not: '
                                  + '; '.join(refusals) + '.')
  if kw['augment_dim']:
    notes.append(f'map_augment ({kw["augment_dim"]} augmentation labels) is dropped: EDM samples '
                 'without augmentation labels, where it adds nothing')
  return kw, notes


def snapshot_config(snapshot: Mapping[str, Any], dataset: Optional[str] = None):
  """The project config of an EDM snapshot's network, and notes on what the conversion drops.

  Args:
    snapshot: ``read_snapshot``'s dict.
    dataset: ``data.dataset``; None recognises EDM's CIFAR-10 archive (``cifar10-32x32.zip``)
      in the snapshot's ``dataset_kwargs``.
  Returns:
    ``(config, notes)``: a complete ``ml_collections.ConfigDict`` (``configs/default.py`` with
    the network's fields, its preconditioning and SDE, and EDM's sampler: Heun on the Karras
    grid, rho 7, 18 levels) and a list of sentences.
  Raises:
    UnsupportedNetworkError: for a network or option ``ncsnpp`` does not hold.
    errors.ConfigError: for a dataset not recognised and not given.
    torch_files.CheckpointFileError: for settings of a type EDM's code does not record.
  """
  try:
    return _config(snapshot, dataset)
  except errors.UserError:
    raise
  except (TypeError, ValueError, KeyError, AttributeError) as e:
    message = ' '.join(str(e).split())
    raise torch_files.CheckpointFileError(f'The EDM network\'s recorded settings are not as '
                                          f'EDM\'s code records them ({type(e).__name__}: '
                                          f'{message}).') from None


def _config(snapshot, dataset):
  wrapper, unet = _networks(snapshot)
  kw, notes = _architecture(unet)
  if wrapper.state.get('use_fp16'):
    notes.append('use_fp16: EDM ran the network in float16 on GPUs; it runs here in '
                 'training.compute_dtype (float32)')
  # EDM's recipe (configs.edm.recipe: EDMPrecond's VE range 0.002 to 80, its objective, its
  # 18-step Heun sampler); VPPrecond and VEPrecond replace the SDE and the weighting below.
  config = edm.recipe(default.get_config())
  t, d, m, s = config.training, config.data, config.model, config.sampling
  d.dataset = _dataset(dataset, snapshot.get('dataset_kwargs'))
  d.image_size, d.num_channels = int(kw['img_resolution']), int(kw['in_channels'])
  d.centered, d.uniform_dequantization = True, False
  d.random_flip = bool((snapshot.get('dataset_kwargs') or {}).get('xflip', False))
  m.name, m.nf, m.ch_mult = 'ncsnpp', int(kw['model_channels']), tuple(kw['channel_mult'])
  m.num_res_blocks, m.attn_resolutions = int(kw['num_blocks']), tuple(kw['attn_resolutions'])
  m.dropout = float(kw['dropout'])
  m.resblock_type, m.skip_rescale, m.progressive = 'biggan', True, 'none'
  m.progressive_input = ENCODERS[kw['encoder_type']]
  m.fir_kernel = tuple(kw['resample_filter'])
  # EDM's fused residual-encoder convolution is ncsnpp's FIR Downsample for either filter.
  m.fir = m.fir_kernel != (1, 1) or m.progressive_input == 'residual'
  m.embedding_type, m.fourier_scale, m.embed_log_sigma = kw['embedding_type'], 16., False
  m.conditional, m.scale_by_sigma = True, False
  m.normalization, m.nonlinearity = 'GroupNorm', 'swish'
  m.num_classes = int(kw['label_dim'])
  m.class_embedding = 'noise' if m.num_classes else 'time'
  m.parameterization = PRECONDITIONINGS[wrapper.class_name]
  t.continuous, t.label_dropout = True, float(kw['label_dropout'])
  if m.parameterization == 'edm':
    m.sigma_data = float(_attribute(wrapper, 'sigma_data'))
  elif m.parameterization == 'edm_vp':
    steps = int(_attribute(wrapper, 'M'))
    if steps != VPPreconditioning.M:
      raise UnsupportedNetworkError(f'VPPrecond with M={steps}; edm_vp labels the network by '
                                    f'({VPPreconditioning.M} - 1) t, EDM\'s default '
                                    f'M={VPPreconditioning.M}.')
    t.sde, t.weighting = 'vpsde', 'dsm'  # EDM's VPLoss (losses.py).
    m.beta_min = float(_attribute(wrapper, 'beta_min'))
    m.beta_max = m.beta_min + float(_attribute(wrapper, 'beta_d'))
    t.eps = s.eps = float(_attribute(wrapper, 'epsilon_t'))
  else:
    t.sde, t.weighting = 'vesde', 'dsm'  # EDM's VELoss (losses.py).
    m.sigma_min = float(_attribute(wrapper, 'sigma_min'))
    m.sigma_max = float(_attribute(wrapper, 'sigma_max'))
  config.eval.begin_ckpt = config.eval.end_ckpt = 1  # The converted step is snapshot 1.
  return config, notes


# --------------------------------------------------------------------------- parameters
def _float(array) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(array, np.float32))


def _tensors(obj, names, where: str) -> List[np.ndarray]:
  tensors = obj.tensors if isinstance(obj, PersistentObject) else {}
  missing = [n for n in names if n not in tensors]
  if missing:
    raise checkpoint.StructureMismatchError(f'{where} has no {", ".join(missing)}: not the '
                                            'SongUNet layout this conversion reads.')
  return [tensors[n] for n in names]


def _conv(obj, where: str) -> Dict[str, np.ndarray]:
  weight, bias = _tensors(obj, ('weight', 'bias'), where)
  return {'kernel': _float(np.transpose(weight, (2, 3, 1, 0))), 'bias': _float(bias)}


def _linear(obj, where: str) -> Dict[str, np.ndarray]:
  weight, bias = _tensors(obj, ('weight', 'bias'), where)
  return {'kernel': _float(np.transpose(weight)), 'bias': _float(bias)}


def _norm(obj, where: str) -> Dict[str, np.ndarray]:
  weight, bias = _tensors(obj, ('weight', 'bias'), where)
  return {'scale': _float(weight), 'bias': _float(bias)}


def _nin(weight: np.ndarray, bias: np.ndarray) -> Dict[str, np.ndarray]:
  """A 1x1 convolution (OIHW) as ``layers.NIN``: ``W (C_in, C_out)``, ``b``."""
  return {'W': _float(np.transpose(weight[:, :, 0, 0])), 'b': _float(bias)}


def _resblock(block: PersistentObject, where: str) -> Dict[str, Any]:
  sub = block.modules
  out = {'GroupNorm_0': _norm(sub.get('norm0'), f'{where}.norm0'),
         'Conv_0': _conv(sub.get('conv0'), f'{where}.conv0'),
         'Dense_0': _linear(sub.get('affine'), f'{where}.affine'),
         'GroupNorm_1': _norm(sub.get('norm1'), f'{where}.norm1'),
         'Conv_1': _conv(sub.get('conv1'), f'{where}.conv1')}
  if sub.get('skip') is not None:
    out['Conv_2'] = _conv(sub['skip'], f'{where}.skip')
  return out


def _attention(block: PersistentObject, where: str) -> Dict[str, Any]:
  """EDM's fused ``qkv`` 1x1 convolution: its output channel ``3 c + j`` is channel ``c`` of
  q (j = 0), k (1), v (2), as its ``reshape(B, C, 3, -1)`` splits them."""
  sub = block.modules
  qkv_w, qkv_b = _tensors(sub.get('qkv'), ('weight', 'bias'), f'{where}.qkv')
  proj_w, proj_b = _tensors(sub.get('proj'), ('weight', 'bias'), f'{where}.proj')
  out = {'GroupNorm_0': _norm(sub.get('norm2'), f'{where}.norm2')}
  for j in range(3):
    out[f'NIN_{j}'] = _nin(qkv_w[j::3], qkv_b[j::3])
  out['NIN_3'] = _nin(proj_w, proj_b)
  return out


def _check_norm(norm, where: str) -> None:
  """SongUNet's GroupNorms have eps 1e-6 (flax's) and ``min(32, C / 4)`` groups (ncsnpp's)."""
  st = getattr(norm, 'state', {})
  if not np.isclose(float(st.get('eps', 0.)), 1e-6):
    raise UnsupportedNetworkError(f'{where} is a GroupNorm of eps {st.get("eps")}; SongUNet\'s '
                                  'and ncsnpp\'s have 1e-6.')


def _check_block(block: PersistentObject, where: str) -> None:
  """The UNetBlock settings SongUNet builds, which the stored state records."""
  st = block.state
  if not (st.get('adaptive_scale') is False and st.get('num_heads') in (0, 1)
          and np.isclose(float(st.get('skip_scale', 0.)), math.sqrt(0.5))):
    raise UnsupportedNetworkError(
        f'{where} is not a UNetBlock as SongUNet builds it (adaptive_scale False, one attention '
        'head, skip_scale sqrt(1/2)), which ncsnpp computes.')
  for name, norm in block.modules.items():
    if name.startswith('norm'):
      _check_norm(norm, f'{where}.{name}')


def _label_table(linear: PersistentObject) -> np.ndarray:
  """EDM's ``map_label(onehot * sqrt(K))`` for each class and the all-zero (null) label, in
  EDM's float32 arithmetic: ``(K + 1, D)``."""
  weight, bias = (_float(a) for a in _tensors(linear, ('weight', 'bias'), 'model.map_label'))
  scale = np.float32(math.sqrt(weight.shape[1]))
  return np.concatenate([scale * weight.T + bias, bias[None]], axis=0)


def _edm_modules(unet: PersistentObject) -> List[Tuple[str, str, Any]]:
  """``(ncsnpp module kind, EDM's name, converted subtree)`` in ncsnpp's creation order."""
  sub = unet.modules
  seq = []
  noise = sub.get('map_noise')
  kind = getattr(noise, 'class_name', type(noise).__name__)
  if kind == 'FourierEmbedding':
    (freqs,) = _tensors(noise, ('freqs',), 'model.map_noise')
    seq.append(('GaussianFourierProjection', 'map_noise', {'W': _float(freqs)}))
  elif not (kind == 'PositionalEmbedding' and noise.state.get('endpoint') is True
            and noise.state.get('max_positions') == 10000):
    raise UnsupportedNetworkError(f'model.map_noise ({kind}) is not the embedding SongUNet '
                                  'builds (FourierEmbedding, or PositionalEmbedding with '
                                  'endpoint=True and 10000 positions).')
  if sub.get('map_label') is not None:  # class_embedding='noise': before the dense layers.
    seq.append(('ClassEmbed', 'map_label', {'embedding': _label_table(sub['map_label'])}))
  seq.append(('Dense', 'map_layer0', _linear(sub.get('map_layer0'), 'model.map_layer0')))
  seq.append(('Dense', 'map_layer1', _linear(sub.get('map_layer1'), 'model.map_layer1')))
  for part in ('enc', 'dec'):
    blocks = sub.get(part)
    for name, block in (blocks.modules if isinstance(blocks, PersistentObject) else {}).items():
      where = f'model.{part}.{name}'
      kind = getattr(block, 'class_name', type(block).__name__)
      if kind == 'UNetBlock':
        _check_block(block, where)
        seq.append(('ResnetBlockBigGANpp', where, _resblock(block, where)))
        if block.modules.get('qkv') is not None:
          seq.append(('AttnBlockpp', where, _attention(block, where)))
      elif name.endswith('_aux_residual'):
        conv = _conv(block, where)
        seq.append(('Downsample', where, {'Conv2d_0': {'weight': conv['kernel'],
                                                       'bias': conv['bias']}}))
      elif name.endswith('_aux_norm'):
        _check_norm(block, where)
        seq.append(('GroupNorm', where, _norm(block, where)))
      elif name.endswith('_conv'):
        seq.append(('Conv', where, _conv(block, where)))
      else:
        raise UnsupportedNetworkError(f'{where} ({kind}) is not part of the SongUNet layouts '
                                      'read here (encoders standard / residual, decoder '
                                      'standard).')
  return seq


def convert_params(unet: PersistentObject, config) -> Dict[str, Any]:
  """A SongUNet's tensors as the ``params`` of ``config``'s ``ncsnpp`` (numpy float32).

  Raises:
    checkpoint.StructureMismatchError: the modules or shapes do not line up with the config's
      network, naming the first that does not.
    UnsupportedNetworkError: a block not as SongUNet builds it.
    torch_files.CheckpointFileError: a tensor of the wrong rank or kind.
  """
  template = models.abstract_params(config)
  order = models.module_order(config)
  try:
    seq = _edm_modules(unet)
  except errors.UserError:
    raise
  except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
    message = ' '.join(str(e).split())
    raise torch_files.CheckpointFileError(f'The EDM network\'s tensors are not laid out as '
                                          f'SongUNet\'s ({type(e).__name__}: {message}).') from None
  if len(seq) != len(order):
    raise checkpoint.StructureMismatchError(
        f'The EDM network has {len(seq)} modules with parameters in ncsnpp\'s terms, the '
        f'config\'s network {len(order)}.')
  params = {}
  for (kind, where, tree), name in zip(seq, order):
    if re.sub(r'_\d+$', '', name) != kind:
      raise checkpoint.StructureMismatchError(
          f'{where} becomes a {kind} where the config\'s network has {name}.')
    params[name] = tree
  checkpoint.check_structure(
      checkpoint.leaf_specs({'params': template}), checkpoint.leaf_specs({'params': params}),
      'The converted EDM network',
      f'  EDM network: {released_checkpoints.describe_params(params)}\n'
      f'  config\'s network: {released_checkpoints.describe_params(template)}')
  return params


def snapshot_step(path) -> Optional[int]:
  """The thousands of training images of ``network-snapshot-<kimg>.pkl``; None otherwise."""
  match = _PATTERN.search(epath.Path(path).name)
  return int(match.group(1)) if match else None


def convert(checkpoint_path, workdir, dataset: Optional[str] = None,
            step: Optional[int] = None) -> int:
  """Writes an EDM network pickle's EMA network as a periodic checkpoint of ``workdir``.

  The snapshot holds the EMA weights only (no raw weights, no Adam moments): both the state's
  ``params`` and ``params_ema`` are the EMA's, Adam starts from zero. EDM counts training in
  images, not steps; the checkpoint is filed as step ``training.snapshot_freq`` (snapshot 1,
  which the written config's ``eval.begin_ckpt = eval.end_ckpt = 1`` evaluate) unless ``step``
  says otherwise. ``workdir/config.json`` records the config (``snapshot_config``), so
  ``score_sde.load(workdir)`` needs nothing else.

  Returns:
    The step written.
  Raises:
    errors.UserError: the file is missing, refused or damaged (``torch_files``), holds a
      network ``ncsnpp`` does not (``UnsupportedNetworkError``), or the step is in ``workdir``
      already.
  """
  snapshot = read_snapshot(checkpoint_path)
  config, notes = snapshot_config(snapshot, dataset)
  freq = config.training.snapshot_freq
  step = freq if step is None else int(step)
  if step < freq:
    raise errors.ConfigError(f'--step={step} is below training.snapshot_freq={freq}: '
                             '--mode eval visits snapshots from 1; use a step of at least '
                             f'{freq}.')
  config.eval.begin_ckpt = config.eval.end_ckpt = step // freq
  validation.validate_config(config, num_devices=1)
  _, unet = _networks(snapshot)
  params = convert_params(unet, config)
  template = models.abstract_params(config)
  state = released_checkpoints.to_train_state(
      {'step': step, 'params': params, 'params_ema': params, 'adam': None}, template,
      optim.get_optimizer(config.optim), map_adam=False)
  with checkpoint.Checkpointer(workdir, async_save=False) as ckpt:
    if not ckpt.save(step, state, periodic=True):
      raise errors.WorkdirError(f'{workdir}/{checkpoint.PERIODIC_DIR}/{step} exists and is not '
                                'replaced: convert into another --workdir, or delete it.')
  record.save_run_config(config, workdir)
  kimg = snapshot_step(checkpoint_path)
  for note in notes:
    logging.info('%s: %s.', checkpoint_path, note)
  logging.info('Wrote %s (%s, %s%s) to %s/%s/%d as model.parameterization=%r.', checkpoint_path,
               snapshot['ema'].class_name, released_checkpoints.describe_params(params),
               '' if kimg is None else f', {kimg} kimg', workdir, checkpoint.PERIODIC_DIR, step,
               config.model.parameterization)
  return step


def _define_flags():
  # Defined only when run as a command, so importing this module adds no global flags.
  flags.DEFINE_string('checkpoint', None, 'An EDM network pickle: network-snapshot-*.pkl or a '
                      'released edm-*.pkl.')
  flags.DEFINE_string('workdir', None, 'Run directory to write checkpoints/<step> and '
                      'config.json into.')
  flags.DEFINE_string('dataset', None, 'data.dataset of the written config; default: CIFAR10 '
                      'for a snapshot trained on EDM\'s cifar10-32x32 archive.')
  flags.DEFINE_integer('step', None, 'Step to record it as; default training.snapshot_freq.')
  flags.mark_flags_as_required(['checkpoint', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}; everything is passed as --flags.')
  logs.quiet_libraries()
  f = flags.FLAGS
  try:
    convert(f.checkpoint, f.workdir, f.dataset, f.step)
  except errors.UserError as e:  # A file the user can fix: the message, no traceback.
    sys.stderr.write(f'Error: {e}\n')
    sys.exit(USER_ERROR_STATUS)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
