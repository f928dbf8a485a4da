"""Generated results pages: the strict templating, ``--check`` / ``--regenerate`` on a fixture
registry, and the published Food-Kitchen pages against values computed here from the run stores."""

import glob
import json
import math
import os
import re
from pathlib import Path

import pytest

from recbole_ortho.analysis.pages import Registry, _block_body, check, load_sources, page_values, png_text, \
    regenerate, render_template_page
from recbole_ortho.analysis.report import PNG_HASH_KEY
from recbole_ortho.analysis.templating import Span, TemplateError, render

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- templating

def test_render_fills_placeholders_with_their_format():
    text = ('{# a comment line, dropped #}\n'
            'NDCG@10 {{ a.ndcg:.4f }}, params {{n:,}}, diff {{ d:+.3f }}, word {{ w }}\n'
            'range {{ s:.2f }}, one {{ same:.1f }}, signed {{ sd:+.3f }}, ints {{ si }}\n')
    out = render(text, {'a.ndcg': 0.07749, 'n': 1104004, 'd': -0.0046, 'w': 'lower', 's': Span([0.1, 0.0666]),
                        'same': Span([0.04, 0.041]), 'sd': Span([-0.004, 0.003]), 'si': Span([18, 19])})
    assert out == ('NDCG@10 0.0775, params 1,104,004, diff -0.005, word lower\n'
                   'range 0.07–0.10, one 0.0, signed -0.004 to +0.003, ints 18–19\n')


@pytest.mark.parametrize('values, message', [
    ({}, "tmpl.md:2: unknown key 'x.y'"),
    ({'x.y': float('nan')}, "tmpl.md:2: 'x.y' is nan"),
    ({'x.y': None}, "tmpl.md:2: 'x.y' is None"),
    ({'x.y': Span([0.1, float('inf')])}, "tmpl.md:2: 'x.y' is Span"),
    ({'x.y': 'text'}, "tmpl.md:2: 'x.y' = 'text' with format '.3f'"),
])
def test_render_is_strict_and_names_the_line(values, message):
    with pytest.raises(TemplateError) as e:
        render('first line\nvalue {{ x.y:.3f }}\n', values, source='tmpl.md')
    assert message in str(e.value)


def test_render_rejects_a_malformed_placeholder():
    with pytest.raises(TemplateError, match=r'tmpl.md:1: malformed'):
        render('value {{ x y }}\n', {'x': 1}, source='tmpl.md')


# ---------------------------------------------------------------- a fixture registry

def _fixture_store(sweep_dir):
    """ABXI (base), ABXI_GCA and ABXI matched to it, 3 seeds; NDCG@10 known per run."""
    from recbole_ortho.sweep.store import write_json
    ndcg = {}
    for seed in (1, 2, 3):
        for model, variant, n, base_ndcg, pm in (
                ('ABXI', 'base', 100, 0.18 + 0.01 * seed, None),
                ('ABXI_GCA', 'gca_positions=[0]', 120, {1: 0.20, 2: 0.22, 3: 0.21}[seed], None),
                ('ABXI', 'param-matched to ABXI_GCA (120 parameters)', 120, 0.19 + 0.005 * seed, 'ABXI_GCA')):
            rid = f'{model}-fk-s{seed}-{len(ndcg):04d}'
            ndcg[rid] = base_ndcg
            dom = {d: {'n_users': 10, 'ndcg@10': base_ndcg - (0.05 if d == 'B' else 0.0), 'mrr': base_ndcg / 2,
                       'auc': 0.7}
                   for d in ('A', 'B')}
            dom['all'] = dict(dom['A'])
            if model == 'ABXI_GCA':
                for d, x in (('A', 'a'), ('B', 'b'), ('all', 'a'), ('all', 'b')):
                    dom[d][f'ortho_cos_{x}@gca0'] = 0.1 * seed
                    dom[d][f'ortho_cos_{x}@gca0/paper'] = 0.05 * seed
                    dom[d][f'ortho_cos_{x}@gca0/median_abs'] = 0.07 * seed
            trace = [{'epoch': e, 'train_loss': 5.0 - e, 'train_time_s': 1.0, 'valid_score': 0.1 * e,
                      'valid': {'all': ({'ortho_cos_a@gca0/paper': 0.3 - 0.05 * e,
                                         'ortho_cos_b@gca0/paper': 0.3 - 0.05 * e} if model == 'ABXI_GCA' else {})}}
                     for e in range(3)]
            res = {'model': model, 'test': dom, 'valid': dom, 'n_params': n, 'epochs_run': 3, 'best_epoch': 2,
                   'wall_time_s': 60.0, 'trace': trace, 'config': {'epochs': 3, 'seed': seed}}
            if pm:
                res['param_match'] = {'target_model': pm, 'target_n_params': n, 'updates': {'inner_size': 9},
                                      'rel_diff': 0.0}
            d = os.path.join(sweep_dir, 'runs', rid)
            os.makedirs(d)
            write_json(os.path.join(d, 'spec.json'), {'run_id': rid, 'model': model, 'dataset': 'fk', 'seed': seed,
                                                       'settings': {}, 'variant': variant})
            write_json(os.path.join(d, 'result.json'), res)
    return ndcg


