"""
recbole_ortho.utils.case_study
##############################

Top-k recommendations of a trained model for chosen users in one domain, as RecBole's
``recbole.utils.case_study`` (``full_sort_scores``, ``full_sort_topk``) for two domains.

What is scored, and what "history" means, is what the evaluator's ``full`` protocol
(:func:`recbole_ortho.evaluator.evaluator.full_rank`) does for the **test split**:

- the model's input is the user's row of ``test_data`` (an
  :class:`~recbole_ortho.data.dataloader.EvalDataLoader`): the items before the test target,
  at most ``MAX_ITEM_LIST_LENGTH`` of them (``item_id_list``); the test target itself is not
  given to the model;
- the scores are the model's own ``full_sort_predict`` with the row's ``domain_id`` set to the
  domain asked for (the family's models project the state for the target's domain);
- the candidates are the items of that domain (its half-open id range
  ``dataset.domain_range[d]``), minus, with ``exclude_history`` (the default), the items of the
  input history: exactly the items the evaluator removes from the candidates of that row.

(The evaluator keeps the test target a candidate even when it repeats a history item; a
recommendation cannot know the target, so :func:`full_sort_topk` does not.)

A user "has no history in the domain" when that input history holds no item of the domain (an
A-only or B-only user, e.g. after ``overlap_ratio``, or one whose items of the domain all lie
outside the window): the model then ranks the domain's items without any evidence from it (its
domain thread is empty). That is refused unless ``allow_cold_start=True``. Users with fewer than
3 interactions are not in ``test_data`` (leave-one-out needs 3) and are refused too.
"""

import numpy as np
import torch
from recbole.data.interaction import Interaction

DOMAINS = ('A', 'B')


class CaseStudyError(ValueError):
    """A request the case study cannot answer (a user without a test row, no history in the
    domain, an invalid ``k`` or domain); the message names the user or the setting."""


def domain_index(domain):
    """``0`` for ``'A'`` / ``0``, ``1`` for ``'B'`` / ``1``; anything else raises :class:`CaseStudyError`."""
    if isinstance(domain, str) and domain.upper() in DOMAINS:
        return DOMAINS.index(domain.upper())
    if not isinstance(domain, (bool, np.bool_)) and isinstance(domain, (int, np.integer)) and int(domain) in (0, 1):
        return int(domain)
    raise CaseStudyError(f'domain: [{domain}] must be A or B (0 or 1)')


def _fields(config):
    iid = config['ITEM_ID_FIELD']
    return config['USER_ID_FIELD'], iid, iid + config['LIST_SUFFIX'], config['ITEM_LIST_LENGTH_FIELD']


def _user_label(dataset, uid):
    try:
        return dataset.id2token(dataset.uid_field, int(uid))
    except (ValueError, AttributeError):
        return f'id {int(uid)}'


