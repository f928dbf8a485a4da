#!/usr/bin/env python
"""How far bf16 autocast moves each model's loss and gradients on one training batch: where bf16
costs accuracy, and in which part of the model.

    .venv/bin/python benchmarks/bf16_gradients.py --models ABXI,ABXI_GCA,LLM4CDSR,CDSRNP \
        --batches 3 --threads 2 --json_out results/bf16_gradients_cpu.json

Per model (yaml defaults, Food-Kitchen, train mode with dropout on) and for each of the first
``--batches`` training batches, the loss and every parameter's gradient are computed twice from the
same weights and the same random draws (the torch seed is reset before each pass, so the dropout
masks and the sampled negatives are the same): in fp32, and with the forward under bf16 autocast as
the trainer runs it (``recbole_ortho.utils.precision.autocast``). Reported per model, the median
over the batches of:

- the relative loss difference ``(L_bf16 - L_fp32) / |L_fp32|``;
- the relative gradient error ``||g_bf16 - g_fp32|| / ||g_fp32||`` over all parameters, and per
  part of the model (the first component of the parameter's name, with its index for a list of
  modules: ``threads.1``, ``blocks.0``), largest first;
- for a ``_GCA`` model, ``gca_input_norm``: the median row norm of the A and B states that enter its
  GCA layers (per stage, in the fp32 pass of the first batch). The attention logits grow with its
  square, and with them what bf16's rounding of the inputs does to the attention;
- ``fp32_repeat_error``: the same error between two fp32 passes. Some models sum in no fixed order
  (sparse products, ``index_add_`` with threads), which moves it off 0 by about 1e-8; above
  ``REPEAT_LIMIT`` of the bf16 error the two passes did not see the same random draws, the
  comparison means nothing, and the script exits 1.

bf16 rounds a matrix product's inputs to 8 significant bits; what this costs depends on the model:
large activations whose differences carry the signal lose more than normalised ones. On a CPU
without bf16 hardware the products run through oneDNN's emulation, with the same roundings
(``bf16_emulation``; ``tests/test_precision.py``), so these numbers hold for bf16 hardware too.
They are one batch's errors at the initial weights; whether bf16 keeps a model's accuracy after
training is measured on ``results/food_kitchen_precision.md``.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: the largest fp32 repeat error, as a share of the bf16 gradient error, that leaves the comparison valid
REPEAT_LIMIT = 0.01


def part_of(name):
    """``threads.1.ffn_in.0.weight`` -> ``threads.1``; ``gca.a_to_b.q.weight`` -> ``gca``."""
    parts = name.split('.')
    return '.'.join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def loss_and_grads(model, batch, precision, seed):
    """Loss and ``{name: grad}`` of one forward/backward pass from the current weights."""
    import torch
    from recbole_ortho.utils.precision import autocast
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    with autocast(precision, torch.device('cpu')):
        loss = model.calculate_loss(batch)
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def relative_errors(g_ref, g_new):
    """``(overall, {part: error})``: ``||g_new - g_ref|| / ||g_ref||`` over all gradients and per part."""
    num, den = {}, {}
    for n, g in g_ref.items():
        k = part_of(n)
        num[k] = num.get(k, 0.0) + float((g_new[n].double() - g.double()).pow(2).sum())
        den[k] = den.get(k, 0.0) + float(g.double().pow(2).sum())
    total = (sum(num.values()) / sum(den.values())) ** 0.5 if sum(den.values()) else 0.0
    return total, {k: (num[k] / den[k]) ** 0.5 if den[k] else 0.0 for k in num}


def model_errors(name, args):
    from bench_abxi import bench_setup
    settings = dict({'threads': args.threads}, **json.loads(args.config_json or '{}'))
    _, _, (train, _, _), model, info = bench_setup(name, args.dataset, settings)
    model.train()
    norms = {}
    if hasattr(model, 'gca'):                # the GCA layers' inputs, recorded once (fp32 pass, first batch)
        hook = model.domain_interaction

        def recording(stage, h_a, h_b, ctx):
            if stage not in norms:
                norms[stage] = [float(h.detach().float().norm(dim=-1).median()) for h in (h_a, h_b)]
            return hook(stage, h_a, h_b, ctx)
        model.domain_interaction = recording
    loss_rel, total, repeat, parts = [], [], [], {}
    for k, batch in zip(range(args.batches), train):
        l32, g32 = loss_and_grads(model, batch, 'fp32', k)
        if 'domain_interaction' in vars(model):
            del model.domain_interaction                      # the class's hook again
        _, g32_again = loss_and_grads(model, batch, 'fp32', k)
        l16, g16 = loss_and_grads(model, batch, 'bf16', k)
        repeat.append(relative_errors(g32, g32_again)[0])
        t, per = relative_errors(g32, g16)
        total.append(t)
        loss_rel.append((l16 - l32) / abs(l32))
        for p, e in per.items():
            parts.setdefault(p, []).append(e)
    med = {p: statistics.median(e) for p, e in parts.items()}
    return {'model': name, 'n_params': info['n_params'], 'batches': len(total),
            'loss_rel_diff_median': statistics.median(loss_rel), 'grad_rel_error_median': statistics.median(total),
            'fp32_repeat_error': max(repeat),
            'parts': dict(sorted(med.items(), key=lambda kv: -kv[1])),
            'worst_part': max(med, key=med.get), 'worst_part_error': max(med.values()),
            'gca_input_norm': {str(k): v for k, v in sorted(norms.items())} or None,
            'gca_input_norm_max': max((max(v) for v in norms.values()), default=None)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', default='ABXI,ABXI_GCA,LLM4CDSR,CDSRNP')
    p.add_argument('--batches', type=int, default=3, help='training batches compared per model (median reported)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--dataset', default='food_kitchen')
    p.add_argument('--config_json', help='settings (a JSON object) given to every model, e.g. paths')
    p.add_argument('--json_out')
    args = p.parse_args()
    sys.argv = [sys.argv[0]]
    import torch
    torch.set_num_threads(args.threads)
    from bench_abxi import machine_facts
    results = dict(machine_facts(args.threads), dataset=args.dataset, models={})
    for name in args.models.split(','):
        r = model_errors(name, args)
        results['models'][name] = r
        top = ', '.join(f'{k} {v:.4f}' for k, v in list(r['parts'].items())[:3])
        gca = f"; GCA input norm {r['gca_input_norm_max']:.2f}" if r['gca_input_norm'] else ''
        print(f"{name}: loss {r['loss_rel_diff_median']:+.2e}, gradients {r['grad_rel_error_median']:.4f} "
              f"(largest: {top}); fp32 repeat {r['fp32_repeat_error']:.1e}{gca}", flush=True)
    if args.json_out:
        from recbole_ortho.quick_start import write_json_atomic
        write_json_atomic(args.json_out, results)
    bad = [n for n, r in results['models'].items()
           if r['fp32_repeat_error'] > REPEAT_LIMIT * r['grad_rel_error_median']]
    if bad:
        sys.exit(f"two fp32 passes differ for {', '.join(bad)} by more than {REPEAT_LIMIT:.0%} of the bf16 error: the "
                 'passes did not see the same random draws, so the bf16 comparison is not valid')


if __name__ == '__main__':
    main()