TEMPLATE = """{# fixture template #}
# Fixture page

ABXI_GCA reaches NDCG@10 {{ fk.ABXI_GCA.gca.A.ndcg10:.4f }} in A over {{ fk.ABXI_GCA.gca.n_runs }} seeds ({{ fk.seeds }}),
ABXI {{ fk.ABXI.base.A.ndcg10:.4f }}; parameters {{ fk.ABXI_GCA.gca.params:, }}.
"""

README = """# Fixture project

Some text a person wrote.

<!-- BEGIN generated: results -->
stale text
<!-- END generated: results -->

More text a person wrote.
"""


@pytest.fixture()
def fixture_repo(tmp_path):
    """``<tmp>/results/pages.yaml`` with one sweep page, one template page and a README block."""
    results = tmp_path / 'results'
    (results / 'templates').mkdir(parents=True)
    ndcg = _fixture_store(str(results / 'sweeps' / 'fk'))
    (results / 'templates' / 'page.md').write_text(TEMPLATE)
    (results / 'templates' / 'readme.md').write_text('Fixture ABXI_GCA: {{ fk.ABXI_GCA.gca.B.ndcg10:.4f }}.\n')
    (tmp_path / 'README.md').write_text(README)
    (results / 'pages.yaml').write_text(
        'sources:\n  fk: {sweep: sweeps/fk}\n'
        'sweep_pages:\n  - {page: fk_sweep.md, sweep: fk, title: "Fixture sweep, {{ fk.n_runs }} runs"}\n'
        'template_pages:\n  - {page: page.md, template: templates/page.md}\n'
        '  - {page: ../README.md, template: templates/readme.md, block: results}\n')
    return tmp_path, ndcg


def test_template_values_come_from_the_store(fixture_repo):
    root, ndcg = fixture_repo
    reg = Registry(root / 'results' / 'pages.yaml')
    values = page_values(load_sources(reg))
    text = render_template_page(reg, reg.template_pages[0], values)
    gca = [v for k, v in ndcg.items() if k.startswith('ABXI_GCA')]
    base = [v for k, v in ndcg.items() if k.startswith('ABXI-') and v in (0.19, 0.20, 0.21)]
    assert f'NDCG@10 {sum(gca) / 3:.4f} in A over 3 seeds (1, 2 and 3)' in text
    assert f'ABXI {sum(base) / 3:.4f}' in text and 'parameters 120.' in text
    assert text.startswith('# Fixture page\n\n<!-- generated from results/templates/page.md')
    # a key the stores do not give is an error naming the template line
    (root / 'results' / 'templates' / 'page.md').write_text(TEMPLATE + 'and {{ fk.ABXI_GCA.gca.A.ndcg5 }}\n')
    with pytest.raises(TemplateError, match=r"results/templates/page.md:6: unknown key 'fk.ABXI_GCA.gca.A.ndcg5'"):
        render_template_page(reg, reg.template_pages[0], values)


