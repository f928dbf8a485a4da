#!/usr/bin/env python
"""Time training (and evaluation) of the OFFICIAL LLM4CDSR code on CPU, on Food-Kitchen.

The official code (github Applied-Machine-Learning-Lab/LLM4CDSR-pytorch) is NOT part of this
repository. Check it out somewhere outside the repo and point ``--official_dir`` (or
``LLM4CDSR_OFFICIAL_DIR``) at it::

    git --git-dir=<mirror> --work-tree=../llm4cdsr_official checkout HEAD -- .
    LLM4CDSR_OFFICIAL_DIR=../llm4cdsr_official \\
        .venv/bin/python benchmarks/official_llm4cdsr.py --random_features --batches 5 [--epoch] [--eval]

**Input data.** A child process (so that this process's peak RSS is the official code's, not
RecBole's) loads our dataset through the package (``create_dataset`` with a ``Config`` as in
``quick_start.py``: the same users and mixed sequences our models train on) and writes, in a
temporary working directory, the files the official ``generators/generator.py`` and
``models/LLMCDSR.py`` read, in the format of the official ``data/amazon/handle.ipynb`` /
``pca.ipynb`` / ``user_profile.py``:

* ``data/amazon/handled/food_kitchen.pkl``: ``(inter_seq, domain_seq)``, two dicts
  ``{user_id (1..n): np.ndarray}`` (mixed sequence oldest first; item ids local to their domain,
  A = 1..n_A, B = 1..n_B; domain 0 = A, 1 = B). Users are our evaluated users in id order.
* ``data/amazon/handled/id_map.json``: ``user_dict`` / ``item_dict`` (``str2id``/``id2str`` with
  our original tokens) and ``item_dict["item_count"] = {"0": n_A, "1": n_B}``.
* ``itm_emb_np_all.pkl`` ``[n_A + n_B, G]`` (A rows then B rows; the model prepends the padding
  row, so the table is ``[n_items, G]`` as ours), ``itm_emb_np_A_pca128.pkl`` ``[n_A, 128]``,
  ``itm_emb_np_B_pca128.pkl`` ``[n_B, 128]`` and ``usr_profile_emb.pkl`` ``[n_users, P]`` (row k =
  the k-th user, the index the official dataset passes as ``user_id``). With
  ``--random_features``: random float32 arrays (G = P = 384, the all-MiniLM-L6-v2 width ours
  uses); otherwise ``recbole_ortho.data.text_features.load_text_features`` (our cache, same
  shapes as our model's tables). The JSON says which (``features``).

The dataset name is ``amazon`` (main.py only accepts douban/amazon/elec) and ``--inter_file
food_kitchen``.

**How the official code is driven** (by import; none of its files is edited):

* ``sys.argv`` is set to the command line of ``experiments/amazon/llm4cdsr.bash`` (hidden 128,
  batch 128, max_len 200, local_emb + global_emb + freeze_emb, alpha = beta = 0.1, seed 42, the
  main.py defaults trm_num 2, num_heads 1, dropout 0.5, lr 1e-3, train_neg 1, test_neg 100) with
  ``--inter_file food_kitchen``, ``--num_workers`` from our CLI (default 0; the script uses 4) and
  ``--no_cuda`` (an official flag). Then official ``main.py`` is imported in the working
  directory: its module code parses the arguments, derives the paths, seeds
  (random/numpy/torch 42) and sets ``torch.autograd.set_detect_anomaly(True)``, which therefore
  stays on as in the official run (``--no_detect_anomaly`` switches it off after the import,
  recorded in the JSON).
* Monkey-patches, all unavoidable: (1) ``setproctitle`` (imported by main.py only to rename the
  process; not a dependency of this project) gets a no-op stub module if it is not installed;
  (2) ``main.Logger`` is replaced by a quiet stand-in (the official one writes a log file and a
  tensorboard folder); (3) ``main.CDSRTrainer`` is wrapped: the official class is constructed
  unchanged by ``main.main()`` (after main built the official ``CDSRRegSeq2SeqGeneratorUser``)
  and the wrapper then raises, handing us the trainer, so main's 200-epoch ``trainer.train()``
  never starts.
* One timed training batch = the body of the official ``SeqTrainer._train_one_epoch`` loop
  (``.to(device)``, ``_prepare_train_inputs``, ``model(**inputs)``, ``backward``, ``.item()``,
  ``optimizer.step()``, ``optimizer.zero_grad()``) minus tqdm / loss bookkeeping. Fetching the batch
  from the official DataLoader (per-sample Python negative sampling and padding to 200, 3 times per
  user) is timed separately (``load_s_*``). ``--epoch`` times every batch of one full epoch this
  way (``epoch_s_measured`` = sum of load + step); ``--official_epoch`` also times one call of the
  official ``trainer._train_one_epoch`` as a whole; ``--epoch_load`` one full pass of the DataLoader
  alone (the loading share of an epoch, measured, in seconds rather than tens of minutes).
* ``--eval`` times one call of the official ``trainer.eval()`` on the validation loader (batch 100,
  1 + 100 sampled candidates per user, sampled in the loader; loading and metrics included);
  ``--eval_batches K`` times K batches of its loop body and extrapolates (mean x batches).
* ``--count_flops`` counts the FLOPs of one more, untimed, training batch (``FlopCounterMode``).

Output: one JSON line on stdout (official prints go to stderr), optionally also ``--json_out``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_DATASET = 'amazon'        # main.py --dataset choices: douban, amazon, elec
INTER_FILE = 'food_kitchen'
LLM_EMB_FILE = 'itm_emb_np'
USER_EMB_FILE = 'usr_profile_emb'
TEXT_DIM = 384                     # all-MiniLM-L6-v2; ours uses min(text dim, 1024)
DOMAIN_DIM = 128                   # the official PCA width of the domain tables


def bash_argv(num_workers: int) -> list:
    """experiments/amazon/llm4cdsr.bash with our inter_file, num_workers and --no_cuda."""
    return ['--dataset', OFFICIAL_DATASET, '--inter_file', INTER_FILE, '--model_name', 'llm4cdsr',
            '--hidden_size', '128', '--train_batch_size', '128', '--max_len', '200', '--gpu_id', '0',
            '--num_workers', str(num_workers), '--num_train_epochs', '200', '--seed', '42',
            '--check_path', '', '--patience', '20', '--ts_user', '12', '--ts_item', '13', '--log',
            '--domain', 'AB', '--local_emb', '--global_emb', '--freeze_emb',
            '--llm_emb_file', LLM_EMB_FILE, '--user_emb_file', USER_EMB_FILE,
            '--alpha', '0.1', '--beta', '0.1', '--no_cuda']


# ------------------------------------------------------------------------------------------ data
def _our_config(dataset, model=None):
    """A Config of our package for ``dataset`` (model: LLM4CDSR if it exists, else ABXI: only the
    dataset keys matter here)."""
    old_argv = sys.argv
    sys.argv = [old_argv[0]]          # RecBole's Config reads --key=value from the command line
    try:
        from recbole_ortho.config import Config
        cfg = {'show_progress': False, 'save_model': False, 'state': 'WARNING'}
        if model is None:
            try:
                from recbole_ortho.model.registry import get_model
                get_model('LLM4CDSR')
                model = 'LLM4CDSR'
            except Exception:
                model = 'ABXI'
        return Config(model=model, dataset=dataset, config_dict=cfg), model
    finally:
        sys.argv = old_argv


def _get(obj, key, idx):
    if isinstance(obj, dict):
        return obj[key]
    if isinstance(obj, (tuple, list)):
        return obj[idx]
    return getattr(obj, key)


def text_cache_path(config, data):
    """Where ``load_text_features`` caches the features of ``data`` under ``config`` ('' without a
    cache_dir); computed with the module's own key so that nothing is encoded here."""
    from recbole_ortho.data import text_features as tf
    from recbole_ortho.utils.model_config import ModelConfig
    cfg = ModelConfig(config)
    if not cfg['cache_dir']:
        return ''
    s = tf._settings(cfg)
    texts, _ = tf.item_texts(cfg, data, s)
    key = tf._cache_key(texts, data, s, tf.encoder_identity(tf.resolve_encoder(s['encoder'])))
    return os.path.join(cfg['cache_dir'], f"text-{cfg['dataset']}-{key}.npz")


