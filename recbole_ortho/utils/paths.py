"""
recbole_ortho.utils.paths
#########################

Where the shipped files are, and where a run's files lie beside each other (no import of the
package's models, so any module may use it).
"""

import os


def properties_dir():
    """Folder of the shipped yaml property files (``properties/`` of the source tree, installed
    as the package data ``recbole_ortho.properties``)."""
    try:
        import recbole_ortho.properties as props
        return os.path.dirname(os.path.abspath(props.__file__))
    except ImportError:  # running from a source checkout that was not pip-installed
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'properties')
        return os.path.normpath(here)


def ranks_path(result_file):
    """The per-user ranks file beside a result file: ``x/result.json`` -> ``x/result.ranks.npz``
    (written by ``save_ranks``, read by :mod:`recbole_ortho.analysis.ranks`)."""
    result_file = os.fspath(result_file)
    stem = result_file[:-len('.json')] if result_file.endswith('.json') else result_file
    return stem + '.ranks.npz'
