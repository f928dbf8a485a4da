"""
recbole_ortho.analysis.provenance
#################################

Which code produced a result, as the analysis needs it.

A result written since provenance was recorded carries ``provenance`` (see
:mod:`recbole_ortho.utils.provenance`: ``git_commit``, ``git_dirty``, versions, device, ...). A
result from before has none; :func:`reconstruct` rebuilds the one thing git can tell about it:
the commit that added the result file (``git log --diff-filter=A``) was made after the run, so
the code that produced it is at best that commit's parent tree. The reconstructed block is
``{'reconstructed': True, 'git_commit': <parent>, 'git_dirty': None, 'added_in': <commit>,
'package_version': <__version__ at the parent>}``; :func:`backfill` writes it into the committed
run stores (``python -m recbole_ortho.analysis.backfill results/sweeps``), changing no other key
and keeping the result files' formatting.

Two runs are paired (compared seed by seed) only when their code is the same
(:class:`CodeComparer`): the same commit, or two commits between which
``git diff --quiet A B -- recbole_ortho/`` sees no change of the package code (inside a git
checkout holding both; elsewhere only equal commits count as the same). A run whose commit is
unknown cannot be compared and is paired with a flag; uncommitted changes (``git_dirty``) are
shown as ``+dirty`` and do not block pairing (what changed is not recorded).
"""

import json
import os
import re
import subprocess

#: the paths whose changes make two commits' code differ (relative to the checkout)
CODE_PATHS = ('recbole_ortho/',)


class MixedCommitsError(ValueError):
    """Runs to be paired were produced by different package code (pass ``allow_mixed_commits``)."""


def _git(repo, *args, check=True):
    out = subprocess.run(['git', '-C', os.fspath(repo), *args], capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise OSError(f'git {" ".join(args)}: {out.stderr.strip()}')
    return out


def git_root(path):
    """The top folder of the git checkout holding ``path``, None outside one (or without git)."""
    path = os.fspath(path)
    d = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        out = _git(d, 'rev-parse', '--show-toplevel', check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def added_in(path, repo):
    """The commit that first added the file ``path`` (``git log --diff-filter=A``), None if git
    does not know it."""
    rel = os.path.relpath(os.path.abspath(path), repo)
    lines = _git(repo, 'log', '--diff-filter=A', '--format=%H', '--', rel).stdout.split()
    return lines[-1] if lines else None


def _version_at(repo, commit):
    out = _git(repo, 'show', f'{commit}:recbole_ortho/__init__.py', check=False)
    m = re.search(r"""__version__\s*=\s*['"]([^'"]+)['"]""", out.stdout) if out.returncode == 0 else None
    return m.group(1) if m else None


def reconstruct(path, repo=None):
    """The reconstructed provenance of a committed result file without one (see the module
    docstring), None when git does not know the file."""
    repo = repo or git_root(path)
    if repo is None:
        return None
    commit = added_in(path, repo)
    if commit is None:
        return None
    parents = _git(repo, 'rev-list', '--parents', '-n', '1', commit).stdout.split()[1:]
    parent = parents[0] if parents else 'unknown'
    return {'reconstructed': True, 'git_commit': parent, 'git_dirty': None, 'added_in': commit,
            'package_version': _version_at(repo, parent) if parents else None}


def _dump(payload):
    """A result file's text as ``run_recbole_ortho`` writes it (``json.dump(indent=2)``, keys in
    insertion order, no final newline)."""
    return json.dumps(payload, indent=2)


def backfill(root, repo=None, dry_run=False):
    """Add the reconstructed ``provenance`` to every ``result.json`` under ``root`` (e.g.
    ``results/sweeps``) that has none and that git knows; the block is appended as the last key,
    nothing else changes (a file whose text is not exactly :func:`_dump` of its content is left
    alone and reported). Returns ``{'written': [...], 'skipped': {path: why}}``."""
    repo = repo or git_root(root)
    if repo is None:
        raise OSError(f'{root}: not inside a git checkout; nothing to reconstruct from')
    written, skipped = [], {}
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name != 'result.json':
                continue
            path = os.path.join(dirpath, name)
            with open(path) as f:
                text = f.read()
            payload = json.loads(text)
            if 'provenance' in payload:
                skipped[path] = 'has provenance'
                continue
            if _dump(payload) != text:
                skipped[path] = 'formatting differs from json.dump(indent=2); not rewritten'
                continue
            prov = reconstruct(path, repo)
            if prov is None:
                skipped[path] = 'not committed'
                continue
            payload['provenance'] = prov
            if not dry_run:
                tmp = os.path.join(dirpath, f'.{name}.tmp')
                with open(tmp, 'w') as f:
                    f.write(_dump(payload))
                os.replace(tmp, path)
            written.append(path)
    return {'written': written, 'skipped': skipped}


def commit_label(prov):
    """A short label of a run's code: ``1a2b3c4``, ``1a2b3c4+dirty``, ``1a2b3c4*`` (reconstructed:
    the parent of the commit that added the result), ``unknown``."""
    if not prov or not prov.get('git_commit') or prov.get('git_commit') == 'unknown':
        return 'unknown'
    label = prov['git_commit'][:7]
    if prov.get('git_dirty'):
        label += '+dirty'
    if prov.get('reconstructed'):
        label += '*'
    return label


class CodeComparer:
    """Whether two runs' code is the same (see the module docstring); ``repo``: the git checkout
    to ask (None: only equal commits are the same). Answers are cached."""

    def __init__(self, repo=None):
        self.repo = repo
        self._cache = {}

    def same_commit_code(self, a, b):
        """True when commits ``a`` and ``b`` have the same package code, False when they differ or
        git cannot tell (no checkout, a commit it does not have)."""
        if a == b:
            return True
        key = tuple(sorted((a, b)))
        if key not in self._cache:
            same = False
            if self.repo is not None:
                try:
                    out = _git(self.repo, 'diff', '--quiet', a, b, '--', *CODE_PATHS, check=False)
                except (OSError, subprocess.SubprocessError):
                    out = None
                if out is not None and out.returncode not in (0, 1):     # 1: they differ; else git cannot tell
                    raise MixedCommitsError(
                        f'git cannot compare commits {a[:7]} and {b[:7]} in {self.repo} (not in its history: a '
                        f'shallow clone? `git fetch --unshallow` brings them): {out.stderr.strip()[:200]}')
                same = out is not None and out.returncode == 0
            self._cache[key] = same
        return self._cache[key]

    def same_code(self, pa, pb):
        """For two provenance blocks: True (same code), False (different code, or commits git
        cannot compare), None (a commit is unknown)."""
        ca, cb = (p.get('git_commit') if p else None for p in (pa, pb))
        if not ca or not cb or 'unknown' in (ca, cb):
            return None
        return self.same_commit_code(ca, cb)
