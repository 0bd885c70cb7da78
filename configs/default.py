"""Every field mtl_ser reads, documented. Experiment configs override what differs.

python launch.py --config=configs/default.py --workdir=runs/default
"""

import ml_collections

from configs import args


def get_config(arg=None):
    """Returns the default config; `arg` may be "smoke" for a tiny run."""
    arg = args.parse_arg(arg, smoke=False)
    c = ml_collections.ConfigDict()
    c.seed = 0  # Root of all randomness: init, dropout, data order, crops.

    # The corpus: which adapter reads it and where it lives.
    c.corpus = ml_collections.ConfigDict()
    c.corpus.name = "synthetic"  # A key of mtl_ser.data.corpora.CORPORA.
    # Corpus folder (synthetic: made if missing; manifest: the .csv/.jsonl file or
    # its folder). Required for every real corpus: no default points at one.
    c.corpus.root = "data/synthetic"
    c.corpus.num_speakers = 10  # synthetic only: speakers to generate (even).
    c.corpus.utterances_per_speaker = 64  # synthetic only: a multiple of 4.
    # iemocap only: "paper4_exc" (ang, hap+exc, neu, sad: 5531 utterances),
    # "paper4" (exc left out: 4490) or a map "ang:anger,exc:happiness,...".
    c.corpus.iemocap_classes = "paper4_exc"
    c.corpus.iemocap_kind = "both"  # iemocap only: both, improvised or scripted.
    c.corpus.include_song = False  # ravdess only: also read the song files.

    # Speaker-independent splits: no speaker is in two splits.
    c.split = ml_collections.ConfigDict()
    # "holdout" (the speakers below) or "corpus" (the corpus's own split: each
    # utterance's "split" label, e.g. a manifest column) trains once.
    # Cross-validation (--mode=cv):
    # "speaker" leave-one-speaker-out, "group" leave-one-group-out (IEMOCAP
    # sessions), "kfold" speaker-grouped k-fold; see data/splits.cv_folds.
    c.split.protocol = "holdout"
    c.split.val_speakers = "spk06,spk07"  # holdout: comma-separated speaker ids.
    c.split.test_speakers = "spk08,spk09"  # holdout: everyone else trains.
    c.split.folds = 5  # kfold: number of folds.
    c.split.within_group = False  # group: val/test on the held-out group's speakers.
    # Cross-validation: each fold validates on the next speaker/group (True), or
    # has no validation split and trains on every speaker it does not test
    # (False; needs train.evaluate_at="last"). For holdout, val_speakers="" is
    # the same.
    c.split.cv_validation = True
    c.split.fold = -1  # --mode=cv: run this fold only (one per job); -1: all.

    # Log-mel features (librosa reference), cached on disk once per corpus+config.
    c.features = ml_collections.ConfigDict()
    c.features.sample_rate = 16_000  # Audio is resampled to this rate (Hz).
    c.features.n_fft = 512  # FFT size (samples): 32 ms at 16 kHz.
    c.features.hop_length = 160  # Hop (samples): 10 ms frames at 16 kHz.
    c.features.n_mels = 64  # Mel bands (the spectrogram's width F).
    c.features.fmin = 50.0  # Lowest mel frequency (Hz).
    c.features.fmax = 8_000.0  # Highest mel frequency (Hz), at most sr/2.
    c.features.top_db = 80.0  # Log-mel dynamic range kept below the maximum (dB).
    c.features.trim_top_db = 40.0  # Leading/trailing silence threshold (dB).
    c.features.cache_dir = "data/cache"  # Feature cache root; keyed by a hash.

    # Input pipeline (Grain).
    c.data = ml_collections.ConfigDict()
    # "segments": train on random crops of crop_frames, evaluate on windows
    # covering each utterance (eval_hop_frames apart), probabilities averaged.
    # "fixed": each utterance is cut or padded to its centre crop_frames, in
    # training and evaluation alike.
    c.data.inputs = "segments"
    c.data.crop_frames = 128  # Training crop length T (frames).
    c.data.eval_hop_frames = 64  # Hop between evaluation windows (frames).
    # Global training batch (divisible by device count); weighting.name modo and
    # sdmgrad take three such batches per step.
    c.data.batch_size = 32
    # Grain worker processes making training batches (0: in this process, with
    # Grain's prefetch threads). Workers pay off with spare cores (accelerator
    # hosts); on a 2-core CPU they share the cores with the step and lose
    # (benchmarks/RESULTS.md, input_pipeline). The batches are the same.
    c.data.num_workers = 0
    # Threads that make training batches ahead, in this process or in each
    # worker (0: each batch is made when the loop asks for it). The batches are
    # the same. Python threads take turns on the GIL: on this 2-core machine
    # Grain's default of 16 made about half the batches/s that 1 made
    # (benchmarks/RESULTS.md, input_pipeline).
    c.data.read_threads = 1
    c.data.eval_batch_size = 64  # Global evaluation batch (windows).
    # How log-mels are standardised per mel band: "train" (the training
    # split's mean and std), "speaker" (each speaker's own, in every split:
    # transductive, it reads the test speaker's audio before scoring it),
    # "utterance" (each utterance's own) or "none".
    c.data.normalisation = "train"
    # Classification losses: "none" (every utterance weighs 1) or "balanced"
    # (each class of the training split weighs the same: n / (k * n_class)).
    c.data.class_weights = "none"
    # SpecAugment on training crops: masks of up to this many frames / mel bands.
    c.data.time_masks, c.data.time_mask_frames = 0, 20  # 0 masks: off.
    c.data.freq_masks, c.data.freq_mask_bands = 0, 8
    # Speed perturbation (for small corpora): each factor (0.5..2, not 1) gets a
    # cached copy of the corpus played that much faster (pitch moves too), e.g.
    # (0.9, 1.1); each training example draws its speed from 1.0 and these.
    c.data.speed_factors = ()  # Empty: off.
    # White noise added to training crops (in the mel power domain) with this
    # probability, at an SNR (dB) drawn uniformly from noise_snr_db (lo, hi).
    c.data.noise_prob = 0.0  # 0: off.
    c.data.noise_snr_db = (5.0, 20.0)
    c.data.bad_audio = "exclude"  # Unusable files: "exclude" (excluded.tsv) or "fail".
    # Training crops' log-mels made in the jitted train step, from a cache of the
    # waveforms (features.crop_features_jnp), instead of read from the log-mel
    # cache: the same crops, within 0.01 dB. Evaluation, the normalisation
    # statistics and prediction keep the log-mel cache. Speed factors get
    # waveform copies, noise is real white noise on the samples, SpecAugment
    # runs in the step (from the step's key, not the example's generator).
    c.data.features_on_device = False
    # The training split's log-mels (speed copies included) resident on every
    # accelerator, replicated, so that the host sends only where each crop
    # starts and the train step gathers it: the same crops as from the host.
    # Used when they take at most device_cache_max_mb (else the host reads the
    # crops, and says so); every public SER corpus fits (EmoDB 37 MB, IEMOCAP
    # about 2 GB). Not with features_on_device.
    c.data.device_cache = False
    c.data.device_cache_max_mb = 4096.0

    # Tasks: the first is the main one (utterances without its label are dropped;
    # other missing labels are masked out of their task's loss).
    c.tasks = "emotion,gender,arousal,valence,dominance"  # Comma-separated.
    c.emotion_classes = "anger,happiness,neutral,sadness"  # The paper's four.
    c.regression_loss = "mse"  # "mse" or "ccc" (1 - concordance), for A/V/D.

    # The model: a trunk from mtl_ser.models.TRUNKS plus one head per task.
    c.model = ml_collections.ConfigDict()
    c.model.name = "alexnet"  # alexnet, vgg11, vgg13, vgg16, vgg19.
    c.model.width = 1.0  # Channel multiplier (conv and hidden FC layers).
    c.model.hidden = 4096  # Hidden FC size at width 1 (torchvision: 4096).
    c.model.dropout = 0.5  # Dropout before each hidden FC layer, as the originals.
    c.model.batch_norm = False  # BatchNorm after each conv.
    # Time derivatives of the normalised log-mels added as input channels (HTK
    # regression over +-2 frames): 0 none, 1 deltas, 2 deltas and accelerations.
    c.model.deltas = 0
    # Output (time, mel) of the adaptive average pool between the last conv and
    # the hidden Dense layers. Empty: the trunk's own, torchvision's 6x6
    # (AlexNet) or 7x7 (VGG), which repeats bins of a short crop's small map
    # and gives fc1 weights per time position. (1, n) averages over time, so
    # the embedding does not depend on where in the crop a cue lies; (1, 1) is
    # global average pooling.
    c.model.pool_size = ()
    c.model.dtype = "float32"  # Compute dtype: float32 or bfloat16 (params f32).

    # Automatic loss weighting (mtl_ser.weighting.METHODS).
    c.weighting = ml_collections.ConfigDict()
    c.weighting.name = "uncertainty"  # See mtl_ser.weighting.METHODS.
    c.weighting.fixed_weights = ""  # fixed only: comma-separated, one per task.
    # uncertainty: "libmtl" = L/(2 e^s) + s/2 for every task (LibMTL's form);
    # "kendall" = e^-s L + s/2 for classification, L/(2 e^s) + s/2 for regression.
    c.weighting.uncertainty_form = "libmtl"
    c.weighting.init_log_var = -0.5  # Initial s = log sigma^2 (LibMTL: -0.5).
    # Per-task gradients of the shared representation (the trunk's embedding,
    # summed over the batch) instead of the shared parameters: the "-UB"
    # variants (MGDA-UB). Only for methods that allow it (rep_grad_ok);
    # graddrop always works on the representation, where it is defined.
    c.weighting.rep_grad = False
    # Gradient methods: "vmap" computes the T task gradients in one batched
    # backward pass (fastest); "loop" runs T backward passes (least memory).
    c.weighting.per_task_grads = "vmap"
    c.weighting.dwa_temperature = 2.0  # dwa: softmax temperature (LibMTL T).
    c.weighting.famo_lr = 0.025  # famo: Adam learning rate of the logits.
    c.weighting.famo_weight_decay = 1e-3  # famo: coupled L2 on the logits.
    c.weighting.gradnorm_alpha = 1.5  # gradnorm: restoring-force strength.
    c.weighting.mgda_normalization = "none"  # mgda: none, l2, loss, loss+.
    c.weighting.cagrad_alpha = 0.5  # cagrad: c (radius of the ball).
    c.weighting.cagrad_rescale = 1  # cagrad: 0, 1 or 2 (divide by 1, 1+c^2, 1+c).
    c.weighting.nash_update_every = 1  # nash_mtl: steps between weight solves.
    c.weighting.nash_iterations = 20  # nash_mtl: concave-convex iterations.
    c.weighting.nash_max_norm = 1.0  # nash_mtl: clip the shared update (0: off).
    c.weighting.db_beta = 0.9  # db_mtl: EMA factor of the log-loss gradients.
    c.weighting.db_beta_sigma = 0.0  # db_mtl: beta / step^sigma decay.
    c.weighting.graddrop_leak = 0.0  # graddrop: kept share of dropped gradients.
    c.weighting.stch_mu = 1.0  # stch: smoothing of the Tchebycheff maximum.
    c.weighting.stch_warmup_epochs = 4  # stch: epochs of log-loss before the nadir.
    c.weighting.excess_step_size = 1e-2  # excess_mtl: robust step size eta.
    c.weighting.gradvac_beta = 0.5  # gradvac: EMA factor of the target cosines.
    # gradvac: 0 whole model, 1 per layer (module), 2 per parameter tensor.
    c.weighting.gradvac_group_type = 0
    c.weighting.moco_beta = 0.5  # moco: tracking rate of Y (/ step^sigma).
    c.weighting.moco_beta_sigma = 0.5
    c.weighting.moco_gamma = 0.1  # moco: step size of lambda (/ step^sigma).
    c.weighting.moco_gamma_sigma = 0.5
    c.weighting.moco_rho = 0.0  # moco: ridge on Y Y^T.
    c.weighting.fairgrad_alpha = 1.0  # fairgrad: alpha-fairness.
    c.weighting.upgrad_norm_eps = 1e-4  # upgrad: K/tr(K) is 0 below this trace.
    c.weighting.upgrad_reg_eps = 1e-4  # upgrad: ridge added to K/tr(K).
    # modo and sdmgrad draw three batches of data.batch_size per step.
    c.weighting.modo_gamma = 1e-3  # modo: step size of lambda.
    c.weighting.modo_rho = 0.1  # modo: ridge of lambda's step.
    c.weighting.sdmgrad_lamda = 0.3  # sdmgrad: weight of the mean direction.
    c.weighting.sdmgrad_niter = 20  # sdmgrad: SGD iterations on w per step.

    # Optimizer (optax) and schedule.
    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"  # adam (the paper's), adamw, sgd (with momentum).
    c.optim.learning_rate = 1e-4  # Peak learning rate.
    c.optim.warmup_steps = 0  # Linear warm-up from 0 to the peak.
    c.optim.schedule = "cosine"  # cosine (decay to end_lr_factor * peak) or constant.
    c.optim.end_lr_factor = 0.0  # Final learning rate as a fraction of the peak.
    c.optim.weight_decay = 0.0  # adamw/sgd only; never on biases or loss weights.
    c.optim.momentum = 0.9  # sgd only.
    c.optim.grad_clip = 1.0  # Global-norm clipping; 0 disables it.

    # The training loop.
    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 3_000  # Optimizer steps.
    # XLA CPU only: the ops XLA hands to its YNNPACK library, a comma-separated
    # list of dot, reduce, eltwise, conv; "xla" keeps XLA's own choice, "none"
    # uses none. YNNPACK's convolutions were slower than XLA's Eigen ones here
    # (mtl_ser/training/xla_options.py; benchmarks/RESULTS.md).
    c.train.cpu_library_fusions = "dot,reduce"
    c.train.log_every = 50  # Steps between metric fetches, logs and NaN checks.
    c.train.eval_every = 500  # Steps between validation runs (and best checkpoint).
    c.train.checkpoint_every = 500  # Steps between checkpoints of the latest state.
    c.train.keep_checkpoints = 2  # Latest checkpoints kept (the best is kept apart).
    c.train.best_metric = "val/ua/emotion"  # Chooses the best checkpoint (max).
    # The state the final evaluation (results.json, test metrics, prediction)
    # uses: "best" (the best_metric checkpoint) or "last" (the final state; no
    # best checkpoint is kept, validation only draws the curves). With one
    # validation speaker, "best" can pick an early step by luck.
    c.train.evaluate_at = "best"
    # Evaluation (validation, best checkpoint, test, prediction, analysis) uses
    # exponential moving averages of the model's parameters and BatchNorm
    # statistics with this decay (e.g. 0.999), updated after every step; the
    # decay is warmed up as min(decay, (1 + step) / (10 + step)). 0: off, the
    # live weights are evaluated. It costs one pass over the parameters a step.
    c.train.ema_decay = 0.0
    c.train.progress_bar = True  # tqdm bar on process 0.
    c.train.tensorboard = True  # TensorBoard event files beside metrics.jsonl.
    # A step whose loss or gradient is NaN/Inf is never applied. "stop": the run
    # stops at the next log step, naming the step and task and writing
    # nonfinite_step<N>.json; "skip": the batch is skipped and counted.
    c.train.on_nonfinite = "stop"
    c.train.max_skipped_steps = 10  # "skip": stop as "stop" does beyond this many.
    # Another process of the same workdir is presumed dead when its lock file has
    # not been refreshed (at every log step) for this long.
    c.train.lock_stale_after_s = 600.0

    # report.md's figures (mtl_ser/outputs): training curves, confusion matrices,
    # and from <workdir>/analysis.npz (written at the final evaluation) a t-SNE
    # of the test embeddings and Grad-CAM maps.
    c.report = ml_collections.ConfigDict()
    c.report.figures = True  # False: tables only, and no analysis.npz.
    c.report.gradcam_per_class = 1  # Grad-CAM test utterances per emotion class.
    c.report.tsne_perplexity = 30.0  # Lowered to (N - 1) / 3 for N utterances.

    if arg.smoke:  # Tiny run for tests and laptops.
        smoke(c)
    return c


def smoke(c):
    """Shrinks a config in place to a run of seconds (used by every config)."""
    c.corpus.root = "data/synthetic_smoke"
    c.corpus.num_speakers, c.corpus.utterances_per_speaker = 6, 8
    c.split.val_speakers, c.split.test_speakers = "spk02,spk03", "spk04,spk05"
    c.data.crop_frames, c.data.eval_hop_frames = 64, 32
    c.data.batch_size, c.data.eval_batch_size = 8, 16
    c.model.width, c.model.hidden = 1 / 16, 1024
    c.train.num_steps, c.train.log_every = 4, 2
    c.train.eval_every = c.train.checkpoint_every = 2
