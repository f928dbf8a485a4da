"""Use a trained model: train a quick one, load it back, recommend for three users, probe it.

    python examples/use_a_trained_model.py                        # ABXI_GCA on food_kitchen, 3 epochs
    python examples/use_a_trained_model.py --model=SASRec --epochs=1 --threads=2

Any ``--key=value`` is a setting, as for ``run_recbole_ortho.py`` (read from the command line by
the configurator). Steps:

1. train with ``save_model: True`` (the quick-start settings of
   ``properties/quick_start/food_kitchen_quick.yaml``; the checkpoint goes under
   ``checkpoint_dir``, ``saved/`` by default);
2. load it with :func:`recbole_ortho.quick_start.load_data_and_model` (CPU unless trained on a
   GPU that is here) and print the top-5 items of each domain for three evaluated users with
   :func:`recbole_ortho.recommend.recommend` (:func:`recbole_ortho.utils.case_study.full_sort_topk`);
3. for a ``_GCA`` model, probe its GCA modules (:func:`recbole_ortho.probe.probe_checkpoint`: one
   evaluation pass; ``probe.json`` and the figures go beside the checkpoint) and print the headline
   numbers (the paper's |cos(X, X')|, the gate, and the agreement with the evaluator).

See docs/using_a_trained_model.md.
"""

import argparse
import os
import sys

import numpy as np

from recbole_ortho.probe import headline_table, probe_checkpoint
from recbole_ortho.quick_start import load_data_and_model, run_recbole_ortho
from recbole_ortho.recommend import item_titles, recommend
from recbole_ortho.utils.case_study import history_of
from recbole_ortho.utils.paths import properties_dir

QUICK = os.path.join(properties_dir(), 'quick_start', 'food_kitchen_quick.yaml')


def three_users(dataset, test_data):
    """The first three users of the test split whose history (the model's input) has both domains."""
    uids = test_data.tensors[dataset.uid_field].numpy()
    seqs, _ = history_of(uids, test_data)
    dom = np.asarray(dataset.item_domain)[seqs.numpy()]
    both = ((dom == 0).any(1) & (dom == 1).any(1))
    return [str(t) for t in dataset.id2token(dataset.uid_field, uids[both][:3])]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='ABXI_GCA')
    p.add_argument('--dataset', default='food_kitchen')
    p.add_argument('--k', type=int, default=5)
    args, _ = p.parse_known_args(argv)            # the rest (--key=value) is read by the configurator

    # 1. train a quick model and keep its checkpoint
    res = run_recbole_ortho(model=args.model, dataset=args.dataset, config_file_list=[QUICK],
                            config_dict={'save_model': True})
    print(f"trained {args.model} on {args.dataset}: test MRR A {res['test']['A']['mrr']:.4f}, "
          f"B {res['test']['B']['mrr']:.4f}; checkpoint {res['checkpoint']}")

    # 2. load it back and recommend
    config, model, dataset, _, _, test_data = load_data_and_model(res['checkpoint'])
    titles = item_titles(config, dataset)
    users = three_users(dataset, test_data)
    for domain in ('A', 'B'):
        rows = recommend(config, model, dataset, test_data, users, domain, k=args.k, titles=titles)
        for user in users:
            items = [f"{r['item']} ({r['score']:.3f})" + (f" {r['title'][:40]}" if r.get('title') else '')
                     for r in rows if r['user'] == user]
            print(f'user {user}, top {args.k} of domain {domain}: ' + '; '.join(items))

    # 3. probe the orthogonality of its GCA modules (a _GCA model only)
    if args.model.endswith('_GCA'):
        out = os.path.splitext(res['checkpoint'])[0] + '_probe'
        payload = probe_checkpoint(res['checkpoint'], split='test', out=out)
        print(headline_table(payload))
        print(f'probe written to {out} ({", ".join(payload["figures"])})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