def test_check_and_regenerate(fixture_repo):
    root, _ = fixture_repo
    reg = str(root / 'results' / 'pages.yaml')
    ok, problems, pages = check(reg)
    assert not ok and any('fk_sweep.md: missing' in p for p in problems)
    regenerate(reg)
    ok, problems, pages = check(reg)
    assert ok, problems
    assert pages == ['fk_sweep.md', 'page.md', '../README.md']
    readme = (root / 'README.md').read_text()
    assert 'stale text' not in readme and 'Some text a person wrote.' in readme and 'More text a person wrote.' in readme
    assert 'Fixture ABXI_GCA: 0.1600.' in readme                  # mean of 0.15, 0.17, 0.16
    assert (root / 'results' / 'fk_sweep.md').read_text().startswith('# Fixture sweep, 9 runs\n')
    plots = root / 'results' / 'fk_sweep_plots'
    pngs = sorted(plots.glob('*.png'))
    assert len(pngs) == 3 and not list(root.glob('results/.pages-*'))
    for png in pngs:
        import hashlib
        assert png_text(png)[PNG_HASH_KEY] == hashlib.sha256(png.with_suffix('.csv').read_bytes()).hexdigest()

    # a number changed by hand in a page (template page, README block, sweep page) is caught
    page = root / 'results' / 'page.md'
    good = page.read_text()
    page.write_text(re.sub(r'NDCG@10 0\.(\d{4})', 'NDCG@10 0.9999', good))
    ok, problems, _ = check(reg)
    assert not ok and len(problems) == 1 and problems[0].startswith('results/page.md: differs')
    assert '-ABXI_GCA reaches NDCG@10 0.9999' in problems[0] and '+ABXI_GCA reaches NDCG@10 0.2100' in problems[0]
    page.write_text(good)
    (root / 'README.md').write_text(readme.replace('0.1600', '0.1601'))
    ok, problems, _ = check(reg)
    assert not ok and problems[0].startswith('README.md: differs')
    (root / 'README.md').write_text(readme.replace('Some text a person wrote.', 'Edited outside the block.'))
    assert check(reg)[0]                                           # text outside the block is free
    # plotted data changed, or a PNG drawn from other data
    csv = plots / 'ndcg10_vs_params_fk.csv'
    data = csv.read_bytes()
    csv.write_bytes(data.replace(b'0.2', b'0.3', 1))
    ok, problems, _ = check(reg)
    assert not ok and len(problems) == 1 and 'ndcg10_vs_params_fk.csv: plotted data differ' in problems[0]
    csv.write_bytes(data)
    png = plots / 'ndcg10_vs_params_fk.png'
    png_bytes = png.read_bytes()
    png.write_bytes((plots / 'training_curves_fk_ABXI_GCA.png').read_bytes())
    ok, problems, _ = check(reg)
    assert not ok and len(problems) == 1 and 'ndcg10_vs_params_fk.png: not drawn from these data' in problems[0]
    png.write_bytes(png_bytes)
    (plots / 'stray.png').write_bytes(pngs[0].read_bytes())
    ok, problems, _ = check(reg)
    assert not ok and any('files no page makes: stray.png' in p for p in problems)
    regenerate(reg)
    assert check(reg)[0] and not (plots / 'stray.png').exists()


def test_regenerate_writes_nothing_when_a_page_fails(fixture_repo):
    root, _ = fixture_repo
    reg = str(root / 'results' / 'pages.yaml')
    regenerate(reg)
    before = {p: p.read_bytes() for p in root.rglob('*') if p.is_file()}
    (root / 'results' / 'templates' / 'readme.md').write_text('{{ fk.nothing }}\n')
    (root / 'results' / 'sweeps' / 'fk' / 'runs' / 'ABXI-fk-s1-0000' / 'result.json').write_text(
        json.dumps(dict(json.loads((root / 'results' / 'sweeps' / 'fk' / 'runs' / 'ABXI-fk-s1-0000' /
                                    'result.json').read_text()), n_params=101)))
    with pytest.raises(TemplateError):
        regenerate(reg)
    after = {p: p.read_bytes() for p in root.rglob('*') if p.is_file() and 'templates' not in str(p) and
             'result.json' not in str(p)}
    assert after == {p: b for p, b in before.items() if 'templates' not in str(p) and 'result.json' not in str(p)}
    assert not list(root.glob('results/.pages-*'))


