"""The code behind results: reconstructed provenance of committed results, the backfill (one key
added, formatting kept), when two runs count as the same code, and the report refusing to pair
runs of different code unless allow_mixed_commits."""

import json
import os
import shutil
import subprocess

import pytest

from recbole_ortho.analysis.provenance import (CodeComparer, MixedCommitsError, backfill, commit_label, git_root,
                                               reconstruct)

pytestmark = pytest.mark.skipif(shutil.which('git') is None, reason='needs git')


def _git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t', GIT_COMMITTER_NAME='t',
               GIT_COMMITTER_EMAIL='t@t', GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_SYSTEM=os.devnull)
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def _commit(repo, files, message):
    for rel, text in files.items():
        p = repo / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        _git(repo, 'add', rel)
    _git(repo, 'commit', '-q', '-m', message)
    return _git(repo, 'rev-parse', 'HEAD')


def _result(ndcg):
    dom = {d: {'n_users': 10, 'ndcg@10': ndcg - (0.0 if d == 'A' else 0.05)} for d in ('A', 'B')}
    return {'model': 'X', 'test': dom, 'valid': dom, 'n_params': 100, 'epochs_run': 2, 'wall_time_s': 1.0, 'trace': []}


@pytest.fixture
def repo(tmp_path):
    """A git checkout: c1 the package (version 9.9), c2 adds a result, c3 changes only the README, c4
    changes the package code."""
    r = tmp_path / 'repo'
    r.mkdir()
    _git(r, 'init', '-q')
    c1 = _commit(r, {'recbole_ortho/__init__.py': "__version__ = '9.9'\n", 'README.md': 'a\n'}, 'package')
    text = json.dumps(_result(0.2), indent=2)                       # as run_recbole_ortho writes it
    c2 = _commit(r, {'results/sweeps/s/runs/r1/result.json': text}, 'a result')
    c3 = _commit(r, {'README.md': 'b\n'}, 'docs')
    c4 = _commit(r, {'recbole_ortho/__init__.py': "__version__ = '9.9'\nX = 1\n"}, 'code')
    return r, (c1, c2, c3, c4), text


def test_reconstruct_is_the_parent_of_the_commit_that_added_the_result(repo):
    r, (c1, c2, c3, c4), _ = repo
    path = r / 'results' / 'sweeps' / 's' / 'runs' / 'r1' / 'result.json'
    assert os.path.realpath(git_root(path)) == os.path.realpath(r)
    p = reconstruct(path)
    assert p == {'reconstructed': True, 'git_commit': c1, 'git_dirty': None, 'added_in': c2, 'package_version': '9.9'}
    untracked = r / 'results' / 'new.json'
    untracked.write_text('{}')
    assert reconstruct(untracked) is None
    assert git_root(r.parent) is None or os.path.realpath(git_root(r.parent)) != os.path.realpath(r)


def test_backfill_adds_only_the_provenance_and_keeps_the_formatting(repo):
    r, (c1, c2, _, _), text = repo
    path = r / 'results' / 'sweeps' / 's' / 'runs' / 'r1' / 'result.json'
    other = r / 'results' / 'sweeps' / 's' / 'runs' / 'r2' / 'result.json'
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps(_result(0.3), indent=1, sort_keys=True))     # not the result format: left alone
    _git(r, 'add', str(other.relative_to(r)))
    _git(r, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'other')
    out = backfill(r / 'results' / 'sweeps', dry_run=True)
    assert out['written'] == [str(path)] and path.read_text() == text            # dry run writes nothing
    out = backfill(r / 'results' / 'sweeps')
    assert out['written'] == [str(path)] and 'formatting' in out['skipped'][str(other)]
    new = path.read_text()
    payload = json.loads(new)
    assert list(payload)[-1] == 'provenance' and payload['provenance']['git_commit'] == c1
    assert {k: v for k, v in payload.items() if k != 'provenance'} == json.loads(text)
    assert new == json.dumps(payload, indent=2) and new.startswith(text[:-2])      # the old text, one key appended
    assert backfill(r / 'results' / 'sweeps')['written'] == []                     # a second run changes nothing


