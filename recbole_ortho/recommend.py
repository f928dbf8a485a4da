"""
recbole_ortho.recommend
#######################

Top-k recommendations of a trained model, per domain, from the command line::

    python -m recbole_ortho.recommend --model_file saved/ABXI_GCA-food_kitchen-....pth \\
        --users A2GTI3SJ2XSLOW,A1VQHH85U7PX0 --domain B --k 10
    python -m recbole_ortho.recommend --model_file saved/X.pth --users_file users.txt --domain A \\
        --k 20 --output top20_A.csv

The checkpoint is loaded with :func:`recbole_ortho.quick_start.load_data_and_model` (on the CPU
unless it was trained on a GPU and one is here, or ``--device``), the lists come from
:func:`recbole_ortho.utils.case_study.full_sort_topk` (the user's test-split history as input,
ranked over all items of the domain, history excluded unless ``--include_history``). Each line
gives the rank, the original item token, the score and, when the dataset's ``.item`` files have a
``title`` field (read by :func:`recbole_ortho.data.text_features.read_item_file`, LLM4CDSR's
reader), the title. ``--output`` writes a CSV (``user, domain, rank, item, score[, title]``)
atomically instead of printing the lists.

Bad input (an unknown user, a user with no history in the domain, a checkpoint whose data
changed, a corrupt or missing file) ends with one line ``error: ...`` on stderr and exit code 2.
"""

import argparse
import csv
import os
import sys

import numpy as np

from recbole_ortho.utils.case_study import DOMAINS, domain_index, full_sort_topk, history_of, item_tokens


def item_titles(config, dataset):
    """The title of every internal item id (``''`` where an item has none), read from the
    ``.item`` files of both domains with LLM4CDSR's reader; ``None`` when neither file exists or
    has a ``title`` field."""
    from recbole_ortho.data.text_features import read_item_file
    titles = np.full(dataset.n_items, '', dtype=object)
    found = False
    for d, key in enumerate(('source_domain', 'target_domain')):
        sub = config[key]
        fields, rows = read_item_file(os.path.join(sub['data_path'], f"{sub['dataset']}.item"),
                                      config['ITEM_ID_FIELD'])
        if 'title' not in fields:
            continue
        found = True
        lo, hi = dataset.domain_range[d]
        for i in range(lo, hi):
            values = rows.get(str(dataset.item_tokens[i]))
            if values:
                titles[i] = ' '.join(str(values.get('title', '') or '').split())
    return titles if found else None


def recommend(config, model, dataset, test_data, users, domain, k=10, exclude_history=True,
              allow_cold_start=False, titles=None):
    """Top-``k`` lists of ``domain`` for the user tokens ``users``: a list of rows
    ``{'user', 'domain', 'rank', 'item', 'score'[, 'title']}`` (``rank`` from 1, best first;
    ``title`` when ``titles`` is given, see :func:`item_titles`)."""
    d = domain_index(domain)
    uids = dataset.token2id(dataset.uid_field, list(users))
    scores, index = full_sort_topk(uids, model, test_data, k, d, exclude_history=exclude_history,
                                   allow_cold_start=allow_cold_start)
    tokens = item_tokens(dataset, index.numpy())
    rows = []
    for u, user in enumerate(users):
        for r in range(index.size(1)):
            row = {'user': user, 'domain': DOMAINS[d], 'rank': r + 1, 'item': str(tokens[u, r]),
                   'score': float(scores[u, r])}
            if titles is not None:
                row['title'] = titles[int(index[u, r])]
            rows.append(row)
    return rows