def test_command_line_check_exit_codes(fixture_repo, capsys):
    from recbole_ortho.analysis.__main__ import main
    root, _ = fixture_repo
    reg = str(root / 'results' / 'pages.yaml')
    assert main(['--regenerate', '--registry', reg]) == 0
    assert main(['--check', '--registry', reg]) == 0
    page = root / 'results' / 'page.md'
    page.write_text(page.read_text().replace('over 3 seeds', 'over 5 seeds'))
    assert main(['--check', '--registry', reg]) == 1
    err = capsys.readouterr().err
    assert 'results/page.md: differs' in err and '-ABXI_GCA reaches' in err and 'over 5 seeds' in err


# ---------------------------------------------------------------- the published pages

def _runs(sweep):
    out = []
    for f in sorted(glob.glob(str(REPO / 'results' / 'sweeps' / sweep / 'runs' / '*' / 'result.json'))):
        with open(f) as fh:
            res = json.load(fh)
        with open(os.path.join(os.path.dirname(f), 'spec.json')) as fh:
            out.append((json.load(fh), res))
    return out


@pytest.fixture(scope='module')
def published():
    """The generated food_kitchen page and README block of the real registry (values and templates
    only: no sweep page, no plot)."""
    reg = Registry(REPO / 'results' / 'pages.yaml')
    values = page_values(load_sources(reg))
    page = render_template_page(reg, reg.template_pages[0], values)
    readme = render_template_page(reg, reg.template_pages[1], values)
    return page, _block_body(readme, 'results')


def test_published_pages_carry_the_stores_numbers(published):
    page, readme = published
    # ABXI sweep: the base's inner_size and the param_match updates of the matched runs
    abxi = _runs('food_kitchen_abxi_short')
    base_inner = {r['config']['inner_size'] for s, r in abxi if s['variant'] == 'base'}
    assert len(base_inner) == 1
    matched = sorted({r['param_match']['updates']['inner_size'] for s, r in abxi if r.get('param_match')})
    assert f"`inner_size` {base_inner.pop():,} → {' and '.join(f'{m:,}' for m in matched)}:" in page
    # LLM4CDSR: the parameter-matched run's update, from its result.json
    for sweep in ('food_kitchen_llm4cdsr_short', 'food_kitchen_llm4cdsr_abxi_protocol'):
        (pm,) = [r for s, r in _runs(sweep) if r.get('param_match')]
        (base,) = [r for s, r in _runs(sweep) if s['model'] == 'LLM4CDSR' and not r.get('param_match')]
        key, to = next(iter(pm['param_match']['updates'].items()))
        assert f"`{key}` {base['config'][key]} → {to}: {pm['n_params']:,} vs" in page
    # best epochs as result.json has them (0-based) in every LLM4CDSR and CDSRNP row
    for sweep, label in (('food_kitchen_llm4cdsr_short', 'LLM4CDSR ('), ('food_kitchen_llm4cdsr_abxi_protocol', 'ABXI ('),
                         ('food_kitchen_cdsrnp_short', 'all overlapped'), ('food_kitchen_cdsrnp_overlap25', '% overlapped')):
        for spec, res in _runs(sweep):
            name = res['model'] + (f" (param-matched to {res['param_match']['target_model']})" if res.get('param_match') else '')
            rows = [line for line in page.splitlines() if line.startswith('| ') and label in line.split('|')[1]
                    and line.split('|')[2].strip() == name]
            assert len(rows) == 1, (sweep, name)
            cells = [c.strip() for c in rows[0].split('|')]
            assert (cells[5], cells[6]) == (str(res['epochs_run']), str(res['best_epoch'])), (sweep, name)
    # CDSRNP_GCA median |cos|, both settings and directions
    med = [r['test']['all'][f'ortho_cos_{x}@gca0/median_abs'] for sw in ('food_kitchen_cdsrnp_short',
                                                                         'food_kitchen_cdsrnp_overlap25')
           for s, r in _runs(sw) if s['model'] == 'CDSRNP_GCA' for x in 'ab']
    span = f'{min(med):.2f}–{max(med):.2f}'
    assert f'median |cos(X, X\')|\n{span},' in readme and f'({span} in all)' in page
    # LLM4CDSR under the ABXI protocol, NDCG@10 in Food, 4 decimals
    (base999,) = [r for s, r in _runs('food_kitchen_llm4cdsr_abxi_protocol')
                  if s['model'] == 'LLM4CDSR' and not r.get('param_match')]
    v = f"{base999['test']['A']['ndcg@10']:.4f}"
    assert f'({base999["config"]["eval_neg_num"]} negatives:\n{v} / ' in readme and f'NDCG@10 {v} / ' in page
    # shared vs per-position negatives: the largest validation difference at equal epochs
    h200 = {n: json.load(open(REPO / 'results' / 'food_kitchen_h200' / f'{n}.json')) for n in ('ABXI', 'ABXI_pernegs')}
    ta, tp = ({e['epoch']: e['valid_score'] for e in h200[n]['trace'] if 'valid_score' in e} for n in h200)
    diff = max(abs(ta[e] - tp[e]) for e in set(ta) & set(tp))
    assert f'differ by at most {diff:.4f}' in page and '±0.004' not in page
    # no claim without a committed run behind it
    assert 'quick start)' not in page and '3-epoch quick start' not in page + readme
    assert not re.search(r'\{\{|\}\}|\bnan\b|\bNone\b(?! of)', page + readme)


