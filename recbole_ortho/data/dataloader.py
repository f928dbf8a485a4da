"""
recbole_ortho.data.dataloader
#############################

Batches of :class:`~recbole.data.interaction.Interaction` built from a
:class:`~recbole_ortho.data.dataset.SeqData` with numpy/torch indexing only.

- :class:`TrainDataLoader` with ``train_format='per_user'`` (this package's models): one row per
  user carrying every position of the training part of its mixed sequence as a target, as the
  official ABXI and LLM4CDSR code train. With ``train_format='prefix'`` (RecBole's built-in
  sequential models, whose ``calculate_loss`` scores only the last position): RecBole's usual
  one-row-per-prefix augmentation of the same training part.
- :class:`EvalDataLoader`: one row per evaluated user, the history before the target, the
  target, its domain, whether the user is overlapped (``overlapped``: 1 when the user's data has
  both domains, :attr:`SeqData.overlapped`; the evaluator's per-group metrics) and, in the
  sampled protocol, the candidate list (target first).
"""

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_ortho.utils.arrays import right_padded


def _fields(config):
    iid = config['ITEM_ID_FIELD']
    return dict(uid=config['USER_ID_FIELD'], iid=iid, seq=iid + config['LIST_SUFFIX'],
                len=config['ITEM_LIST_LENGTH_FIELD'], tgt='target_id_list', dom='domain_id', cand='candidates',
                ovl='overlapped')


class _Loader:
    def __init__(self, config, data, tensors, batch_size, shuffle):
        self.config, self.data = config, data
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator()
        self.generator.manual_seed(int(config['seed']))

    def __len__(self):
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for s in range(0, self.n, self.batch_size):
            idx = order[s:s + self.batch_size]
            yield Interaction({k: v[idx] for k, v in self.tensors.items()})


class TrainDataLoader(_Loader):
    """Training batches (see module docstring). ``len(loader)`` is the number of batches."""

    def __init__(self, config, data, train_format='per_user', shuffle=True):
        f = _fields(config)
        L = int(config['MAX_ITEM_LIST_LENGTH'])
        users = data.eval_users
        start = data.seq_offsets[users]
        n_train = data.seq_len[users] - 2                   # training part: all but valid/test targets
        if train_format == 'per_user':
            keep = np.minimum(n_train, L + 1)               # last L+1 items: L inputs, L targets
            first = n_train - keep
            inp = right_padded(start, first, keep - 1, data.seq_items, L)
            tgt = right_padded(start, first + 1, keep - 1, data.seq_items, L)
            ok = keep >= 2
            tensors = {f['uid']: users[ok], f['seq']: inp[ok], f['len']: (keep - 1)[ok], f['tgt']: tgt[ok]}
        elif train_format == 'prefix':
            rows_per_user = np.maximum(n_train - 1, 0)      # targets at positions 1 .. n_train-1
            u_rep = np.repeat(np.arange(len(users)), rows_per_user)
            t = np.arange(int(rows_per_user.sum())) - np.repeat(np.cumsum(rows_per_user) - rows_per_user,
                                                                rows_per_user) + 1
            first = np.maximum(t - L, 0)
            seq = right_padded(start[u_rep], first, t - first, data.seq_items, L)
            tensors = {f['uid']: users[u_rep], f['seq']: seq, f['len']: t - first,
                       f['iid']: data.seq_items[start[u_rep] + t]}
        else:
            raise ValueError(f'train_format [{train_format}] must be per_user or prefix')
        tensors = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.long) for k, v in tensors.items()}
        super().__init__(config, data, tensors, config['train_batch_size'], shuffle)
        self.train_format = train_format


class EvalDataLoader(_Loader):
    """Evaluation batches of the ``phase`` ('valid' or 'test') targets."""

    def __init__(self, config, data, phase):
        f = _fields(config)
        L = int(config['MAX_ITEM_LIST_LENGTH'])
        back = {'valid': 2, 'test': 1}[phase]
        users = data.eval_users
        start = data.seq_offsets[users]
        hist_len = data.seq_len[users] - back
        keep = np.minimum(hist_len, L)
        seq = right_padded(start, hist_len - keep, keep, data.seq_items, L)
        target = data.seq_items[start + hist_len]
        tensors = {f['uid']: users, f['seq']: seq, f['len']: keep, f['iid']: target,
                   f['dom']: data.item_domain[target].astype(np.int64), f['ovl']: data.overlapped[users].astype(np.int64)}
        if config['eval_protocol'] == 'sampled':
            neg = data.valid_neg if phase == 'valid' else data.test_neg
            tensors[f['cand']] = np.concatenate([target[:, None], neg.astype(np.int64)], axis=1)
        tensors = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.long) for k, v in tensors.items()}
        super().__init__(config, data, tensors, config['eval_batch_size'], shuffle=False)
        self.phase = phase


def data_preparation(config, data, train_format='per_user'):
    """``(train_loader, valid_loader, test_loader)`` for a :class:`SeqData`."""
    return (TrainDataLoader(config, data, train_format=train_format),
            EvalDataLoader(config, data, 'valid'), EvalDataLoader(config, data, 'test'))