def prepare_official_input(workdir: str, dataset: str = 'food_kitchen', random_features: bool = False,
                           seed: int = 0, build_features: bool = False) -> dict:
    """Write the official input files of our ``dataset`` under ``workdir/data/amazon/handled``
    (see module docstring); returns a summary dict."""
    import numpy as np
    from recbole_ortho.data.dataset import create_dataset

    config, cfg_model = _our_config(dataset)
    data = create_dataset(config)
    (a_lo, a_hi), (b_lo, b_hi) = data.domain_range[0], data.domain_range[1]
    n_a, n_b = a_hi - a_lo, b_hi - b_lo
    users = np.asarray(data.eval_users)               # the official code drops users with < 3 items too
    inter_seq, domain_seq = {}, {}
    user_tok = data.user_tokens if data.user_tokens is not None else None
    user_str2id, user_id2str = {}, {}
    for k, u in enumerate(users):
        items = data.seq_items[data.seq_offsets[u]:data.seq_offsets[u + 1]]
        dom = data.item_domain[items].astype(np.int64)
        if (dom < 0).any():
            raise ValueError(f'user {u}: padding id in its sequence')
        local = np.where(dom == 0, items - a_lo + 1, items - b_lo + 1).astype(np.int64)
        inter_seq[k + 1] = local
        domain_seq[k + 1] = dom
        tok = str(user_tok[u]) if user_tok is not None else str(int(u))
        user_str2id[tok] = k + 1
        user_id2str[k + 1] = tok
    item_tok = data.item_tokens
    item_dict = {}
    for d, (lo, hi) in ((0, (a_lo, a_hi)), (1, (b_lo, b_hi))):
        toks = [str(item_tok[i]) if item_tok is not None else str(i) for i in range(lo, hi)]
        item_dict[str(d)] = {'str2id': {t: j + 1 for j, t in enumerate(toks)},
                             'id2str': {j + 1: t for j, t in enumerate(toks)}}
    item_dict['item_count'] = {'0': int(n_a), '1': int(n_b)}

    if random_features:
        rng = np.random.default_rng(seed)
        g_all = (rng.standard_normal((n_a + n_b, TEXT_DIM)) / np.sqrt(TEXT_DIM)).astype(np.float32)
        emb_a = (rng.standard_normal((n_a, DOMAIN_DIM)) / np.sqrt(DOMAIN_DIM)).astype(np.float32)
        emb_b = (rng.standard_normal((n_b, DOMAIN_DIM)) / np.sqrt(DOMAIN_DIM)).astype(np.float32)
        usr = (rng.standard_normal((len(users), TEXT_DIM)) / np.sqrt(TEXT_DIM)).astype(np.float32)
        features = 'random'
    else:
        from recbole_ortho.data.text_features import add_text_defaults, load_text_features
        add_text_defaults(config)
        cache = text_cache_path(config, data)
        if not build_features and not (cache and os.path.isfile(cache)):
            raise SystemExit(f'no text-feature cache for [{dataset}] ({cache or "cache_dir unset"}); pass '
                             f'--random_features (same table shapes, fine for timing) or --build_features')
        feats = load_text_features(config, data)
        glob = np.asarray(_get(feats, 'global_table', 0), dtype=np.float32)
        dom_t = np.asarray(_get(feats, 'domain_table', 1), dtype=np.float32)
        prof = np.asarray(_get(feats, 'user_profiles', 2), dtype=np.float32)
        if glob.shape[0] != data.n_items or dom_t.shape[0] != data.n_items or prof.shape[0] != data.n_users:
            raise ValueError(f'text features: shapes {glob.shape} {dom_t.shape} {prof.shape} do not match '
                             f'n_items {data.n_items} / n_users {data.n_users}')
        g_all = np.concatenate([glob[a_lo:a_hi], glob[b_lo:b_hi]])
        emb_a, emb_b = dom_t[a_lo:a_hi], dom_t[b_lo:b_hi]
        usr = prof[users]
        features = 'real'

    hd = os.path.join(workdir, 'data', OFFICIAL_DATASET, 'handled')
    os.makedirs(hd, exist_ok=True)
    with open(os.path.join(hd, f'{INTER_FILE}.pkl'), 'wb') as f:
        pickle.dump((inter_seq, domain_seq), f)
    with open(os.path.join(hd, 'id_map.json'), 'w') as f:
        json.dump({'user_dict': {'str2id': user_str2id, 'id2str': user_id2str}, 'item_dict': item_dict}, f)
    for name, arr in ((f'{LLM_EMB_FILE}_all', g_all), (f'{LLM_EMB_FILE}_A_pca{DOMAIN_DIM}', emb_a),
                      (f'{LLM_EMB_FILE}_B_pca{DOMAIN_DIM}', emb_b), (USER_EMB_FILE, usr)):
        with open(os.path.join(hd, f'{name}.pkl'), 'wb') as f:
            pickle.dump(arr, f)
    lens = np.array([len(v) for v in inter_seq.values()])
    return {'features': features, 'config_model': cfg_model, 'n_users': int(len(users)),
            'n_item_a': int(n_a), 'n_item_b': int(n_b), 'seq_len_max': int(lens.max()),
            'seq_len_mean': float(lens.mean()),
            'table_shapes': {'global_all': list(g_all.shape), 'domain_A': list(emb_a.shape),
                             'domain_B': list(emb_b.shape), 'user_profile': list(usr.shape)}}


