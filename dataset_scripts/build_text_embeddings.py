"""Build (or load from the cache) the item text embeddings and user profiles of a dataset.

    python dataset_scripts/build_text_embeddings.py --dataset=food_kitchen [--model=LLM4CDSR] [--key=value ...]

The configuration is the package's (``recbole_ortho.config.Config``: property files, then
``--config_files="a.yaml b.yaml"``, then ``--key=value``), for ``--model`` (default LLM4CDSR).
When that model does not exist (yet) the config is built for SASRec instead; in every case the
keys of ``properties/component/text.yaml`` that no other source sets get their defaults from
that file (below every other source, so a dataset yaml or ``--text_domain_dim=64`` wins).
The dataset is loaded with ``create_dataset`` (prepared from its raw source and cached on first
use) and the features with ``recbole_ortho.data.text_features.load_text_features``; the script
prints the item counts, the items without text per domain, the encoding speed and the cache path.
"""

import argparse
import logging
import sys
from pathlib import Path
from time import perf_counter

try:
    import recbole_ortho  # noqa: F401
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset', '-d', type=str, default='food_kitchen', help='dataset name')
    parser.add_argument('--model', '-m', type=str, default='LLM4CDSR',
                        help='model whose configuration is used (SASRec when it does not exist)')
    parser.add_argument('--config_files', type=str, default=None, help='space-separated yaml files')
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset
    from recbole_ortho.data.text_features import add_text_defaults, load_text_features
    from recbole_ortho.model.registry import get_model

    files = args.config_files.strip().split(' ') if args.config_files else None
    model = args.model
    try:
        get_model(model)
    except ValueError:
        logging.info(f'model [{model}] does not exist here; configuring for SASRec with the defaults of '
                     f'properties/component/text.yaml')
        model = 'SASRec'
    try:
        t0 = perf_counter()
        config = Config(model=model, dataset=args.dataset, config_file_list=files)
        add_text_defaults(config)
        data = create_dataset(config)
        t1 = perf_counter()
        feats = load_text_features(config, data)
        t2 = perf_counter()
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    info = feats.info
    n = sum(feats.n_items_domain.values())
    print(f'dataset            {args.dataset}: {n} items (A {feats.n_items_domain[0]}, B {feats.n_items_domain[1]}), '
          f'{data.n_users - 1} users')
    print(f'without text       A {feats.n_missing[0]}, B {feats.n_missing[1]} '
          f'(with text: {n - feats.n_missing[0] - feats.n_missing[1]})')
    print(f'encoder            {feats.encoder} ({feats.text_dim}-d)')
    if info.get('from_cache'):
        src = 'features loaded from the cache; speed of the run that encoded them'
    elif info.get('embeddings_from_cache'):
        src = 'embeddings loaded from the cache; speed of the run that encoded them'
    else:
        src = 'encoded now'
    print(f'encoding           {info.get("n_encoded")} distinct prompts in {info.get("encode_s")} s = '
          f'{info.get("items_per_s")} items/s ({src})')
    print(f'tables             global {feats.global_table.shape}, domain {feats.domain_table.shape}, '
          f'profiles {None if feats.user_profiles is None else feats.user_profiles.shape}')
    print(f'time               dataset {t1 - t0:.1f} s, text features {t2 - t1:.1f} s '
          f'(the build that wrote the cache: {info.get("build_s")} s)')
    print(f'cache              {feats.cache_path or "(no cache_dir)"}')
    return 0


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', stream=sys.stdout)
    sys.exit(main())
