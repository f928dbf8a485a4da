"""Train and evaluate a cross-domain sequential model, RecBole style.

    python run_recbole_ortho.py --model=ABXI_GCA --dataset=food_kitchen [--config_files="a.yaml b.yaml"] [--key=value ...]
"""

import argparse
import sys

from recbole_ortho.quick_start import run_recbole_ortho
from recbole_ortho.trainer import NonFiniteLossError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', '-m', type=str, default='SASRec', help='model name')
    parser.add_argument('--dataset', '-d', type=str, default='food_kitchen', help='dataset name')
    parser.add_argument('--config_files', type=str, default=None, help='space-separated yaml files')
    args, _ = parser.parse_known_args(argv)
    files = args.config_files.strip().split(' ') if args.config_files else None
    try:
        run_recbole_ortho(model=args.model, dataset=args.dataset, config_file_list=files)
    except (ValueError, FileNotFoundError, KeyError, NonFiniteLossError) as e:
        # configuration and data errors, a diverged training: one clear line, no traceback
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
