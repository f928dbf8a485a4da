"""
recbole_ortho.model.abstract_recommender
########################################

Base class of the cross-domain sequential models of this package.
"""

import torch

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType


class CrossDomainSeqRecommender(SequentialRecommender):
    r"""Base class for cross-domain sequential recommenders (two domains A and B).

    It extends RecBole's :class:`SequentialRecommender` with what a CDSR model needs and
    with the batch format of :mod:`recbole_ortho.data`:

    Training batches (``train_format = 'per_user'``): one row per user,

    - ``item_id_list`` (``self.ITEM_SEQ``) ``[B, L]`` mixed input sequence, right-padded with 0
      (items at positions ``0 .. item_length-1``, oldest first),
    - ``item_length`` (``self.ITEM_SEQ_LEN``) ``[B]``,
    - ``target_id_list`` (``self.TARGET_SEQ``) ``[B, L]`` next-item target of every position
      (0 at padding), i.e. ``target[:, t]`` is the item that follows ``item_seq[:, t]``,
    - ``user_id`` ``[B]``.

    Evaluation batches: ``item_id_list``/``item_length`` (the history before the target) and
    ``item_id`` (the target), ``domain_id`` (0 = A, 1 = B, the target's domain).

    Dataset facts (from :class:`recbole_ortho.data.dataset.CrossDomainSeqDataset`):
    ``self.n_items`` (padding 0 included), ``self.item_domain`` (LongTensor ``[n_items]``,
    0 = A, 1 = B, -1 for padding), ``self.domain_range`` (``{0: (lo, hi), 1: (lo, hi)}``,
    half-open id ranges of each domain's items).

    Statistics: during evaluation a model may call :meth:`record_stat` with one value per
    user of the batch; the evaluator averages them per target domain and reports them beside
    the ranking metrics (e.g. ``ortho_cos_a@gca0``).
    """

    input_type = InputType.POINTWISE
    train_format = 'per_user'

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.TARGET_SEQ = 'target_id_list'
        self.DOMAIN_ID = 'domain_id'
        self.register_buffer('item_domain', torch.as_tensor(dataset.item_domain, dtype=torch.long), persistent=False)
        self.domain_range = {int(k): tuple(v) for k, v in dataset.domain_range.items()}
        self._stats = None

    # ---------------------------------------------------------------- statistics interface
    def start_recording(self):
        """Called by the evaluator before an evaluation pass."""
        self._stats = {}

    def stop_recording(self):
        """Called by the evaluator after an evaluation pass."""
        self._stats = None

    @property
    def recording(self):
        return self._stats is not None

    def record_stat(self, name, values):
        """Record one value per user of the current evaluation batch (``values``: ``[B]``)."""
        if self._stats is not None:
            self._stats[name] = values.detach().float()

    def pop_stats(self):
        """Return and clear the statistics recorded for the current batch."""
        if self._stats is None:
            return {}
        out, self._stats = self._stats, {}
        return out

    def epoch_trace(self):
        """Optional per-epoch training statistics (name -> float) logged by the trainer."""
        return {}
