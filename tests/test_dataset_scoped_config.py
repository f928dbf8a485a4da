"""Dataset property files scoped to a model: ``properties/dataset/<dataset>/<Model>.yaml`` is read
right after ``properties/dataset/<dataset>.yaml`` by that model and the models built on it (its
family chain), by no other model; the user's config files, config_dict and command line still
win. Building a Config needs no data files."""

import os
import sys
from pathlib import Path

import pytest
import yaml

from recbole_ortho.config import Config, model_property_files
from recbole_ortho.model.registry import get_model
from recbole_ortho.utils import known_datasets, properties_dir

ROOT = Path(properties_dir())


def own_yaml(model):
    return yaml.safe_load((ROOT / 'model' / f'{model}.yaml').read_text())


@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, 'argv', ['pytest'])        # RecBole's Config reads the command line
    monkeypatch.chdir(tmp_path)


def test_llm4cdsr_on_beauty_electronics_keeps_its_own_weight_decay():
    """ABXI's official abe AdamW weight decay (2.0) and LoRA ranks do not reach LLM4CDSR."""
    c = Config(model='LLM4CDSR', dataset='beauty_electronics')
    assert c['weight_decay'] == own_yaml('LLM4CDSR')['weight_decay'] == 0.0
    assert c['learner'] == 'adam' and c['rd'] is None and c['ri'] is None


@pytest.mark.parametrize('model', ['ABXI', 'ABXI_GCA'])
def test_abxi_family_gets_the_official_abe_and_amb_settings_and_only_it(model):
    """ABXI_GCA is ABXI plus GCA: dataset/<ds>/ABXI.yaml applies to it as to ABXI (demo.sh: abe
    --l2 2e0 --rd 64 --ri 64; amb --l2 3e0 --rd 4 --ri 4), and to no other model."""
    c = Config(model=model, dataset='beauty_electronics')
    assert (c['weight_decay'], c['rd'], c['ri'], c['learner']) == (2.0, 64, 64, 'adamw')
    c = Config(model=model, dataset='movie_book')
    assert (c['weight_decay'], c['rd'], c['ri']) == (3.0, 4, 4)
    assert Config(model='SASRec', dataset='beauty_electronics')['weight_decay'] != 2.0


@pytest.mark.parametrize('model', ['LLM4CDSR', 'LLM4CDSR_GCA'])
def test_llm4cdsr_family_gets_the_official_alpha_beta_per_dataset(model):
    """experiments/elec/llm4cdsr.bash: alpha = beta = 1; experiments/amazon/llm4cdsr.bash
    (cloth_sport): alpha = beta = 0.1; elsewhere the model's default."""
    c = Config(model=model, dataset='elec_phone')
    assert c['reg_weight'] == c['user_weight'] == 1.0
    c = Config(model=model, dataset='cloth_sport')
    assert c['reg_weight'] == c['user_weight'] == 0.1
    c = Config(model=model, dataset='food_kitchen')
    own = own_yaml('LLM4CDSR')
    assert (c['reg_weight'], c['user_weight']) == (own['reg_weight'], own['user_weight'])
    # another model on elec_phone does not get LLM4CDSR's weights
    assert Config(model='ABXI', dataset='elec_phone')['reg_weight'] is None


@pytest.mark.parametrize('model,expected', [('SASRec', 0.0), ('CDSRNP', 0.0005), ('LLM4CDSR', 0.0)])
def test_other_models_on_movie_book_do_not_get_abxi_weight_decay(model, expected):
    c = Config(model=model, dataset='movie_book')
    assert c['weight_decay'] == expected != 3.0
    assert c['rd'] is None and c['ri'] is None


def test_command_line_config_dict_and_config_files_still_win(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, 'argv', ['run', '--weight_decay=0.25', '--user_weight=0.5'])
    c = Config(model='ABXI', dataset='beauty_electronics')
    assert c['weight_decay'] == 0.25 and c['rd'] == 64          # the flag wins, the scoped file's other keys stay
    c = Config(model='LLM4CDSR', dataset='elec_phone')
    assert c['user_weight'] == 0.5 and c['reg_weight'] == 1.0 and c['weight_decay'] == 0.25
    monkeypatch.setattr(sys, 'argv', ['run'])
    assert Config(model='ABXI_GCA', dataset='beauty_electronics', config_dict={'rd': 8})['rd'] == 8
    f = tmp_path / 'mine.yaml'
    f.write_text('reg_weight: 0.3\n')
    c = Config(model='LLM4CDSR', dataset='elec_phone', config_file_list=[str(f)])
    assert c['reg_weight'] == 0.3 and c['user_weight'] == 1.0