def write_csv_atomic(path, rows, with_title):
    """Write the rows of :func:`recommend` as CSV through a temporary file (no half-written file)."""
    cols = ['user', 'domain', 'rank', 'item', 'score'] + (['title'] if with_title else [])
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction='ignore')
            w.writeheader()
            for r in rows:
                w.writerow(dict(r, score=f"{r['score']:.6f}"))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_users(args):
    """User tokens of ``--users`` (comma-separated) then ``--users_file`` (one per line; blank
    lines skipped), duplicates dropped, order kept."""
    users = []
    if args.users:
        users += [u.strip() for u in args.users.split(',') if u.strip()]
    if args.users_file:
        if not os.path.isfile(args.users_file):
            raise FileNotFoundError(f'--users_file: file not found: {args.users_file}')
        with open(args.users_file, encoding='utf-8') as f:
            users += [line.strip() for line in f if line.strip()]
    if not users:
        raise ValueError('no users: give --users U1,U2 or --users_file FILE (one user token per line)')
    return list(dict.fromkeys(users))


def format_lists(rows, users, history, dataset, domain, k, exclude_history):
    """The printed lists: a header per user, then one line per item (rank, token, score[, title])."""
    d = domain_index(domain)
    item_domain = np.asarray(dataset.item_domain)
    out = []
    by_user = {}
    for r in rows:
        by_user.setdefault(r['user'], []).append(r)
    seqs, lens = history
    for i, user in enumerate(users):
        items = seqs[i, :int(lens[i])].numpy()
        n_dom = int((item_domain[items] == d).sum())
        out.append(f'user {user}: top {k} of domain {DOMAINS[d]} (history: {len(items)} items, {n_dom} in domain '
                   f'{DOMAINS[d]}{"; excluded" if exclude_history else "; kept as candidates"})')
        width = max(len(x['item']) for x in by_user[user])
        for x in by_user[user]:
            line = f"  {x['rank']:>3}  {x['item']:<{width}}  {x['score']:>9.4f}"
            if x.get('title'):
                line += f"  {x['title']}"
            out.append(line)
    return '\n'.join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m recbole_ortho.recommend',
                                description='Top-k items of one domain for chosen users, from a trained checkpoint.')
    p.add_argument('--model_file', required=True, help='checkpoint written with save_model: True (saved/*.pth)')
    p.add_argument('--users', default=None, help='comma-separated user tokens (as in the .inter files)')
    p.add_argument('--users_file', default=None, help='a file with one user token per line')
    p.add_argument('--domain', required=True, type=str.upper, choices=DOMAINS, help='domain to recommend from')
    p.add_argument('--k', type=int, default=10, help='items per user (default 10)')
    p.add_argument('--output', default=None, help='write a CSV here (atomically) instead of printing the lists')
    p.add_argument('--include_history', action='store_true',
                   help="keep the user's history items as candidates (default: excluded)")
    p.add_argument('--allow_cold_start', action='store_true',
                   help='rank the domain for users with no item of it in their history (refused by default)')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda only if trained on one and present)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    a = p.parse_args(argv)
    try:
        from recbole_ortho.quick_start import load_data_and_model
        from recbole_ortho.utils.utils import set_threads
        set_threads(a.threads)
        users = read_users(a)
        if a.k < 1:
            raise ValueError(f'--k: [{a.k}] must be an integer >= 1')
        config, model, dataset, _, _, test_data = load_data_and_model(a.model_file, device=a.device)
        titles = item_titles(config, dataset)
        rows = recommend(config, model, dataset, test_data, users, a.domain, a.k, exclude_history=not a.include_history,
                         allow_cold_start=a.allow_cold_start, titles=titles)
        if a.output:
            write_csv_atomic(a.output, rows, with_title=titles is not None)
            print(f'wrote top-{a.k} lists of domain {a.domain} for {len(users)} users ({len(rows)} rows) to {a.output}')
        else:
            history = history_of(dataset.token2id(dataset.uid_field, users), test_data)
            print(f"{config['model']} on {config['dataset']} ({a.model_file})")
            print(format_lists(rows, users, history, dataset, a.domain, a.k, not a.include_history))
    except (ValueError, OSError, KeyError) as e:     # bad input: one clear line, no traceback
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'error: {msg}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
