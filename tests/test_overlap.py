"""Non-overlapped users: the overlap-ratio split (``overlap_ratio``), the per-group metrics
(``A/overlap``, ``A/non_overlap``, ...), the C2DSR negatives (``eval_neg_exclude: target``) and
run ids that new off-by-default options leave unchanged."""

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_ortho.config import Config, ConfigError
from recbole_ortho.data import EvalDataLoader, create_dataset
from recbole_ortho.data.dataset import CACHE_VERSION, _cache_key, files_signature, overlap_split
from recbole_ortho.evaluator import GROUPS, CDSREvaluator, aggregate_by_domain, aggregate_by_group, compute_metrics
from tests.conftest import HEADER, tiny_config_dict


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['pytest'])


# ---------------------------------------------------------------------------------------------
# A hand-made dataset: 8 users in both domains (o0..o7), 2 in A only (a_0, a_1), 1 in B only (b_0)
SEQS = {
    **{f'o{k}': ['a0', 'b0', 'a1', 'b1', 'a2', 'b2'] for k in range(6)},      # 3 A + 3 B
    'o6': ['a3', 'a4', 'a5', 'a6', 'b3'],                                    # 4 A + 1 B
    'o7': ['b4', 'b5', 'b6', 'a7', 'b7', 'b8'],                              # 1 A + 5 B
    'a_0': ['a8', 'a9', 'a10', 'a11'],
    'a_1': ['a12', 'a13', 'a14'],
    'b_0': ['b9', 'b10', 'b11', 'b12', 'b13'],
}
BOTH = [f'o{k}' for k in range(8)]


def write_hand_dataset(root, name='ovl'):
    rows = {'A': [], 'B': []}
    for u, seq in SEQS.items():
        for k, it in enumerate(seq):
            rows['A' if it[0] == 'a' else 'B'].append(f'{u}\t{it}\t{1000 + k}\t{k}\n')
    for dom in 'AB':
        d = Path(root) / name / f'{name}_{dom}'
        d.mkdir(parents=True, exist_ok=True)
        (d / f'{name}_{dom}.inter').write_text(HEADER + ''.join(rows[dom]))


@pytest.fixture
def hand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_hand_dataset(tmp_path / 'data')
    return tiny_config_dict(tmp_path, eval_neg_num=5)


def make(cfg, model='SASRec', dataset='ovl', **over):
    return Config(model=model, dataset=dataset, config_dict=dict(cfg, **over))


def seq_of(data, tok):
    u = list(data.user_tokens).index(tok)
    return data.item_tokens[data.seq_items[data.seq_offsets[u]:data.seq_offsets[u + 1]]].tolist()


N_A_ONLY, N_B_ONLY = 2, 1        # items: a0..a14 (15 in A), b0..b13 (14 in B)