# ------------------------------------------------------------------------------------------- cli
def parse_cli(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--official_dir', default=os.environ.get('LLM4CDSR_OFFICIAL_DIR'),
                   help='checkout of github Applied-Machine-Learning-Lab/LLM4CDSR-pytorch '
                        '(default: $LLM4CDSR_OFFICIAL_DIR)')
    p.add_argument('--dataset', default='food_kitchen', help='our dataset (default food_kitchen)')
    p.add_argument('--random_features', action='store_true',
                   help='random embedding tables of the right shapes instead of our text-feature cache')
    p.add_argument('--build_features', action='store_true',
                   help='build our text-feature cache when it is missing (encodes every item: slow on CPU)')
    p.add_argument('--batches', type=int, default=5, help='training batches to time (without --epoch)')
    p.add_argument('--epoch', action='store_true', help='time every batch of one full training epoch')
    p.add_argument('--epoch_load', action='store_true',
                   help='also time one full pass of the training DataLoader alone (no step): the loading share '
                        'of an epoch, measured')
    p.add_argument('--official_epoch', action='store_true',
                   help='also time one call of the official trainer._train_one_epoch as a whole')
    p.add_argument('--eval', action='store_true', help='time one official trainer.eval() (validation)')
    p.add_argument('--eval_batches', type=int, default=0,
                   help='time K validation batches (the official eval loop body) and extrapolate to a pass')
    p.add_argument('--count_flops', action='store_true',
                   help='count the FLOPs of one extra (untimed) training batch (torch FlopCounterMode)')
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    p.add_argument('--num_workers', type=int, default=0,
                   help='official --num_workers (DataLoader workers); the bash script uses 4, default 0')
    p.add_argument('--no_detect_anomaly', action='store_true',
                   help='switch off the autograd anomaly detection official main.py turns on at import')
    p.add_argument('--workdir', default=None,
                   help='write the official input here and keep it (default: a temporary directory)')
    p.add_argument('--json_out', default=None, help='also write the JSON result here')
    p.add_argument('--prepare_only', default=None, metavar='DIR', help=argparse.SUPPRESS)
    p.add_argument('--extra', nargs=argparse.REMAINDER, default=[],
                   help='further official main.py arguments appended after the bash-script ones')
    ns = p.parse_args(argv)
    if ns.prepare_only:
        return ns
    if not ns.official_dir:
        p.error('--official_dir (or LLM4CDSR_OFFICIAL_DIR) is required')
    ns.official_dir = os.path.abspath(ns.official_dir)
    for f in ('main.py', os.path.join('generators', 'generator.py'), os.path.join('models', 'LLMCDSR.py'),
              os.path.join('trainers', 'cdsr_trainer.py')):
        if not os.path.isfile(os.path.join(ns.official_dir, f)):
            p.error(f'{ns.official_dir} does not look like an LLM4CDSR-pytorch checkout (no {f})')
    if ns.batches < 1:
        p.error('--batches must be >= 1')
    return ns


