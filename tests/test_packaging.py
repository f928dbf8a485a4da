"""The property files ship as package data: a non-editable install finds them."""

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


def test_properties_found_from_installed_package():
    from recbole_ortho.utils import known_datasets, properties_dir
    import os
    assert os.path.isfile(os.path.join(properties_dir(), 'overall.yaml'))
    assert 'food_kitchen' in known_datasets()


def test_wheel_ships_properties_and_non_editable_install_finds_them(tmp_path):
    try:
        import setuptools  # noqa: F401
    except ImportError:
        pytest.skip('setuptools not available')
    out = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                          '-w', str(tmp_path / 'wh'), str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next((tmp_path / 'wh').glob('recbole_ortho-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ('recbole_ortho/properties/overall.yaml', 'recbole_ortho/properties/dataset/food_kitchen.yaml',
              'recbole_ortho/properties/dataset/beauty_electronics/ABXI.yaml'):
        assert f in names
    # every shipped yaml, the model-scoped dataset files dataset/<dataset>/<Model>.yaml included
    for f in (REPO / 'properties').rglob('*.yaml'):
        assert 'recbole_ortho/properties/' + f.relative_to(REPO / 'properties').as_posix() in names, f
    # install it into a plain target folder and import from there (not from the source tree)
    target = tmp_path / 'site'
    out = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--target',
                          str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    code = ('import sys; sys.path.insert(0, sys.argv[1]); import recbole_ortho.utils as u; '
            'p = u.properties_dir(); assert p.startswith(sys.argv[1]), p; print(u.known_datasets())')
    out = subprocess.run([sys.executable, '-c', code, str(target)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'food_kitchen' in out.stdout


TINY_RUN = r'''
import json, os, sys
from pathlib import Path
import numpy as np
root = Path(sys.argv[1])
rng = np.random.default_rng(0)
rows = {"A": [], "B": []}
for u in range(30):
    for k in range(int(rng.integers(4, 12))):
        dom = "A" if rng.random() < 0.5 else "B"
        it = ("a" if dom == "A" else "b") + str(int(rng.integers(25)))
        rows[dom].append(f"u{u}\t{it}\t{1000 + k}\t{k}\n")
for dom in "AB":
    d = root / "data" / "tiny" / f"tiny_{dom}"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"tiny_{dom}.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\tseq_idx:float\n"
                                         + "".join(rows[dom]))
sys.argv = ["run"]
import recbole_ortho
from recbole_ortho.quick_start import run_recbole_ortho
from recbole_ortho.utils import properties_dir
res = run_recbole_ortho(model="ABXI_GCA", dataset="tiny", config_dict={
    "data_path": str(root / "data") + os.sep, "epochs": 1, "warmup_epochs": 0, "eval_neg_num": 10,
    "embedding_size": 16, "inner_size": 24, "n_neg_per_domain": 8, "MAX_ITEM_LIST_LENGTH": 10,
    "train_batch_size": 16, "show_progress": False, "state": "WARNING", "save_model": False,
    "result_file": str(root / "r.json")})
print(json.dumps({"package": recbole_ortho.__file__, "properties": properties_dir(),
                  "ndcg": res["test"]["all"]["ndcg@10"], "ortho": res["test"]["all"]["ortho_cos_a@gca0"]}))
'''


def test_wheel_installs_into_a_fresh_venv_with_the_documented_recipe(tmp_path):
    """README "Install as a package": build the wheel; in a new virtual environment install torch
    (pinned), the wheel (pip resolves install_requires), then recbole and recbole-cdr with
    --no-deps; one tiny ABXI_GCA epoch runs from the installed package."""
    import json
    import venv
    wh = tmp_path / 'wh'
    out = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', str(wh),
                          str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(wh.glob('recbole_ortho-*.whl'))
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / 'bin' / 'python')
    steps = [['torch==2.13.0'], [str(wheel)], ['--no-deps', 'recbole==1.0.1', 'recbole-cdr==0.1.0']]
    for args in steps:
        out = subprocess.run([py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', *args],
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, (args, out.stderr[-3000:])
    check = subprocess.run([py, '-m', 'pip', 'check'], capture_output=True, text=True, timeout=120)
    work = tmp_path / 'work'
    work.mkdir()
    out = subprocess.run([py, '-c', TINY_RUN, str(work)], capture_output=True, text=True, cwd=work, timeout=600,
                         env={k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')})
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info['package'].startswith(str(env_dir)) and info['properties'].startswith(str(env_dir))
    assert 0.0 <= info['ndcg'] <= 1.0 and 0.0 <= info['ortho'] <= 1.0
    assert (work / 'r.json').is_file()
    # pip check may only complain about recbole's own pins (scipy==1.6.0 etc.), never about ours
    assert 'recbole-ortho' not in check.stdout.lower().replace('_', '-'), check.stdout
