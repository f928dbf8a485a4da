"""``python -m recbole_ortho.analysis SWEEP_DIR --out results/page.md [--stat paper]``"""

import argparse
import sys

from recbole_ortho.analysis.report import ORTHO_STATS, write_report


def main(argv=None):
    p = argparse.ArgumentParser(description='Tables, paired tests, correlations and plots of a sweep.')
    p.add_argument('sweep_dir')
    p.add_argument('--out', required=True, help='markdown page to write (plots beside it)')
    p.add_argument('--stat', default='paper', choices=ORTHO_STATS, help='orthogonality statistic of the figures')
    p.add_argument('--title', default=None)
    a = p.parse_args(argv)
    try:
        print(write_report(a.sweep_dir, a.out, stat=a.stat, title=a.title))
    except FileNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