# -------------------------------------------------------------------------------- official setup
class _Captured(Exception):
    def __init__(self, trainer):
        super().__init__('captured official trainer')
        self.trainer = trainer


class _NullWriter:
    """Stand-in for tensorboard's SummaryWriter (add_scalar etc. do nothing)."""

    def __getattr__(self, name):
        return lambda *a, **k: None


class _QuietLogManager:
    """Stand-in for the official utils.logger.Logger: no log file, no tensorboard folder."""

    def __init__(self, args):
        self.logger = logging.getLogger('llm4cdsr_official_quiet')
        self.logger.propagate = False
        if not self.logger.handlers:
            self.logger.addHandler(logging.NullHandler())
        self.writer = _NullWriter()

    def get_logger(self):
        return self.logger, self.writer

    def get_now_str(self):
        return time.strftime('%m%d%H%M%S', time.localtime())

    def end_log(self):
        pass


def official_trainer(ns: argparse.Namespace, workdir: str):
    """Import official main.py with the bash-script argv in ``workdir`` and run main.main() until
    the official CDSRTrainer is constructed; returns (trainer, args, argv)."""
    try:
        import setproctitle  # noqa: F401
        stubbed = False
    except ImportError:  # only used by main.py to rename the process
        sys.modules['setproctitle'] = types.SimpleNamespace(setproctitle=lambda *a, **k: None)
        stubbed = True
    argv = ['main.py'] + bash_argv(ns.num_workers) + list(ns.extra)
    old_argv = sys.argv
    sys.argv = argv
    os.chdir(workdir)
    sys.path.insert(0, ns.official_dir)
    try:
        import main as official_main  # parses argv, seeds 42, set_detect_anomaly(True)
    finally:
        sys.argv = old_argv
    for mod in ('main', 'utils', 'models', 'trainers', 'generators'):  # official top-level names
        m = sys.modules.get(mod)
        where = [m.__file__] if getattr(m, '__file__', None) else list(getattr(m, '__path__', []))
        if not where or any(not os.path.abspath(w).startswith(ns.official_dir + os.sep) for w in where):
            raise RuntimeError(f'module {mod} was imported from {where}, not from {ns.official_dir}')

    real_trainer = official_main.CDSRTrainer

    def _capture(*a, **k):
        raise _Captured(real_trainer(*a, **k))

    official_main.Logger, official_main.CDSRTrainer = _QuietLogManager, _capture
    try:
        official_main.main()
    except _Captured as c:
        trainer = c.trainer
    else:  # pragma: no cover
        raise RuntimeError('official main() returned without constructing CDSRTrainer')
    finally:
        official_main.CDSRTrainer = real_trainer
    return trainer, official_main.args, argv, stubbed


