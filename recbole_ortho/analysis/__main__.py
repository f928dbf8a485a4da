"""Command line of the analysis.

``python -m recbole_ortho.analysis SWEEP_DIR --out results/page.md [--stat paper]``: one sweep's page.

``python -m recbole_ortho.analysis --check``: regenerate every page of ``results/pages.yaml`` into
a temporary folder and compare with the committed ones (exit 1 listing each page that differs,
with a diff excerpt; 0 when all match). ``--regenerate`` (or ``--all``): rewrite them all in place.
"""

import argparse
import sys
import time

from recbole_ortho.analysis.report import ORTHO_STATS, write_report


def main(argv=None):
    p = argparse.ArgumentParser(description='Tables, paired tests, correlations and plots of a sweep; '
                                            'or check / regenerate every published results page.')
    p.add_argument('sweep_dir', nargs='?', help='a sweep folder (with --out)')
    p.add_argument('--out', help='markdown page to write (plots beside it)')
    p.add_argument('--stat', default='paper', choices=ORTHO_STATS, help='orthogonality statistic of the figures')
    p.add_argument('--title', default=None)
    p.add_argument('--allow_mixed_commits', action='store_true',
                   help='pair runs of different package code (the page says so)')
    p.add_argument('--check', action='store_true',
                   help='regenerate every registered page into a temporary folder; exit 1 if a committed one differs')
    p.add_argument('--regenerate', '--all', action='store_true', dest='regenerate',
                   help='rewrite every registered page (and its plots) in place')
    p.add_argument('--registry', default=None, help='the page registry (default: results/pages.yaml)')
    a = p.parse_args(argv)
    if a.check or a.regenerate:
        if a.check and a.regenerate:
            p.error('--check and --regenerate exclude each other')
        if a.sweep_dir or a.out:
            p.error('--check / --regenerate take no SWEEP_DIR or --out (the registry lists the pages)')
        return _pages(a)
    if not a.sweep_dir or not a.out:
        p.error('give SWEEP_DIR --out PAGE.md, or --check, or --regenerate')
    try:
        print(write_report(a.sweep_dir, a.out, stat=a.stat, title=a.title, allow_mixed_commits=a.allow_mixed_commits))
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


def _pages(a):
    from recbole_ortho.analysis import pages
    t0 = time.perf_counter()
    try:
        if a.regenerate:
            written = pages.regenerate(a.registry)
            print('\n'.join(f'wrote {w}' for w in written))
            print(f'{len(written)} pages regenerated in {time.perf_counter() - t0:.1f} s')
            return 0
        ok, problems, checked = pages.check(a.registry)
    except (FileNotFoundError, ValueError) as e:       # TemplateError, StoreError, MixedCommitsError
        print(f'error: {e}', file=sys.stderr)
        return 2
    took = time.perf_counter() - t0
    if ok:
        print(f'{len(checked)} pages match their run stores ({took:.1f} s)')
        return 0
    print('\n\n'.join(problems), file=sys.stderr)
    print(f'\n{len(problems)} problem(s) in {len(checked)} pages ({took:.1f} s): edit the templates or the run '
          'stores, not the pages, and run `python -m recbole_ortho.analysis --regenerate`', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main())
