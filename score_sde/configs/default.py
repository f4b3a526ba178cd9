"""The complete default configuration: every field the code reads, with its meaning.

Values are those of the paper's CIFAR-10 NCSN++ (VE SDE, continuous) experiment. Experiment files
under ``configs/{ve,vp,subvp}/`` import this and override only their delta; ``configs/embedded.py``
and ``configs/smoke.py`` shrink it for a CPU.

Any field can be overridden on the command line, e.g.
``python main.py --config configs/default.py --config.training.batch_size=64 --workdir DIR``.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 42  # Every random stream (init, noise, data order, sampling) derives from it.

  # ---------------------------------------------------------------------------------- training
  config.training = training = ml_collections.ConfigDict()
  training.sde = 'vesde'  # 'vesde' | 'vpsde' | 'subvpsde' (sde_lib registry).
  training.continuous = True  # Continuous-time DSM (eq. 7); False: discrete SMLD / DDPM losses.
  training.reduce_mean = False  # Mean (True) or sum (False) of the per-pixel loss per example.
  # The loss's weighting (losses.py): 'dsm' lambda(t) = std^2 (discrete: the SMLD / DDPM losses);
  # 'likelihood' lambda(t) = g^2 (Song et al. 2021b; continuous only); 'elbo' the variational
  # bound's diffusion term in nats (elbo.py; reduce_mean=False; continuous, or discrete DDPM);
  # 'edm' EDM's objective (Karras et al. 2022): noise levels sigma ~ exp(N(p_mean, p_std^2)) and
  # lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on the denoiser's error
  # (continuous; a preconditioned model.parameterization 'edm', 'edm_vp' or 'edm_ve').
  training.weighting = 'dsm'
  training.p_mean = -1.2  # EDM's log-normal noise levels: mean and std of log sigma.
  training.p_std = 1.2
  training.batch_size = 128  # Global batch over all devices of all hosts.
  training.n_iters = 1300001  # Total optimisation steps.
  training.log_freq = 50  # Steps between loss lines on stdout and in TensorBoard.
  training.eval_freq = 100  # Steps between evaluation losses on held-out data.
  training.snapshot_freq = 50000  # Steps between kept checkpoints (and sample grids).
  training.snapshot_freq_for_preemption = 10000  # Steps between the preemption checkpoint.
  training.max_to_keep = 0  # Kept periodic checkpoints; 0 keeps all of them.
  training.snapshot_sampling = True  # Sample a grid from the EMA weights at every snapshot.
  training.n_snapshot_samples = 64  # Images in that grid.
  # Smallest diffusion time of the continuous DSM loss, t ~ U[eps, T]: the score blows up as t -> 0.
  training.eps = 1e-5
  # Class-conditional networks (model.num_classes > 0): probability that an example's label is
  # replaced by the null label, so the network also learns the unconditional score that
  # classifier-free guidance needs (Ho & Salimans 2022 use 0.1 to 0.2).
  training.label_dropout = 0.1
  # Scale. compute_dtype: 'float32' or 'bfloat16' (mixed precision: convolutions, matmuls and
  # activations in bfloat16; parameters, Adam, the EMA, normalisation statistics and the loss in
  # float32; sampling, likelihood and evaluation stay float32). grad_accum_steps = k: each step
  # sums the gradients of k micro-batches of batch_size / k (the same update, 1/k the activation
  # memory); batch_size must then split over k * devices.
  training.compute_dtype = 'float32'
  # With bfloat16, the noise levels whose std is below this run in float32 (score_sde/low_noise.py:
  # bfloat16 rounds activations to 2^-9 relative, the size of the noise at the smallest levels);
  # stratified so that each batch holds a fixed share of them. 0: every level in bfloat16.
  training.float32_below_std = 0.2
  training.grad_accum_steps = 1
  # A jax.profiler trace of the train steps (first, count), e.g. (100, 5), into
  # <workdir>/tensorboard/plugins/profile for TensorBoard's Profile tab; () traces nothing.
  training.profile_steps = ()

  # ---------------------------------------------------------------------------------- sampling
  config.sampling = sampling = ml_collections.ConfigDict()
  # A name of sampling.METHODS: 'pc' | 'ode' | 'adaptive' (reverse SDE, Gotta Go Fast) | 'heun'
  # (EDM) | 'euler_ancestral' | multistep: 'dpm_solver' (DPM-Solver++), 'unipc', 'deis', 'ipndm'.
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'  # predictor registry name; 'none' for corrector-only.
  sampling.corrector = 'langevin'  # corrector registry name; 'none' for predictor-only.
  sampling.n_steps_each = 1  # Corrector steps per predictor step.
  sampling.noise_removal = True  # End denoised (PC, ODE: Tweedie at eps; fast: at sigma = 0).
  sampling.probability_flow = False  # PC predictor on the probability-flow ODE instead of the SDE.
  sampling.snr = 0.16  # Signal-to-noise ratio of the Langevin corrector.
  sampling.num_steps = 0  # Steps of the fixed-step samplers (heun, multistep, ...); 0: SDE's N.
  sampling.pc_num_steps = 0  # PC predictor steps; 0: the SDE's N (the released sampler).
  sampling.order = 0  # Multistep order (dpm_solver, unipc 1-3; deis, ipndm 1-4); 0: 2, 2, 4, 3.
  # Grid of the fixed-step samplers (sampling.schedule.SCHEDULES): '' is the method's own
  # (karras for heun / deis / ipndm, logSNR for dpm_solver / unipc); rho is karras' exponent;
  # 'fitted' fits the grid to the sampler (sampling.schedule_fit; seconds when it is built).
  sampling.schedule = ''
  sampling.rho = 7.
  # Or the grid itself: times from T down to the smallest (which then replaces sampling.eps),
  # e.g. a published schedule; () uses sampling.schedule. num_steps 0 takes its length.
  sampling.times = ()
  # How a multistep sampler reaches sigma = 0: 'extrapolate' (its full order, no extra
  # evaluation) or 'tweedie' (the released code's extra evaluation at eps); '' the SDE's
  # measured default (sampling.multistep.DEFAULT_FINALS: extrapolate for VP and VE, tweedie
  # for sub-VP).
  sampling.final_step = ''
  sampling.unipc_variant = 'bh2'  # UniPC's B(h): 'bh1' or 'bh2'.
  sampling.s_churn = 0.  # EDM Heun stochasticity (Karras et al. S_churn); 0: deterministic.
  # The churn acts at noise levels sigma in [s_tmin, s_tmax] (EDM's S_tmin, S_tmax) with fresh
  # noise scaled by s_noise (S_noise); EDM's ImageNet-64 settings: 40, 0.05, 50, 1.003.
  sampling.s_tmin = 0.
  sampling.s_tmax = float('inf')
  sampling.s_noise = 1.
  sampling.eta = 1.  # Euler ancestral's share of fresh noise: 0 (DDIM) to 1 (ancestral).
  sampling.rtol = 1e-5  # ODE sampler tolerances (RK45 as in the paper).
  sampling.atol = 1e-5
  sampling.adaptive_rtol = 0.05  # Adaptive SDE sampler tolerances (Jolicoeur-Martineau et al.).
  sampling.adaptive_atol = 0.0078
  # Time at which samplers stop (then denoise): 1e-5 for VE, 1e-3 for VP / sub-VP, the values
  # of the reference code.
  sampling.eps = 1e-5
  # Class-conditional sampling (sampling.guidance): with a class-conditional network, or with
  # classifier guidance. Samples take these classes in turn; () takes every class in turn.
  sampling.class_labels = ()
  # Classifier-free guidance weight w: (1 + w) s(x, t, y) - w s(x, t, null); 0 is the
  # conditional score, -1 the unconditional one. Class-conditional networks only.
  sampling.cfg_scale = 0.
  # Classifier guidance weight: s(x, t) + scale grad log p_t(y | x) (eq. 14 at 1); 0: off. The
  # classifier is trained with --mode train_classifier and read from sampling.classifier_workdir.
  sampling.classifier_scale = 0.
  sampling.classifier_workdir = ''  # '' means <workdir>/classifier.
  sampling.batch_size = 64  # Images drawn by --mode sample (score_sde.generate).

  # ---------------------------------------------------------------------------------- evaluation
  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.begin_ckpt = 1  # First checkpoint (in units of snapshot_freq) to evaluate.
  evaluate.end_ckpt = 26  # Last checkpoint, inclusive.
  evaluate.batch_size = 1024  # Global batch of samples per round.
  evaluate.enable_sampling = False  # FID / KID / IS from samples.
  evaluate.num_samples = 50000
  evaluate.enable_loss = True  # Held-out DSM loss.
  evaluate.enable_bpd = False  # Bits/dim through the probability-flow ODE.
  evaluate.bpd_dataset = 'test'  # 'train' | 'test'.
  # The variational bound (score_sde/elbo.py) and its prior / diffusion / reconstruction terms
  # over eval.bpd_dataset, one pass: eval.elbo_samples + 1 network evaluations per image, no
  # ODE solve. A discrete-time VP model (training.continuous=False, vpsde) gets the bound of its
  # DDPM chain on the 8-bit data, reverse variance model.reverse_variance; every other model
  # the continuous-time bound on dequantized data, comparable with the ODE's bits/dim.
  evaluate.enable_elbo = False
  # Draws per image of the diffusion term (sampled chain steps or times, with a standard
  # error). 0: the exact sum over every step of the chain (discrete bound only; N evaluations).
  evaluate.elbo_samples = 16
  # Continuous bound's times: 'importance' (uniform in log-SNR, the integrand's weight) or
  # 'uniform' in t; both stratified. The chain ignores it.
  evaluate.elbo_time_sampling = 'importance'
  evaluate.inception_path = ''  # Local Inception-v3 weights file for FID/KID/IS.
  # Reference Inception statistics of the training data (.npz) for FID / KID, made once with
  # `python -m score_sde.metrics.dataset_stats --config CONFIG --out PATH`; needed for sampling.
  evaluate.stats_path = ''
  # Seconds to wait for a checkpoint that training has not written yet; 0: skip it at once.
  evaluate.wait_for_checkpoint_secs = 0.
  # Inception Score parts (is_std is the std over them): 1 as the reference (tf-gan over all
  # samples, the paper's IS), 10 as Salimans et al. 2016.
  evaluate.is_splits = 1
  # How samples reach the 8-bit grid before Inception: 'truncate' (floor, as the reference's
  # .astype(uint8)) or 'round' (as a PNG of them). The paper's FIDs used truncation.
  evaluate.quantization = 'truncate'
  # Keep every sample round's images as ckpt_<step>/samples_<r>.npz (uint8, the values Inception
  # saw) to cross-check FIDs with pytorch-fid or clean-fid. 50,000 CIFAR-10 images are 150 MB.
  evaluate.save_samples = False

  # ---------------------------------------------------------------------------------- logging
  # Metric writers beside TensorBoard's (always on): Weights & Biases (pip install ".[wandb]")
  # gets training's scalars and sample grids, the values TensorBoard gets, and the config.
  config.logging = logging = ml_collections.ConfigDict()
  logging.wandb = False
  logging.wandb_project = 'score_sde'
  logging.wandb_entity = ''  # W&B team or user; '' is the logged-in account's default.
  # 'online', 'offline' (no network; upload later with `wandb sync`) or 'disabled'; '' is
  # wandb's own default: $WANDB_MODE, else online.
  logging.wandb_mode = ''

  # ---------------------------------------------------------------------------------- data
  config.data = data = ml_collections.ConfigDict()
  data.dataset = 'CIFAR10'  # data registry name, e.g. 'MNIST_EMBEDDED', 'CIFAR10', 'IMAGE_FOLDER'.
  data.data_dir = ''  # Folder of the dataset's downloaded files, TFRecords or images.
  data.image_size = 32  # Height = width; a power of two.
  data.num_channels = 3
  data.random_flip = True  # Horizontal flips during training.
  # Threads decoding images (IMAGE_FOLDER, CELEBA, LSUN): None for min(8, CPUs), 0 / 1 serial.
  data.num_workers = ml_collections.config_dict.placeholder(int)
  data.centered = False  # Scale to [-1, 1] (True) or [0, 1] (False).
  data.uniform_dequantization = False  # Add U[0, 1) / 256 noise to 8-bit pixels.
  data.category = ''  # LSUN scene category, e.g. 'bedroom' or 'church_outdoor'; LSUN only.
  # FFHQ / CELEBAHQ: one multi-resolution .tfrecords file of the wanted size (the reference's
  # 'ffhq-r08.tfrecords' holds 256 px, '-r10' 1024 px); '' means look in data_dir.
  data.tfrecords_path = ''

  # ---------------------------------------------------------------------------------- model
  config.model = model = ml_collections.ConfigDict()
  model.name = 'ncsnpp'  # model registry name.
  model.ema_rate = 0.999  # 0.999 for VE, 0.9999 for VP / sub-VP experiments.
  # > 0: the EMA by its half-life in thousands of images (EDM's ema_halflife_kimg, 500 on
  # CIFAR-10), rate 0.5^(batch_size / (1000 ema_halflife_kimg)), in place of ema_rate; with
  # ema_rampup_ratio > 0 (EDM: 0.05) the half-life is at most that share of the images seen.
  model.ema_halflife_kimg = 0.
  model.ema_rampup_ratio = 0.
  # Warm the EMA rate up as min(ema_rate, (1 + step) / (10 + step)) so that short runs forget
  # the initial weights (the paper's runs did not: their EMA starts at the initial weights).
  model.ema_warmup = False
  # Rematerialise every residual block in the backward pass (ncsnpp, ddpm): activation memory of
  # a block boundary instead of its insides, for about one more forward pass of compute.
  model.remat = False
  # SDE hyper-parameters (read by sde_lib.get_sde).
  model.sigma_min = 0.01
  model.sigma_max = 50.
  model.num_scales = 1000  # N: discretisation steps of the SDE (samplers, discrete losses).
  model.beta_min = 0.1
  model.beta_max = 20.
  # DDPM's two fixed reverse variances, 'posterior' (beta~) or 'beta': read by the chain's bound
  # and by training.weighting='elbo' in discrete time.
  model.reverse_variance = 'posterior'
  # Architecture.
  model.scale_by_sigma = True  # Divide the output by sigma (VE): the net predicts -noise/sigma.
  # What the network's output is (models/parameterization.py, docs/parameterization.md):
  # 'score' | 'eps' (noise) | 'x0' (clean image) | 'v' (velocity) | 'auto': 'eps' on VP and
  # sub-VP, 'score' on VE, the paper's and the released checkpoints' convention. EDM's
  # preconditioned denoiser D = c_skip x + c_out F(c_in x; c_noise), which also scales the
  # network's input and sets its noise label: 'edm' (EDMPrecond, with sigma_data), 'edm_vp'
  # (VPPrecond), 'edm_ve' (VEPrecond); continuous-time training only.
  model.parameterization = 'auto'
  model.sigma_data = 0.5  # EDM's data standard deviation, read by parameterization 'edm'.
  model.normalization = 'GroupNorm'
  model.nonlinearity = 'swish'  # 'swish' | 'elu' | 'relu' | 'lrelu'.
  model.nf = 128  # Base channel count.
  model.ch_mult = (1, 2, 2, 2)  # Channel multiplier per resolution.
  model.num_res_blocks = 4  # Residual blocks per resolution.
  model.attn_resolutions = (16,)  # Resolutions with self-attention.
  model.dropout = 0.1
  model.resamp_with_conv = True
  model.conditional = True  # Condition on time / noise level.
  model.fir = True  # FIR up/down-sampling (StyleGAN2) with fir_kernel.
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True  # Divide residual sums by sqrt(2).
  model.resblock_type = 'biggan'  # 'biggan' | 'ddpm'.
  model.progressive = 'none'  # 'none' | 'output_skip' | 'residual'.
  model.progressive_input = 'residual'  # 'none' | 'input_skip' | 'residual'.
  model.progressive_combine = 'sum'  # 'sum' | 'cat'.
  model.attention_type = 'ddpm'
  model.init_scale = 0.
  model.embedding_type = 'fourier'  # 'fourier' (continuous) | 'positional'.
  model.fourier_scale = 16.
  # Fourier embedding of log(label) (the released NCSN++, whose label is sigma); False embeds the
  # label itself (EDM's networks: the preconditioned label c_noise is already a log).
  model.embed_log_sigma = True
  model.conv_size = 3
  # > 0: a class-conditional network over this many classes (ncsnpp, ddpm): a learnt label
  # embedding is added to the time embedding, and label num_classes means "no class".
  model.num_classes = 0
  # Where ncsnpp adds it: 'time', to the time embedding after its two dense layers; 'noise', to
  # the noise embedding before them (EDM's SongUNet, map_label).
  model.class_embedding = 'time'

  # NCSN / NCSNv2 ('ncsn', 'ncsnv2_64', 'ncsnv2_128', 'ncsnv2_256'; models/ncsnv2.py) only.
  # They also read model.normalization: 'InstanceNorm++' (ncsn: conditional InstanceNorm++);
  # 'InstanceNorm++', 'InstanceNorm', 'VarianceNorm' or 'GroupNorm' (ncsnv2_*).
  model.interpolation = 'bilinear'  # RefineNet fusion upsampling: 'bilinear' | 'nearest_neighbor'.

  # ---------------------------------------------------------------------------------- classifier
  # The noise-conditional classifier p_t(y | x) of classifier guidance (paper sec. 5), trained by
  # `python main.py --mode train_classifier` on the same data and SDE into <workdir>/classifier.
  # It uses training.{batch_size, log_freq, eval_freq, snapshot_freq*, max_to_keep, eps} and the
  # optim section, with its own number of steps and EMA rate.
  config.classifier = classifier = ml_collections.ConfigDict()
  classifier.name = 'wideresnet_noise_conditional'
  classifier.num_classes = 10
  classifier.blocks_per_group = 4  # WRN-28-10, the paper's CIFAR-10 classifier.
  classifier.channel_multiplier = 10
  classifier.n_iters = 200001
  classifier.ema_rate = 0.999

  # ---------------------------------------------------------------------------------- optim
  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = 'Adam'  # 'Adam' | 'AdamW'.
  optim.lr = 2e-4
  optim.beta1 = 0.9
  optim.beta2 = 0.999
  optim.eps = 1e-8
  optim.weight_decay = 0.
  optim.warmup = 5000  # Linear learning-rate warmup steps.
  optim.grad_clip = 1.  # Global-norm clipping; <= 0 disables it.

  # ---------------------------------------------------------------------------------- distributed
  # Multi-host runs (--distributed): seconds without a heartbeat after which JAX counts a process
  # as lost; the others then stop, saying which (docs/multihost.md).
  config.distributed = distributed = ml_collections.ConfigDict()
  distributed.heartbeat_timeout_s = 100

  return config


def deepen(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The paper's "deep" variant of a CIFAR-10 experiment: 8 residual blocks per resolution,
  trained for 950k steps (so its last checkpoint is 19 at snapshot_freq = 50k)."""
  config.training.n_iters = 950001
  config.eval.end_ckpt = 19
  config.model.num_res_blocks = 8
  return config
