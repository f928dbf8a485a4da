"""The paper's GCA positions (Lee et al., arXiv:2510.09435: GCA0, GCA1 and both) map to
``gca_positions`` as docs/gca.md states: GCA0 = [0] (after
the embeddings), GCA1 = [n_layers] (after the encoder, i.e. its last block), GCA0 + GCA1 =
[0, n_layers]. The paper-grid sweep specs and the comment of each model/<Model>_GCA.yaml use it."""

import re
import sys
from pathlib import Path

import pytest

from recbole_ortho.config import Config
from recbole_ortho.sweep.spec import load_spec
from recbole_ortho.utils import properties_dir

ROOT = Path(properties_dir())
GCA_MODELS = ['ABXI_GCA', 'LLM4CDSR_GCA', 'CDSRNP_GCA']


@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, 'argv', ['pytest'])
    monkeypatch.chdir(tmp_path)


def documented_positions(model):
    """``{'GCA0': [...], 'GCA1': [...], 'GCA0 + GCA1': [...]}`` from the comment of model/<model>.yaml."""
    text = (ROOT / 'model' / f'{model}.yaml').read_text()
    found = {}
    for name, values in re.findall(r'(GCA0 \+ GCA1|GCA0|GCA1) = \[([\d, ]+)\]', text):
        found.setdefault(name, [int(v) for v in values.split(',')])
    return found


@pytest.mark.parametrize('model', GCA_MODELS)
def test_model_yaml_states_the_mapping_by_n_layers(model):
    n = Config(model=model, dataset='food_kitchen')['n_layers']
    assert documented_positions(model) == {'GCA0': [0], 'GCA1': [n], 'GCA0 + GCA1': [0, n]}


def test_paper_grid_specs_use_the_documented_stages():
    specs = sorted((ROOT / 'sweep').glob('*_paper_grid.yaml'))
    seen = set()
    for f in specs:
        spec = load_spec(f)
        for model, m in spec['models'].items():
            if 'gca_positions' not in m['grid']:
                continue
            doc = documented_positions(model)
            for ds in spec['datasets']:
                n = Config(model=model, dataset=ds, config_dict=dict(spec['settings'], **m['settings']))['n_layers']
                assert doc['GCA1'] == [n], (f.name, model, ds)
            assert m['grid']['gca_positions'] == [doc['GCA0'], doc['GCA1'], doc['GCA0 + GCA1']], f.name
            seen.add(model)
    assert seen == set(GCA_MODELS)
    # ABXI has one encoder block, LLM4CDSR and CDSRNP two: GCA1 is stage 1 for ABXI, stage 2 for the others
    assert {m: documented_positions(m)['GCA1'] for m in GCA_MODELS} == {
        'ABXI_GCA': [1], 'LLM4CDSR_GCA': [2], 'CDSRNP_GCA': [2]}