def test_parameter_matched_run_reads_its_own_chain():
    """``--param_match=ABXI_GCA`` on ABXI: the ABXI config and the ABXI_GCA config built to count
    the target's parameters (quick_start.build_model) both read dataset/<ds>/ABXI.yaml, so the
    two are built alike."""
    base = Config(model='ABXI', dataset='beauty_electronics', config_dict={'param_match': 'ABXI_GCA'})
    target = Config(model='ABXI_GCA', dataset='beauty_electronics')
    assert base['param_match'] == 'ABXI_GCA'
    assert (base['rd'], base['ri'], base['weight_decay']) == (target['rd'], target['ri'], target['weight_decay']) \
        == (64, 64, 2.0)
    base = Config(model='LLM4CDSR', dataset='elec_phone', config_dict={'param_match': 'LLM4CDSR_GCA'})
    target = Config(model='LLM4CDSR_GCA', dataset='elec_phone')
    assert (base['reg_weight'], base['user_weight']) == (target['reg_weight'], target['user_weight']) == (1.0, 1.0)


def test_dataset_property_files_follow_the_family_chain():
    from recbole_ortho.config.configurator import dataset_property_files
    rel = lambda fs: [os.path.relpath(f, ROOT) for f in fs]            # noqa: E731
    ds = os.path.join('dataset', 'beauty_electronics')
    assert rel(dataset_property_files(get_model('ABXI_GCA'), 'beauty_electronics')) == [
        ds + '.yaml', os.path.join(ds, 'ABXI.yaml')]
    assert rel(dataset_property_files(get_model('ABXI'), 'beauty_electronics')) == [
        ds + '.yaml', os.path.join(ds, 'ABXI.yaml')]
    for model in ('LLM4CDSR', 'CDSRNP_GCA', 'SASRec'):
        assert rel(dataset_property_files(get_model(model), 'beauty_electronics')) == [ds + '.yaml']


def test_dataset_files_hold_no_model_setting():
    """A key of dataset/<dataset>.yaml reaches every model: none may be a model's setting
    (model/*.yaml, component/*.yaml); those go to dataset/<dataset>/<Model>.yaml."""
    model_keys = set()
    for f in list((ROOT / 'model').glob('*.yaml')) + list((ROOT / 'component').glob('*.yaml')):
        model_keys |= set(yaml.safe_load(f.read_text()) or {})
    for ds in known_datasets():
        keys = set(yaml.safe_load((ROOT / 'dataset' / f'{ds}.yaml').read_text()) or {})
        assert not keys & model_keys, (ds, sorted(keys & model_keys))


def test_scoped_files_name_a_dataset_a_model_and_only_its_keys():
    """Every dataset/<dataset>/<Model>.yaml belongs to a known dataset and model, and sets only
    keys of that model's own property chain (so a sweep, which resolves the keys of the model's
    chain into its run ids, sees every one of them)."""
    scoped = sorted(p.relative_to(ROOT / 'dataset').as_posix() for p in (ROOT / 'dataset').glob('*/*.yaml'))
    assert {'beauty_electronics/ABXI.yaml', 'movie_book/ABXI.yaml', 'cloth_sport/LLM4CDSR.yaml',
            'elec_phone/LLM4CDSR.yaml'} <= set(scoped)
    for rel in scoped:
        ds, name = rel.split('/')
        assert ds in known_datasets(), rel
        model = get_model(name[:-5])
        chain_keys = set()
        for f in model_property_files(model):
            chain_keys |= set(yaml.safe_load(open(f)) or {})
        keys = set(yaml.safe_load((ROOT / 'dataset' / rel).read_text()) or {})
        assert keys and keys <= chain_keys, (rel, sorted(keys - chain_keys))