def test_same_code_by_commit_and_package_diff(repo):
    r, (c1, c2, c3, c4), _ = repo
    code = CodeComparer(str(r))
    assert code.same_commit_code(c1, c1)
    assert code.same_commit_code(c1, c3)                   # only README and results changed in between
    assert not code.same_commit_code(c3, c4)               # recbole_ortho/ changed
    with pytest.raises(MixedCommitsError, match='shallow clone'):   # a commit git does not have: it says so
        code.same_commit_code(c1, '0' * 40)
    assert CodeComparer(None).same_commit_code(c1, c1) and not CodeComparer(None).same_commit_code(c1, c3)
    assert code.same_code({'git_commit': c1}, {'git_commit': c3, 'git_dirty': True}) is True
    assert code.same_code({'git_commit': 'unknown'}, {'git_commit': c3}) is None
    assert code.same_code(None, {'git_commit': c3}) is None


def test_commit_label():
    assert commit_label({'git_commit': 'abcdef123456', 'git_dirty': False}) == 'abcdef1'
    assert commit_label({'git_commit': 'abcdef123456', 'git_dirty': True}) == 'abcdef1+dirty'
    assert commit_label({'git_commit': 'abcdef123456', 'reconstructed': True, 'git_dirty': None}) == 'abcdef1*'
    assert commit_label(None) == 'unknown' and commit_label({'git_commit': 'unknown'}) == 'unknown'


def _store_in(repo_dir, commits):
    """A run store inside the checkout: ABXI and ABXI_GCA, seeds 1-3, the GCA run of seed s made by
    commits[s - 1] (every base run by the first)."""
    from recbole_ortho.sweep.store import RunStore, write_json
    store = RunStore(repo_dir / 'sweeps' / 'sw')
    for seed in (1, 2, 3):
        for model, variant, ndcg, commit in (('ABXI', 'base', 0.18 + 0.01 * seed, commits[0]),
                                             ('ABXI_GCA', 'gca_positions=[0]', 0.2 + 0.003 * seed ** 2, commits[seed - 1])):
            rid = f'{model}-s{seed}'
            d = store.path(rid)
            os.makedirs(d)
            res = dict(_result(ndcg), model=model, provenance={'git_commit': commit, 'git_dirty': False})
            write_json(os.path.join(d, 'spec.json'), {'run_id': rid, 'model': model, 'dataset': 'fk', 'seed': seed,
                                                       'settings': {}, 'variant': variant})
            write_json(os.path.join(d, 'result.json'), res)
    return store.root


def test_report_refuses_runs_of_different_code_unless_allowed(repo, tmp_path):
    from recbole_ortho.analysis import write_report
    r, (c1, c2, c3, c4), _ = repo
    same = _store_in(r / 'a', [c1, c3, c1])                  # c1 and c3 have the same package code
    text = open(write_report(same, str(tmp_path / 'same.md'))).read()
    assert 'allow_mixed_commits' in text and 'different (allowed)' not in text
    gca_row = next(line for line in text.splitlines() if line.startswith('| ABXI_GCA | gca_positions=[0] | 3 |'))
    assert gca_row.endswith(f"| {', '.join(sorted([c1[:7], c3[:7]]))} |")     # the commits behind the GCA row
    mixed = _store_in(r / 'b', [c1, c4, c1])                 # seed 2's GCA run: other code
    with pytest.raises(MixedCommitsError, match=rf'seed 2: {c4[:7]} / {c1[:7]}'):
        write_report(mixed, str(tmp_path / 'mixed.md'))
    assert not (tmp_path / 'mixed.md').exists()
    text = open(write_report(mixed, str(tmp_path / 'mixed.md'), allow_mixed_commits=True)).read()
    assert 'allow_mixed_commits=True' in text and 'different (allowed)' in text
    assert f'{c4[:7]} / {c1[:7]}' in text
