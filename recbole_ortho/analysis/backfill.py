"""``python -m recbole_ortho.analysis.backfill ROOT [--dry_run]``: write the reconstructed
``provenance`` into every committed ``result.json`` under ``ROOT`` that has none
(:func:`recbole_ortho.analysis.provenance.backfill`)."""

import argparse
import os
import sys

from recbole_ortho.analysis.provenance import backfill


def main(argv=None):
    p = argparse.ArgumentParser(description='Reconstruct the provenance of committed result files that have none.')
    p.add_argument('root', help='folder searched for result.json files, e.g. results/sweeps')
    p.add_argument('--dry_run', action='store_true', help='say what would be written, write nothing')
    a = p.parse_args(argv)
    try:
        out = backfill(a.root, dry_run=a.dry_run)
    except OSError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for path in out['written']:
        print(f'{"would write" if a.dry_run else "wrote"} {os.path.relpath(path)}')
    for path, why in out['skipped'].items():
        print(f'skipped {os.path.relpath(path)}: {why}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
