"""The documentation: the mkdocs site builds strictly (a broken link fails it), the hook
``docs/_hooks/repo_files.py`` brings linked repository files into the site and fills
``json-table`` blocks from result files, and the README's relative links resolve.

The site builds run ``python -m mkdocs build --strict`` in a subprocess, on the repository's
``mkdocs.yml`` and on small projects written here; they are skipped when mkdocs is not installed."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HOOK = REPO / 'docs' / '_hooks' / 'repo_files.py'
needs_mkdocs = pytest.mark.skipif(importlib.util.find_spec('mkdocs') is None, reason='mkdocs is not installed')


def build(config, site):
    """``mkdocs build --strict`` of ``config`` into ``site``: (return code, output)."""
    out = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-f', str(config), '--site-dir',
                          str(site)], capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def project(root, pages, files=None, nav=None):
    """A small mkdocs project under ``root`` using the repository's hook: ``pages`` are written
    under docs/, ``files`` (path: text or bytes) anywhere in the project. Returns mkdocs.yml."""
    for rel, text in dict(pages).items():
        (root / 'docs' / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / 'docs' / rel).write_text(text)
    for rel, data in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data if isinstance(data, bytes) else data.encode())
    cfg = root / 'mkdocs.yml'
    cfg.write_text('site_name: t\ndocs_dir: docs\nhooks:\n  - ' + json.dumps(str(HOOK)) + '\n'
                   'validation:\n  absolute_links: warn\n  unrecognized_links: warn\n  anchors: warn\n'
                   + (('nav:\n' + ''.join(f'  - {p}\n' for p in nav)) if nav else ''))
    return cfg


PAGE = '# A results page\n\n![plot](page_plots/a.png)\n\n[back](../docs/index.md)\n'


@needs_mkdocs
def test_repository_site_builds_strictly(tmp_path):
    site = tmp_path / 'site'
    rc, out = build(REPO / 'mkdocs.yml', site)
    assert rc == 0, out[-3000:]
    # the results pages and their plots, linked from docs/results.md, are part of the site
    assert (site / 'results' / 'food_kitchen' / 'index.html').is_file()
    plots = sorted(p.name for p in (REPO / 'results' / 'food_kitchen_abxi_short_plots').glob('*.png'))
    assert plots and all((site / 'results' / 'food_kitchen_abxi_short_plots' / p).is_file() for p in plots)
    assert 'href="../results/food_kitchen/"' in (site / 'running' / 'index.html').read_text()
    # the speed tables are the result files' numbers
    speed = json.loads((REPO / 'results' / 'speed_food_kitchen_cpu.json').read_text())
    html = (site / 'speed' / 'index.html').read_text()
    rows = [re.findall(r'<td[^>]*>(.*?)</td>', r) for r in re.findall(r'<tr>(.*?)</tr>', html, re.S)]
    for run in speed['runs']:
        assert [run['model'], f"{run['n_params']:,}", f"{run['step_s_median']:.3f}"] == next(
            r[:3] for r in rows if r and r[0] == run['model'])
    assert [f"{speed['speedup_epoch_vs_official']:.1f}", f"{speed['speedup_eval_vs_official']:.1f}"] in \
        [r[:2] for r in rows]
    assert 'json-table' not in html


@needs_mkdocs
def test_broken_link_fails_the_build(tmp_path):
    cfg = project(tmp_path, {'index.md': '# Home\n\n[a page](other.md)\n', 'other.md': '# Other\n'})
    rc, out = build(cfg, tmp_path / 'site')
    assert rc == 0, out[-2000:]
    (tmp_path / 'docs' / 'index.md').write_text('# Home\n\n[a page](missing.md)\n')
    rc, out = build(cfg, tmp_path / 'site')
    assert rc != 0 and "contains a link 'missing.md'" in out


@needs_mkdocs
def test_missing_anchor_and_nav_page_fail_the_build(tmp_path):
    cfg = project(tmp_path, {'index.md': '# Home\n\n[there](other.md#no-such-part)\n', 'other.md': '# Other\n'})
    rc, out = build(cfg, tmp_path / 'site')
    assert rc != 0 and 'no-such-part' in out
    cfg = project(tmp_path, {'index.md': '# Home\n\n[there](other.md#other)\n'}, nav=['index.md', 'gone.md'])
    rc, out = build(cfg, tmp_path / 'site')
    assert rc != 0 and 'gone.md' in out


@needs_mkdocs
def test_links_to_repository_files_are_brought_into_the_site(tmp_path):
    cfg = project(tmp_path, {'index.md': '# Home\n\n[results](../results/page.md)\n',
                             'sub/deep.md': '# Deep\n\n[results](../../results/page.md) and [data](../../results/r.json)\n'},
                  files={'results/page.md': PAGE, 'results/page_plots/a.png': b'\x89PNG fake', 'results/r.json': '{}'})
    site = tmp_path / 'site'
    rc, out = build(cfg, site)
    assert rc == 0, out[-2000:]
    assert (site / 'results' / 'page' / 'index.html').is_file()
    assert (site / 'results' / 'page_plots' / 'a.png').read_bytes() == b'\x89PNG fake'
    assert (site / 'results' / 'r.json').read_text() == '{}'
    assert 'href="results/page/"' in (site / 'index.html').read_text()
    deep = (site / 'sub' / 'deep' / 'index.html').read_text()
    assert 'href="../../results/page/"' in deep and 'href="../../results/r.json"' in deep
    page = (site / 'results' / 'page' / 'index.html').read_text()
    assert 'src="../page_plots/a.png"' in page and 'href="../.."' in page     # its link back into docs/


@needs_mkdocs
def test_broken_link_to_a_repository_file_fails_the_build(tmp_path):
    cfg = project(tmp_path, {'index.md': '# Home\n\n[results](../results/nope.md)\n'},
                  files={'results/page.md': PAGE, 'results/page_plots/a.png': b'x'})
    rc, out = build(cfg, tmp_path / 'site')
    assert rc != 0 and 'results/nope.md' in out
    # a plot that a linked results page shows, missing, fails it too
    (tmp_path / 'docs' / 'index.md').write_text('# Home\n\n[results](../results/page.md)\n')
    (tmp_path / 'results' / 'page_plots' / 'a.png').unlink()
    rc, out = build(cfg, tmp_path / 'site')
    assert rc != 0 and 'page_plots/a.png' in out


@needs_mkdocs
def test_links_in_code_are_not_links(tmp_path):
    text = ('# Home\n\nWrite `[the page](../results/nope.md)` like this:\n\n'
            '```\n[the page](../results/nope.md)\n<!-- json-table\nfile: nope.json\n-->\n```\n')
    cfg = project(tmp_path, {'index.md': text})
    site = tmp_path / 'site'
    rc, out = build(cfg, site)
    assert rc == 0, out[-2000:]
    html = (site / 'index.html').read_text()
    assert html.count('[the page](../results/nope.md)') == 2 and 'json-table' in html
    assert not (site / 'results').exists()


TABLE_JSON = {'runs': [{'model': 'A', 'n': 1234567, 't': 0.12345, 'extra': 3},
                       {'name': 'B', 'n': 89, 't': 2.0, 'extra': None}],
              'best': {'x': {'v': 0.5, 'per': [1.0, 2.25]}, 'y': {'v': 1.25, 'per': [3.0]}},
              'ratio': 12.75}


def table_project(tmp_path, block):
    return project(tmp_path, {'index.md': '# Home\n\n' + block + '\nNumbers: [file](../r/t.json)\n'},
                   files={'r/t.json': json.dumps(TABLE_JSON)})


@needs_mkdocs
def test_json_table_renders_the_file(tmp_path):
    block = ('<!-- json-table\nfile: ../r/t.json\nrows: runs\ncolumns:\n  model: model|name\n  n: n:,\n'
             '  time (s): t:.2f\n  extra: extra?\n  missing: nothing?\n-->\n\n'
             '<!-- json-table\nfile: ../r/t.json\nrows: best\ncolumns:\n  key: _key\n  v: v:.1%\n  per: per:.1f\n-->\n\n'
             '<!-- json-table\nfile: ../r/t.json\ncolumns:\n  ratio: ratio:.1f\n-->\n')
    site = tmp_path / 'site'
    rc, out = build(table_project(tmp_path, block), site)
    assert rc == 0, out[-2000:]
    cells = [re.findall(r'<td[^>]*>(.*?)</td>', row) for row in
             re.findall(r'<tr>(.*?)</tr>', (site / 'index.html').read_text(), re.S)]
    cells = [c for c in cells if c and '<kbd>' not in c[0]]       # not the theme's keyboard help
    assert cells == [['A', '1,234,567', '0.12', '3', '–'], ['B', '89', '2.00', '–', '–'],
                     ['x', '50.0%', '1.0, 2.2'], ['y', '125.0%', '3.0'], ['12.8']]


@pytest.mark.parametrize('block, says', [
    ('<!-- json-table\nfile: ../r/t.json\nrows: runs\ncolumns:\n  n: missing_key\n-->\n', "'missing_key'"),
    ('<!-- json-table\nfile: ../r/t.json\nrows: nowhere\ncolumns:\n  n: n\n-->\n', "'nowhere'"),
    ('<!-- json-table\nfile: ../r/gone.json\nrows: runs\ncolumns:\n  n: n\n-->\n', 'gone.json'),
    ('<!-- json-table\nfile: ../r/t.json\nrows: runs\ncolumns:\n  model: model:.3f\n-->\n', 'index.md'),
])
@needs_mkdocs
def test_bad_json_table_fails_the_build(tmp_path, block, says):
    rc, out = build(table_project(tmp_path, block), tmp_path / 'site')
    assert rc != 0 and 'json-table in index.md' in out and says in out, out[-2000:]


def test_readme_links_resolve():
    """Every relative link of README.md (GitHub renders it; mkdocs does not see it) names a file."""
    text = (REPO / 'README.md').read_text()
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    links = re.findall(r'\]\(([^)\s]+)\)', text)
    rel = [u.split('#')[0] for u in links if not re.match(r'[a-z]+:', u) and not u.startswith('#')]
    assert len(rel) > 20
    missing = sorted({u for u in rel if not (REPO / u).exists()})
    assert not missing, missing


def test_make_test_builds_the_docs_strictly():
    """`make test` (what CI runs) builds the site with --strict and without --quiet, which would
    silence the warnings that --strict counts."""
    rule = (REPO / 'Makefile').read_text().split('\ntest:', 1)[1].split('\n\n', 1)[0]
    lines = [line for line in rule.splitlines() if 'mkdocs build' in line]
    assert len(lines) == 1 and '--strict' in lines[0] and '--quiet' not in lines[0] and ' -q' not in lines[0]
    assert '/site/' in (REPO / '.gitignore').read_text().splitlines()


def table_misalignments(text):
    """``(line, cells, header cells)`` for each markdown table row whose count of unescaped ``|``
    differs from its table's header: a bare ``|`` in a cell (``|r|``) shifts every later column."""
    out, lines, i = [], text.split('\n'), 0
    while i < len(lines):
        if not lines[i].startswith('|'):
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith('|'):
            j += 1
        counts = [len(re.findall(r'(?<!\\)\|', line)) for line in lines[i:j]]
        out += [(i + k + 1, c, counts[0]) for k, c in enumerate(counts) if c != counts[0]]
        i = j
    return out


def test_table_check_finds_a_bare_pipe():
    assert table_misalignments('| a | b |\n|---|---|\n| 1 | 2 |') == []
    assert table_misalignments('| a | detectable |r| |\n|---|---|\n| 1 | 2 |') == [(2, 3, 5), (3, 3, 5)]
    assert table_misalignments('| a | detectable \\|r\\| |\n|---|---|\n| 1 | 2 |') == []


@pytest.mark.parametrize('page', sorted(str(p.relative_to(REPO)) for p in
                                        [REPO / 'README.md', *(REPO / 'results').glob('*.md'),
                                         *(REPO / 'docs').rglob('*.md')]))
def test_every_table_in_the_pages_has_aligned_columns(page):
    assert table_misalignments((REPO / page).read_text(encoding='utf-8')) == [], page