# ---------------------------------------------------------------------------------------------
def test_overlap_split_counts_off_0_half_1(hand):
    off = create_dataset(make(hand))
    st = off.overlap_stats
    assert st['overlap_ratio'] is None and st['before'] == st['after']
    assert st['after'] == {'users': 11, 'overlapped': 8, 'A_only': N_A_ONLY, 'B_only': N_B_ONLY,
                           'inters_A': 3 * 6 + 4 + 1 + 7, 'inters_B': 3 * 6 + 1 + 5 + 5}
    assert st['evaluated'] == {'overlapped': 8, 'A_only': N_A_ONLY, 'B_only': N_B_ONLY}
    assert {t for t, o in zip(off.user_tokens, off.overlapped) if o} == set(BOTH)

    zero = create_dataset(make(hand, overlap_ratio=0))
    s0 = zero.overlap_stats
    assert s0['before'] == st['after'] and s0['kept_both'] == 0 and s0['to_A_only'] + s0['to_B_only'] == 8
    assert s0['after']['overlapped'] == 0
    assert s0['after']['A_only'] == N_A_ONLY + s0['to_A_only'] and s0['after']['B_only'] == N_B_ONLY + s0['to_B_only']
    assert not zero.overlapped.any()

    half = create_dataset(make(hand, overlap_ratio=0.5))
    s5 = half.overlap_stats
    assert s5['kept_both'] == 4 and s5['to_A_only'] + s5['to_B_only'] == 4 and s5['after']['overlapped'] == 4
    assert s5['after']['users'] == 11                 # nobody disappears: a user keeps a domain it has
    removed_a = removed_b = 0
    for u in SEQS:
        got, orig = seq_of(half, u), SEQS[u]
        if u not in BOTH:                             # already single-domain: untouched
            assert got == orig
        elif half.overlapped[list(half.user_tokens).index(u)]:
            assert got == orig                        # kept both domains
        else:                                         # one domain, in the original order
            dom = got[0][0]
            assert got == [x for x in orig if x[0] == dom]
            removed_a += sum(x[0] == 'a' for x in orig) * (dom == 'b')
            removed_b += sum(x[0] == 'b' for x in orig) * (dom == 'a')
    assert (s5['removed_inters_A'], s5['removed_inters_B']) == (removed_a, removed_b)
    assert s5['after']['inters_A'] == st['after']['inters_A'] - removed_a
    # users left with fewer than 3 interactions are not evaluated (o6 keeping B, o7 keeping A)
    short = {u for u in ('o6', 'o7') if len(seq_of(half, u)) < 3}
    ev_tokens = set(np.asarray(half.user_tokens)[half.eval_users])
    assert not short & ev_tokens and set(SEQS) - short <= ev_tokens

    one = create_dataset(make(hand, overlap_ratio=1.0))       # ratio 1 = the data as prepared
    assert one.overlap_stats['kept_both'] == 8 and one.overlap_stats['after'] == st['after']
    for k in ('seq_items', 'seq_offsets', 'eval_users', 'valid_neg', 'test_neg'):
        assert np.array_equal(getattr(one, k), getattr(off, k)), k


def test_overlap_split_seeded_reproducible_and_cached(hand, tmp_path):
    a = create_dataset(make(hand, overlap_ratio=0.5))
    files = sorted((tmp_path / 'cache').glob('ovl-*.npz'))
    assert len(files) == 1
    again = create_dataset(make(hand, overlap_ratio=0.5, seed=7, cache_dir=''))   # rebuilt, another training seed
    assert np.array_equal(a.seq_items, again.seq_items) and np.array_equal(a.test_neg, again.test_neg)
    cached = create_dataset(make(hand, overlap_ratio=0.5))                        # from the cache: same stats
    assert cached.overlap_stats == a.overlap_stats and np.array_equal(cached.overlapped, a.overlapped)
    assert len(sorted((tmp_path / 'cache').glob('ovl-*.npz'))) == 1
    other = [create_dataset(make(hand, overlap_ratio=0.5, eval_seed=s, cache_dir='')) for s in (1, 2, 3)]
    assert any(not np.array_equal(o.overlapped, a.overlapped) for o in other)   # the split follows eval_seed
    # cache keys: the default is the key from before the options existed; each setting has its own
    cfg = make(hand)
    keys = ['dataset', 'eval_protocol', 'eval_neg_num', 'eval_seed', 'USER_ID_FIELD', 'ITEM_ID_FIELD',
            'TIME_FIELD', 'SEQ_INDEX_FIELD']
    legacy = {k: cfg[k] for k in keys}
    legacy['files'], legacy['version'] = files_signature(cfg), CACHE_VERSION
    assert _cache_key(cfg) == hashlib.sha1(json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()[:16]
    ks = {_cache_key(make(hand, **o)) for o in ({}, {'overlap_ratio': 0.5}, {'overlap_ratio': 0.25},
                                                 {'overlap_ratio': 0}, {'eval_neg_exclude': 'target'})}
    assert len(ks) == 5
    assert _cache_key(make(hand, overlap_ratio=1)) == _cache_key(make(hand, overlap_ratio=1.0))
    assert _cache_key(make(hand, eval_neg_exclude='history')) == _cache_key(cfg)


def test_overlap_split_function_hand_checked():
    # users 0, 1, 2 in both domains, 3 in A only; ratio 1/3 -> exactly one keeps both
    user = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3])
    dom = np.array([0, 1, 0, 0, 1, 1, 0, 0, 0])
    keep, info = overlap_split(user, dom, 4, 1 / 3, 2020)
    assert info['kept_both'] == 1 and info['to_A_only'] + info['to_B_only'] == 2
    assert keep[user == 3].all()
    kept_dom = {u: set(dom[(user == u) & keep].tolist()) for u in range(4)}
    assert sorted(len(kept_dom[u]) for u in range(3)) == [1, 1, 2]
    assert all(kept_dom[u] for u in range(4))                    # nobody loses everything
    keep2, info2 = overlap_split(user, dom, 4, 1 / 3, 2020)
    assert np.array_equal(keep, keep2) and info == info2
    assert overlap_split(user, dom, 4, 0.0, 1)[1]['kept_both'] == 0
    assert overlap_split(user, dom, 4, 1.0, 1)[0].all()


