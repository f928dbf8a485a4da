"""The committed results hold no machine's absolute path: a result file records paths relative to
the repository (``_portable`` in the benchmarks, the run stores' relative paths) or a placeholder
such as ``<official checkout>``, so a reader's clone says nothing about the machine that ran it."""

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / 'results'
#: an absolute path under a directory that names a machine's layout (not a URL: no ':' or '/' before it)
MACHINE_PATH = re.compile(r'(?:^|[^A-Za-z0-9_.:/-])(/(?:tmp|home|work|root|Users|mnt|scratch|data|private|var)/[^\s"\'`|)]*)')


def machine_paths(text):
    return MACHINE_PATH.findall(text)


def test_the_pattern_finds_machine_paths_and_leaves_urls_and_relative_paths():
    assert machine_paths('"official_dir": "/tmp/llm4cdsr_official"') == ['/tmp/llm4cdsr_official']
    assert machine_paths('ran in /home/ann/ortho (see `/work/x/y.json`)') == ['/home/ann/ortho', '/work/x/y.json']
    assert machine_paths('https://github.com/work/tmp/x and results/sweeps/a/runs/b and ../shared/data/x') == []


@pytest.mark.skipif(not RESULTS.is_dir(), reason='no results folder')
def test_no_committed_result_file_holds_a_machine_path():
    found = []
    for p in sorted(RESULTS.rglob('*')):
        if p.is_file() and p.suffix in ('.json', '.md', '.csv', '.yaml', '.yml', '.txt'):
            for hit in machine_paths(p.read_text(errors='replace')):
                found.append(f'{p.relative_to(RESULTS.parent)}: {hit}')
    assert not found, 'machine paths in results:\n' + '\n'.join(found[:20])
