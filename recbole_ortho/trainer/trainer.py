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
"""

import math
import os
from logging import getLogger
from time import perf_counter

import numpy as np
import torch
from recbole.utils import early_stopping, get_local_time, set_color
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from recbole_ortho.data.dataset import files_signature
from recbole_ortho.evaluator import GROUPS, CDSREvaluator
from recbole_ortho.utils.utils import load_checkpoint


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and the batch."""


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
        self.evaluator = CDSREvaluator(config, data)
        self.optimizer = self._build_optimizer()
        self.digits = config['metric_decimal_place']
        os.makedirs(config['checkpoint_dir'], exist_ok=True)
        stamp = get_local_time()
        self.saved_model_file = os.path.join(config['checkpoint_dir'], f"{config['model']}-{config['dataset']}-{stamp}.pth")
        self.tensorboard = SummaryWriter(os.path.join(config['tensorboard_dir'], f"{config['model']}-{config['dataset']}-{stamp}"))
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
        self.plateau = None
        self._base_lr = config['learning_rate']
        if config['lr_scheduler'] == 'plateau':
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode='max', factor=config['lr_plateau_factor'], patience=config['lr_plateau_patience'])
        elif config['lr_scheduler'] not in (None, 'none'):
            raise ValueError(f"lr_scheduler: [{config['lr_scheduler']}] must be 'plateau' or 'none'")

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

    def _save_checkpoint(self, epoch):
        if self._data_fingerprint is None:      # what load_data_and_model checks the data against
            self._data_fingerprint = files_signature(self.config)
        state = {'config': self.config, 'epoch': epoch, 'best_valid_score': self.best_valid_score,
                 'state_dict': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                 'data_fingerprint': self._data_fingerprint}
        tmp = self.saved_model_file + '.tmp'
        torch.save(state, tmp)
        os.replace(tmp, self.saved_model_file)

    def _log_result(self, tag, result, step):
        for d in ('A', 'B', 'all') + GROUPS:
            for k, v in result.get(d, {}).items():
                if k != 'n_users' and not (isinstance(v, float) and math.isnan(v)):
                    self.tensorboard.add_scalar(f'{tag}/{d}/{k}', v, step)

    def fit(self, train_data, valid_data, saved=True):
        """Train with early stopping on the validation score; returns ``(best_score, best_result)``."""
        saved = saved and self.config['save_model']
        budget = self.config['time_budget_s']
        t_fit = perf_counter()
        for epoch in range(self.epochs):
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
                    if saved:
                        self._save_checkpoint(epoch)
                        self._best_saved = True
                        self.logger.info(set_color('Saving current best', 'blue') + f': {self.saved_model_file}')
                    else:
                        self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.trace.append(entry)
                if stop:
                    self.stop_reason = 'early_stopping'
                    self.logger.info(f'Finished training, best eval result in epoch {self.best_epoch}')
                    break
            else:
                self.trace.append(entry)
            if over:
                self.stopped_by_budget = True
                self.stop_reason = 'time_budget'
                self.logger.info(set_color(f'time_budget_s={budget} reached after epoch {epoch}', 'yellow'))
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