@pytest.mark.parametrize('value', [-0.1, 1.5, 'half', True, [0.5]])
def test_bad_overlap_ratio_names_the_key(hand, value):
    with pytest.raises(ConfigError, match='overlap_ratio'):
        create_dataset(make(hand, overlap_ratio=value))


def test_bad_eval_neg_exclude_names_the_key(hand):
    with pytest.raises(ConfigError, match='eval_neg_exclude'):
        create_dataset(make(hand, eval_neg_exclude='items'))


# ---------------------------------------------------------------------------------------------
def test_c2dsr_negatives_exclude_only_the_target(hand):
    cfg = dict(hand, eval_neg_num=8)
    hist = create_dataset(make(cfg))
    targ = create_dataset(make(cfg, eval_neg_exclude='target'))
    assert np.array_equal(hist.seq_items, targ.seq_items)
    some_history = False
    for data, only_target in ((hist, False), (targ, True)):
        config = make(cfg, eval_neg_exclude='target' if only_target else 'history')
        for phase in ('valid', 'test'):
            t = EvalDataLoader(config, data, phase).tensors
            for k, u in enumerate(t['user_id'].tolist()):
                cand = t['candidates'][k].numpy()
                target, neg = cand[0], cand[1:]
                own = set(data.seq_items[data.seq_offsets[u]:data.seq_offsets[u + 1]].tolist())
                assert target not in set(neg.tolist())
                assert len(set(neg.tolist())) == len(neg)
                assert (data.item_domain[neg] == data.item_domain[target]).all()
                if only_target:
                    some_history |= bool((own - {int(target)}) & set(neg.tolist()))
                else:
                    assert not own & set(neg.tolist())
    assert some_history       # with 8 of 13-14 items drawn, some user's other items are among them


# ---------------------------------------------------------------------------------------------
def test_groups_by_hand():
    # 6 users: domain, overlapped, rank of the target among 4 negatives
    domain = np.array([0, 0, 0, 1, 1, 1])
    ovl = np.array([1, 0, 1, 1, 0, 0])
    rank = torch.tensor([1, 2, 4, 1, 5, 3])
    vals = {k: v.numpy() for k, v in compute_metrics(['mrr', 'hit@2'], rank, torch.full((6,), 4)).items()}
    g = aggregate_by_group(vals, domain, ovl)
    assert set(g) == set(GROUPS)
    assert g['A/overlap']['n_users'] == 2 and g['A/overlap']['mrr'] == pytest.approx((1 + 1 / 4) / 2)
    assert g['A/non_overlap']['n_users'] == 1 and g['A/non_overlap']['hit@2'] == 1.0
    assert g['B/overlap']['n_users'] == 1 and g['B/overlap']['mrr'] == 1.0
    assert g['B/non_overlap']['mrr'] == pytest.approx((1 / 5 + 1 / 3) / 2) and g['B/non_overlap']['hit@2'] == 0.0
    assert g['all/overlap']['n_users'] == 3 and g['all/non_overlap']['n_users'] == 3
    assert g['all/overlap']['mrr'] == pytest.approx((1 + 1 / 4 + 1) / 3)
    # each group = the plain per-domain aggregate of its subset
    for name, m in (('overlap', ovl == 1), ('non_overlap', ovl == 0)):
        sub = aggregate_by_domain({k: v[m] for k, v in vals.items()}, domain[m])
        for d in ('A', 'B', 'all'):
            assert g[f'{d}/{name}'] == sub[d]
    # nobody non-overlapped (Food-Kitchen as prepared): n_users 0 and NaN, the overlap group = the domain
    g1 = aggregate_by_group(vals, domain, np.ones(6, dtype=bool))
    assert g1['A/non_overlap']['n_users'] == 0 and math.isnan(g1['A/non_overlap']['mrr'])
    assert g1['all/overlap'] == aggregate_by_domain(vals, domain)['all']