def median_skip_warmup(xs):
    xs = xs[1:] if len(xs) > 2 else xs
    return statistics.median(xs)


def train_step(trainer, batch):
    """The body of the official SeqTrainer._train_one_epoch loop (without tqdm / loss sums)."""
    batch = tuple(t.to(trainer.device) for t in batch)
    inputs = trainer._prepare_train_inputs(batch)
    loss = trainer.model(**inputs)
    loss.backward()
    value = loss.item()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return value


def run(ns: argparse.Namespace) -> dict:
    own_tmp = None
    if ns.workdir:
        workdir = os.path.abspath(ns.workdir)
        os.makedirs(workdir, exist_ok=True)
    else:
        own_tmp = tempfile.TemporaryDirectory(prefix='llm4cdsr_official_')
        workdir = own_tmp.name
    t0 = time.perf_counter()
    cmd = [sys.executable, os.path.abspath(__file__), '--prepare_only', workdir, '--dataset', ns.dataset] + \
          (['--random_features'] if ns.random_features else []) + \
          (['--build_features'] if ns.build_features else [])
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f'preparing the official input failed:\n{r.stderr[-3000:]}')
    prep = json.loads(r.stdout.strip().splitlines()[-1])
    convert_s = time.perf_counter() - t0

    import torch

    old_cwd = os.getcwd()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            torch.set_num_threads(ns.threads)
            t0 = time.perf_counter()
            trainer, args, argv, stubbed = official_trainer(ns, workdir)
            setup_s = time.perf_counter() - t0
            if ns.no_detect_anomaly:
                torch.autograd.set_detect_anomaly(False)
            anomaly = torch.is_anomaly_enabled()
            res = _measure(ns, trainer, torch)
    finally:
        os.chdir(old_cwd)
        if own_tmp is not None:
            own_tmp.cleanup()

    model = trainer.model
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    res.update({
        'peak_rss_mb': rss_kb / 1024.0,
        'n_params': sum(p.numel() for p in model.parameters()),
        'n_params_trainable': sum(p.numel() for p in model.parameters() if p.requires_grad),
        'threads': ns.threads,
        'torch_num_threads': torch.get_num_threads(),
        'detect_anomaly': anomaly,
        'features': prep['features'],
        'setup_s': setup_s,
        'convert_s': convert_s,
        'batch_size': args.train_batch_size,
        'max_len': args.max_len,
        'num_workers': args.num_workers,
        'device': str(trainer.device),
        'official_argv': argv[1:],
        'official_dir': '<official checkout>',           # no machine's path in a committed result
        'setproctitle_stubbed': stubbed,
        'torch': torch.__version__,
        'input': prep,
    })
    return res