def test_published_words_follow_the_numbers(published):
    page, readme = published
    cd = {(s['model'], bool(r.get('param_match'))): r['test'] for s, r in _runs('food_kitchen_cdsrnp_short')}
    gca, base, pm = cd[('CDSRNP_GCA', False)], cd[('CDSRNP', False)], cd[('CDSRNP', True)]
    ahead = all(gca[d]['ndcg@10'] > max(base[d]['ndcg@10'], pm[d]['ndcg@10']) for d in 'AB')
    behind = all(gca[d]['ndcg@10'] < min(base[d]['ndcg@10'], pm[d]['ndcg@10']) for d in 'AB')
    want = 'ahead of both in both domains' if ahead else 'behind both in both domains' if behind else 'mixed'
    assert f'CDSRNP_GCA is {want}\n' in page and f'GCA {want};' in readme
    assert not math.isnan(gca['A']['ndcg@10'])


def test_command_line_single_sweep_page_still_works(fixture_repo, capsys):
    from recbole_ortho.analysis.__main__ import main
    root, _ = fixture_repo
    out = root / 'elsewhere' / 'one.md'
    out.parent.mkdir()
    assert main([str(root / 'results' / 'sweeps' / 'fk'), '--out', str(out), '--title', 'One sweep']) == 0
    assert out.read_text().startswith('# One sweep\n') and len(list((root / 'elsewhere' / 'one_plots').glob('*.png'))) == 3
    with pytest.raises(SystemExit):
        main(['--check', str(root / 'results' / 'sweeps' / 'fk')])


def test_two_generated_blocks_in_one_page(fixture_repo):
    """A page may hold several generated blocks (the README: quick start and results): each is filled
    from its own template, the text around them is kept, and --check sees each."""
    root, _ = fixture_repo
    readme = root / 'README.md'
    readme.write_text('Intro.\n<!-- BEGIN generated: quick -->\nold\n<!-- END generated: quick -->\nMiddle.\n'
                      + readme.read_text())
    (root / 'results' / 'templates' / 'quick.md').write_text('Quick: {{ fk.n_runs }} runs.\n')
    reg = root / 'results' / 'pages.yaml'
    reg.write_text(reg.read_text() + '  - {page: ../README.md, template: templates/quick.md, block: quick}\n')
    regenerate(str(reg))
    text = readme.read_text()
    assert 'Quick: 9 runs.' in text and 'Fixture ABXI_GCA: 0.1600.' in text and '\nold\n' not in text
    assert text.startswith('Intro.\n') and 'Middle.' in text
    ok, problems, pages = check(str(reg))
    assert ok, problems
    assert pages.count('../README.md') == 1
    readme.write_text(text.replace('Quick: 9 runs.', 'Quick: 8 runs.'))
    ok, problems, _ = check(str(reg))
    assert not ok and any('README.md: differs' in p for p in problems)
