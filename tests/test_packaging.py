"""The property files ship as package data: a non-editable install finds them."""

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
    for f in ('recbole_ortho/properties/overall.yaml', 'recbole_ortho/properties/dataset/food_kitchen.yaml'):
        assert f in names
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