class _Scorer(torch.nn.Module):
    """Scores item i as ``-i`` (so the rank of a target = 1 + candidates with a smaller id)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def full_sort_predict(self, batch):
        n = int(batch['candidates'].max()) + 1
        return -torch.arange(n, dtype=torch.float).repeat(batch['item_id'].size(0), 1)


def test_evaluator_groups_on_real_loader_equal_metrics_of_the_subset(hand):
    config = make(hand, overlap_ratio=0.5, metrics=['mrr', 'ndcg@10', 'hit@5'])
    data = create_dataset(config)
    loader = EvalDataLoader(config, data, 'test')
    t = loader.tensors
    assert np.array_equal(t['overlapped'].numpy().astype(bool), data.overlapped[t['user_id'].numpy()])
    ev = CDSREvaluator(config, data)
    res = ev.evaluate(_Scorer(), loader)
    assert set(GROUPS) <= set(res)
    cand = t['candidates']
    rank = 1 + (cand[:, 1:] < cand[:, :1]).sum(1)
    vals = {k: v.numpy() for k, v in compute_metrics(config['metrics'], rank, torch.full_like(rank, 5)).items()}
    dom = t['domain_id'].numpy()
    ovl = t['overlapped'].numpy().astype(bool)
    for d, dm in (('A', dom == 0), ('B', dom == 1), ('all', np.ones_like(ovl))):
        for g, gm in (('overlap', ovl), ('non_overlap', ~ovl)):
            m = dm & gm
            assert res[f'{d}/{g}']['n_users'] == int(m.sum())
            for k in config['metrics']:
                want = vals[k][m].mean() if m.any() else math.nan
                assert res[f'{d}/{g}'][k] == pytest.approx(want, nan_ok=True), (d, g, k)
        assert res[f'{d}/overlap']['n_users'] + res[f'{d}/non_overlap']['n_users'] == res[d]['n_users']
    # which users are non-overlapped: the single-domain ones, those of the data and the split's
    toks = np.asarray(data.user_tokens)[t['user_id'].numpy()]
    assert {'a_0', 'a_1', 'b_0'} <= set(toks[~ovl])
    assert len(set(toks[ovl])) == 4 and set(toks[ovl]) <= set(BOTH)
    assert ev.valid_score(res) == res['A']['mrr'] + res['B']['mrr']     # groups never select


# ---------------------------------------------------------------------------------------------
def test_run_ids_unchanged_by_neutral_options_and_changed_otherwise(tiny):
    from recbole_ortho.sweep import spec as sp
    _, cfg = tiny
    fingerprint = [['x', 1, 'y']]
    base = Config(model='ABXI', dataset='tiny', config_dict=cfg)
    assert base['overlap_ratio'] is None and base['eval_neg_exclude'] == 'history'     # the yaml defaults
    legacy = {k: base[k] for k in base.final_config_dict if k not in sp.ID_NEUTRAL}     # as before the keys existed
    assert all(k not in legacy for k in sp.ID_NEUTRAL)

    def rid(settings, base_cfg=base):
        return sp._run('ABXI', 'tiny', 2020, dict(settings), 'base', base_cfg, fingerprint).run_id

    settings = {'epochs': 3}
    assert rid(settings) == rid(settings, legacy)
    assert rid(dict(settings, overlap_ratio=None, eval_neg_exclude='history')) == rid(settings, legacy)
    # the same resolved payload as the id computation of before (hashed by hand)
    import recbole_ortho
    r = sp._run('ABXI', 'tiny', 2020, dict(settings), 'base', legacy, fingerprint)
    assert not set(sp.ID_NEUTRAL) & set(r.resolved)
    payload = json.dumps({'model': 'ABXI', 'dataset': 'tiny', 'seed': 2020, 'settings': r.resolved,
                          'data': fingerprint, 'version': recbole_ortho.__version__}, sort_keys=True, default=str)
    assert rid(settings) == f'ABXI-tiny-s2020-{hashlib.sha1(payload.encode()).hexdigest()[:12]}'
    # a non-neutral value is a different run
    ids = {rid(settings), rid(dict(settings, overlap_ratio=0.25)), rid(dict(settings, overlap_ratio=0.75)),
           rid(dict(settings, overlap_ratio=0)), rid(dict(settings, eval_neg_exclude='target'))}
    assert len(ids) == 5
    nondefault = Config(model='ABXI', dataset='tiny', config_dict=dict(cfg, overlap_ratio=0.25))   # from the config
    assert rid(settings, nondefault) == rid(dict(settings, overlap_ratio=0.25))


# ---------------------------------------------------------------------------------------------
SMALL = dict(embedding_size=16, inner_size=24, rd=2, ri=4, n_heads=2, n_neg_per_domain=8, epochs=1)


def test_end_to_end_abxi_reports_the_groups(tiny, tmp_path):
    from recbole_ortho.quick_start import run_recbole_ortho
    seqs, cfg = tiny
    out = tmp_path / 'r.json'
    res = run_recbole_ortho(model='ABXI', dataset='tiny', config_dict=dict(
        cfg, **SMALL, overlap_ratio=0.5, warmup_epochs=0, result_file=str(out)))
    saved = json.loads(out.read_text())
    for phase in ('valid', 'test'):
        r = res[phase]
        for d in ('A', 'B', 'all'):
            parts = r[f'{d}/overlap']['n_users'], r[f'{d}/non_overlap']['n_users']
            assert sum(parts) == r[d]['n_users']
            assert set(r[f'{d}/overlap']) == set(r[d])
        assert r['all/overlap']['n_users'] > 0 and r['all/non_overlap']['n_users'] > 0
        assert 0.0 <= r['all/non_overlap']['ndcg@10'] <= 1.0
        assert set(GROUPS) <= set(saved[phase])
    assert 'all/non_overlap' in res['trace'][-1]['valid']
    # the split took about half of the tiny fixture's users in both domains out of one domain
    data = create_dataset(Config(model='ABXI', dataset='tiny', config_dict=dict(cfg, overlap_ratio=0.5)))
    st = data.overlap_stats
    assert st['kept_both'] == math.floor(0.5 * st['before']['overlapped'] + 0.5)
    assert st['after']['overlapped'] == st['kept_both']       # only those that kept both are overlapped now
    assert res['test']['all/overlap']['n_users'] == st['evaluated']['overlapped']
    assert saved['data']['kept_both'] == st['kept_both'] and saved['data']['after'] == st['after']
    from recbole_ortho.trainer.trainer import results_table
    table = results_table(res['test'], ['ndcg@10'])
    assert '| A/non_overlap |' in table and '| all/overlap |' in table
    plain = {k: v for k, v in res['test'].items() if '/' not in k or k.split('/')[1] not in ('overlap', 'non_overlap')}
    plain.update({g: {'n_users': 0} for g in GROUPS})
    assert '/overlap' not in results_table(plain, ['ndcg@10'])      # all users overlapped: no group rows


LLM_SMALL = dict(hidden_size=16, inner_size=16, text_domain_dim=16, text_global_dim=24, epochs=1)


@pytest.mark.parametrize('model,small', [('ABXI_GCA', SMALL), ('LLM4CDSR', LLM_SMALL), ('LLM4CDSR_GCA', LLM_SMALL),
                                         ('SASRec', dict(hidden_size=16, inner_size=16, n_layers=1, n_heads=1,
                                                         epochs=1))])
def test_every_kind_of_model_runs_without_overlapped_users(tiny, model, small):
    """overlap_ratio 0: nobody keeps both domains (the hardest case for a cross-domain model);
    every model trains, and the overlap groups are empty (n_users 0, NaN)."""
    from recbole_ortho.quick_start import run_recbole_ortho
    _, cfg = tiny
    res = run_recbole_ortho(model=model, dataset='tiny', config_dict=dict(
        cfg, **small, overlap_ratio=0.0, warmup_epochs=0, save_model=False))
    t = res['test']
    assert t['all/overlap']['n_users'] == 0 and math.isnan(t['all/overlap']['mrr'])
    assert t['all/non_overlap']['n_users'] == t['all']['n_users'] > 0
    assert t['all/non_overlap']['mrr'] == pytest.approx(t['all']['mrr'])
    assert math.isfinite(res['best_valid_score'])


# ---------------------------------------------------------------------------------------------
def _store_with_groups(root, non_overlap_users):
    import os
    from recbole_ortho.sweep.store import RunStore, write_json
    store = RunStore(root)
    for seed in (1, 2):
        rid = f'ABXI-fk-s{seed}-0000'
        res = {'n_params': 100, 'epochs_run': 2, 'best_epoch': 1, 'wall_time_s': 5.0, 'trace': [], 'model': 'ABXI'}
        for phase in ('valid', 'test'):
            r = {d: {'n_users': 10, 'ndcg@10': 0.3, 'mrr': 0.2} for d in ('A', 'B', 'all')}
            for d in ('A', 'B', 'all'):
                r[f'{d}/overlap'] = {'n_users': 10 - non_overlap_users, 'ndcg@10': 0.4 + 0.1 * seed, 'mrr': 0.25}
                r[f'{d}/non_overlap'] = ({'n_users': non_overlap_users, 'ndcg@10': 0.1 * seed, 'mrr': 0.05}
                                         if non_overlap_users else {'n_users': 0, 'ndcg@10': None, 'mrr': None})
            res[phase] = r
        d = store.path(rid)
        os.makedirs(d)
        write_json(os.path.join(d, 'spec.json'), {'run_id': rid, 'model': 'ABXI', 'dataset': 'fk', 'seed': seed,
                                                   'settings': {}, 'variant': 'base'})
        write_json(os.path.join(d, 'result.json'), res)


def test_report_shows_the_groups_only_with_non_overlapped_users(tmp_path):
    from recbole_ortho.analysis import group_table, load_rows, write_report
    _store_with_groups(tmp_path / 'mixed', 4)
    e = group_table(load_rows(tmp_path / 'mixed'))[0]
    assert e['A/non_overlap_n_users'] == 4 and e['A/non_overlap_ndcg@10']['mean'] == pytest.approx(0.15)
    assert e['B/overlap_ndcg@10']['mean'] == pytest.approx(0.55)
    text = open(write_report(tmp_path / 'mixed', str(tmp_path / 'out' / 'mixed.md'))).read()
    assert '### Overlapped and non-overlapped users' in text
    assert '| ABXI | base | A | non-overlap: 4 | 2 |' in text and '| ABXI | base | B | overlap: 6 | 2 |' in text
    _store_with_groups(tmp_path / 'all_overlapped', 0)            # Food-Kitchen as prepared: no group table
    e = group_table(load_rows(tmp_path / 'all_overlapped'))[0]
    assert e['A/non_overlap_n_users'] == 0 and math.isnan(e['A/non_overlap_mrr']['mean'])
    text = open(write_report(tmp_path / 'all_overlapped', str(tmp_path / 'out' / 'all.md'))).read()
    assert 'non-overlap' not in text and '### Domain A' in text


def test_cdsrnp_without_overlapped_users_is_a_clear_error(tiny):
    """CDSRNP's support set is made of overlapped users: with overlap_ratio 0 there is none, and the
    run stops before training with an error that names the setting."""
    from recbole_ortho.quick_start import run_recbole_ortho
    from recbole_ortho.utils.errors import DataError
    _, cfg = tiny
    with pytest.raises(DataError, match=r'support set .*overlap_ratio \(0\.0\)'):
        run_recbole_ortho(model='CDSRNP', dataset='tiny', config_dict=dict(
            cfg, hidden_size=16, inner_size=16, overlap_ratio=0.0, save_model=False))
