"""Tiny fake config / dataset / batches to build and run this package's models in unit tests
without the dataset layer."""

import numpy as np
import torch
from recbole.data.interaction import Interaction

BASE_KEYS = dict(USER_ID_FIELD='user_id', ITEM_ID_FIELD='item_id', LIST_SUFFIX='_list',
                 ITEM_LIST_LENGTH_FIELD='item_length', NEG_PREFIX='neg_', MAX_ITEM_LIST_LENGTH=12,
                 device='cpu')


class FakeConfig(dict):
    """dict with RecBole Config's lookup semantics (a missing key reads as None)."""

    def __getitem__(self, key):
        return self.get(key)


def make_config(**model_keys):
    cfg = FakeConfig(BASE_KEYS)
    cfg.update(model_keys)
    return cfg


class FakeDataset:
    """``n_b`` B items with ids ``1..n_b`` then ``n_a`` A items (the id layout of
    :mod:`recbole_ortho.data`: B's range first), padding id 0."""

    def __init__(self, n_a=30, n_b=40, a_first=False):
        self.n_items = 1 + n_a + n_b
        if a_first:
            self.domain_range = {0: (1, 1 + n_a), 1: (1 + n_a, self.n_items)}
        else:
            self.domain_range = {1: (1, 1 + n_b), 0: (1 + n_b, self.n_items)}
        self.item_domain = np.full(self.n_items, -1, dtype=np.int8)
        for d, (lo, hi) in self.domain_range.items():
            self.item_domain[lo:hi] = d

    def num(self, field):
        assert field == 'item_id'
        return self.n_items


def random_sequences(dataset, n_users, max_len, min_len=2, generator=None):
    """Random mixed sequences: list of 1-D LongTensors of lengths in [min_len, max_len + 1]."""
    g = generator or torch.Generator().manual_seed(0)
    seqs = []
    for _ in range(n_users):
        n = int(torch.randint(min_len, max_len + 2, (1,), generator=g))
        seqs.append(torch.randint(1, dataset.n_items, (n,), generator=g))
    return seqs


def train_batch(seqs, width):
    """Per-user training batch from full sequences (inputs = seq[:-1], targets = seq[1:]),
    right-padded to ``width``."""
    B = len(seqs)
    item_seq = torch.zeros(B, width, dtype=torch.long)
    target = torch.zeros(B, width, dtype=torch.long)
    lens = torch.zeros(B, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-(width + 1):]
        n = len(s) - 1
        item_seq[i, :n] = s[:-1]
        target[i, :n] = s[1:]
        lens[i] = n
    return Interaction({'user_id': torch.arange(B), 'item_id_list': item_seq, 'item_length': lens,
                        'target_id_list': target})


def eval_batch(seqs, width, dataset):
    """Evaluation batch: history = seq[:-1] (last ``width`` items), target = seq[-1]."""
    B = len(seqs)
    item_seq = torch.zeros(B, width, dtype=torch.long)
    lens = torch.zeros(B, dtype=torch.long)
    tgt = torch.zeros(B, dtype=torch.long)
    for i, s in enumerate(seqs):
        h = s[:-1][-width:]
        item_seq[i, :len(h)] = h
        lens[i] = len(h)
        tgt[i] = s[-1]
    dom = torch.as_tensor(dataset.item_domain, dtype=torch.long)[tgt]
    return Interaction({'user_id': torch.arange(B), 'item_id_list': item_seq, 'item_length': lens,
                        'item_id': tgt, 'domain_id': dom})