def test_rows(uid_series, test_data):
    """Row positions of the users ``uid_series`` (internal ids) in ``test_data``. A user without a
    test row raises :class:`CaseStudyError` naming its token."""
    uid_field = test_data.config['USER_ID_FIELD']
    users = test_data.tensors[uid_field].numpy()
    data = test_data.data
    position = np.full(int(data.n_users), -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    uids = np.asarray(uid_series, dtype=np.int64).reshape(-1)
    for u in uids:
        if not 0 <= u < len(position):
            raise CaseStudyError(f'user id [{int(u)}] is not in dataset [{data.dataset_name}] '
                                 f'(ids 0..{len(position) - 1})')
        if position[u] < 0:
            n = int(data.seq_len[u])
            raise CaseStudyError(f'user [{_user_label(data, u)}] has {n} interaction{"s" * (n != 1)}: fewer than '
                                 f'the 3 that leave-one-out needs, so it has no test row to recommend from')
    return position[uids]


def history_of(uid_series, test_data):
    """``(item_seq [n, L], item_len [n])``: the input history of each user's test row (what the
    model reads and what ``exclude_history`` removes), 0-padded on the right."""
    _, _, seq, ln = _fields(test_data.config)
    rows = torch.as_tensor(test_rows(uid_series, test_data))
    return test_data.tensors[seq][rows], test_data.tensors[ln][rows]


def _check_cold(uids, item_seq, item_len, d, data):
    dom = torch.as_tensor(data.item_domain, dtype=torch.long)[item_seq]
    has = ((dom == d) & (item_seq > 0)).any(1)
    if not bool(has.all()):
        i = int((~has).nonzero()[0, 0])
        n = int(item_len[i])
        raise CaseStudyError(
            f'user [{_user_label(data, uids[i])}] has no history in domain {DOMAINS[d]}: none of the {n} items '
            f'the model reads for it (those before its test item) is in domain {DOMAINS[d]}; '
            f'allow_cold_start=True (--allow_cold_start) ranks domain {DOMAINS[d]} for it anyway')


@torch.no_grad()
def full_sort_scores(uid_series, model, test_data, domain, exclude_history=True, allow_cold_start=False,
                     device=None):
    """Scores ``[len(uid_series), n_items]`` of every item for each user's test row, as the
    evaluator's full protocol sees them: the model's ``full_sort_predict`` for ``domain``, with
    ``-inf`` outside the domain's items and, with ``exclude_history``, on the history items.

    Args:
        uid_series: internal user ids (``dataset.token2id(uid_field, tokens)``).
        model: a trained model (e.g. from :func:`recbole_ortho.quick_start.load_data_and_model`).
        test_data: its ``test_data`` loader.
        domain: ``'A'`` or ``'B'`` (or 0 / 1).
        exclude_history (bool): remove the items of the input history from the candidates.
        allow_cold_start (bool): score users with no history in ``domain`` (see module docstring).
        device: where to score (default: the model's device). The result is on the CPU.
    """
    d = domain_index(domain)
    data = test_data.data
    uid_field, iid, seq, ln = _fields(test_data.config)
    uids = np.asarray(uid_series, dtype=np.int64).reshape(-1)
    rows = torch.as_tensor(test_rows(uids, test_data))
    if not allow_cold_start:
        _check_cold(uids, test_data.tensors[seq][rows], test_data.tensors[ln][rows], d, data)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    lo, hi = data.domain_range[d]
    model.eval()
    out = []
    for s in range(0, len(rows), test_data.batch_size):
        r = rows[s:s + test_data.batch_size]
        fields = {k: v[r] for k, v in test_data.tensors.items() if k not in (iid, 'candidates')}
        fields['domain_id'] = torch.full((len(r),), d, dtype=torch.long)     # rank the asked domain
        batch = Interaction(fields).to(device)
        scores = model.full_sort_predict(batch)
        if scores.dim() == 1:
            scores = scores.view(len(r), -1)
        scores = scores.float().clone()
        valid = torch.zeros_like(scores, dtype=torch.bool)
        valid[:, lo:hi] = True
        if exclude_history:
            valid.scatter_(1, batch[seq], False)          # as full_rank: the items of the input history
        out.append(scores.masked_fill(~valid, -np.inf).cpu())
    if not out:
        return torch.zeros(0, int(data.n_items))
    return torch.cat(out)


def full_sort_topk(uid_series, model, test_data, k, domain, exclude_history=True, allow_cold_start=False,
                   device=None):
    """The top-``k`` items of ``domain`` for each user, ranked over all of the domain's items
    (minus the user's history by default), as RecBole's ``full_sort_topk``.

    Returns:
        tuple: ``(topk_scores [n, k], topk_index [n, k])`` on the CPU, ``topk_index`` the internal
        item ids (map them to tokens with :func:`item_tokens`), best first.
    """
    d = domain_index(domain)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CaseStudyError(f'k: [{k}] must be an integer >= 1')
    scores = full_sort_scores(uid_series, model, test_data, d, exclude_history, allow_cold_start, device)
    lo, hi = test_data.data.domain_range[d]
    n_cand = torch.isfinite(scores[:, lo:hi]).sum(1)
    if len(n_cand) and int(n_cand.min()) < k:
        i = int(n_cand.argmin())
        uid = np.asarray(uid_series).reshape(-1)[i]
        raise CaseStudyError(f'k: [{k}] is above the {int(n_cand[i])} candidate items of domain {DOMAINS[d]} for '
                             f'user [{_user_label(test_data.data, uid)}]' + (' (its history excluded)' if exclude_history else ''))
    top_scores, top_index = torch.topk(scores[:, lo:hi], int(k), dim=1)
    return top_scores, top_index + lo


def item_tokens(dataset, item_ids):
    """The original item tokens of internal item ids (any shape), as ``dataset.id2token``."""
    return dataset.id2token(dataset.iid_field, item_ids)