def _measure(ns, trainer, torch) -> dict:
    loader = trainer.train_loader
    batches_per_epoch = len(loader)
    n = batches_per_epoch if ns.epoch else ns.batches
    trainer.model.train()
    it = iter(loader)
    batch_s, load_s, cpu_s, losses = [], [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        t1, c1 = time.perf_counter(), time.process_time()
        loss = train_step(trainer, batch)
        t2, c2 = time.perf_counter(), time.process_time()
        load_s.append(t1 - t0)
        batch_s.append(t2 - t1)
        cpu_s.append(c2 - c1)
        losses.append(loss)
        print(f'[official_llm4cdsr] batch {len(batch_s)}/{batches_per_epoch}: load {t1 - t0:.3f}s '
              f'step {t2 - t1:.3f}s loss {loss:.4f}')
    flops = None
    if ns.count_flops:           # one more, untimed batch under torch's flop counter
        from torch.utils.flop_counter import FlopCounterMode
        try:
            batch = next(it)
        except StopIteration:
            batch = next(iter(loader))
        with FlopCounterMode(display=False) as fc:
            train_step(trainer, batch)
        flops = fc.get_total_flops()
    del it
    bm = median_skip_warmup(batch_s)
    tot = median_skip_warmup([a + b for a, b in zip(batch_s, load_s)])
    res = {
        'batch_s_median': bm,
        'batch_s_all': batch_s,
        'step_cpu_s_median': median_skip_warmup(cpu_s),
        'load_s_median': median_skip_warmup(load_s),
        'load_s_all': load_s,
        'step_plus_load_s_median': tot,
        'batches_timed': n,
        'batches_per_epoch': batches_per_epoch,
        'epoch_s_est': batches_per_epoch * tot,
        'epoch_s_est_compute_only': batches_per_epoch * bm,
        'epoch_est_method': 'batches_per_epoch x median(load + step) of the timed batches '
                            '(first left out as warm-up when more than 2)',
        'warmup_skipped': len(batch_s) > 2,
        'losses': losses,
        'step_gflop': flops / 1e9 if flops else None,
    }
    if ns.epoch:
        res.update({'epoch_s_measured': sum(batch_s) + sum(load_s), 'epoch_compute_s': sum(batch_s),
                    'epoch_load_s': sum(load_s)})
    if ns.epoch_load:            # one full pass of the training DataLoader alone (no training step)
        t0 = time.perf_counter()
        for _ in loader:
            pass
        res['epoch_load_only_s'] = time.perf_counter() - t0
    if ns.official_epoch:
        t0 = time.perf_counter()
        trainer._train_one_epoch(0)
        res['official_train_one_epoch_s'] = time.perf_counter() - t0
    if ns.eval:
        t0 = time.perf_counter()
        metrics = trainer.eval(epoch=0)
        res['eval_s'] = time.perf_counter() - t0
        res['eval_batches_per_pass'] = len(trainer.valid_loader)
        res['eval_metrics'] = {k: float(metrics[k]) for k in ('NDCG@10', 'HR@10') if k in metrics}
    elif ns.eval_batches > 0:
        res.update(eval_batches(trainer, ns.eval_batches, torch))
    else:
        res['eval_s'] = None
    return res


def eval_batches(trainer, k, torch) -> dict:
    """K batches of the official CDSRTrainer.eval loop body (loading, predict, double argsort),
    extrapolated to the whole validation pass (mean x batches; the metric report is left out)."""
    trainer.model.eval()
    loader = trainer.valid_loader
    n = len(loader)
    k = min(k, n)
    per_batch = []
    it = iter(loader)
    for _ in range(k):
        t0 = time.perf_counter()
        batch = next(it)
        batch = tuple(t.to(trainer.device) for t in batch)
        inputs = trainer._prepare_eval_inputs(batch)
        with torch.no_grad():
            inputs['item_indices'] = torch.cat([inputs['pos'].unsqueeze(1), inputs['neg']], dim=1)
            inputs['item_indicesA'] = torch.cat([inputs['posA'].unsqueeze(1), inputs['negA']], dim=1)
            inputs['item_indicesB'] = torch.cat([inputs['posB'].unsqueeze(1), inputs['negB']], dim=1)
            pred_logits = -trainer.model.predict(**inputs)
            torch.argsort(torch.argsort(pred_logits))[:, 0]
        per_batch.append(time.perf_counter() - t0)
    del it
    trainer.model.train()
    return {'eval_s': statistics.mean(per_batch) * n, 'eval_extrapolated': k != n,
            'eval_batches_timed': k, 'eval_batches_per_pass': n, 'eval_batch_s_all': per_batch}


def main(argv=None) -> None:
    ns = parse_cli(argv)
    if ns.prepare_only:
        with contextlib.redirect_stdout(sys.stderr):
            out = prepare_official_input(os.path.abspath(ns.prepare_only), ns.dataset, ns.random_features,
                                         build_features=ns.build_features)
        print(json.dumps(out))
        return
    res = run(ns)
    line = json.dumps(res)
    print(line)
    if ns.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(ns.json_out)), exist_ok=True)
        with open(ns.json_out, 'w') as f:
            f.write(json.dumps(res, indent=2) + '\n')


if __name__ == '__main__':
    main()
