"""Analysis of sweeps: statistics (:mod:`~recbole_ortho.analysis.stats`) and the results page
(:mod:`~recbole_ortho.analysis.report`). ``python -m recbole_ortho.analysis SWEEP_DIR --out PAGE.md``."""

from recbole_ortho.analysis.report import comparisons, correlations, group_table, load_rows, write_report

__all__ = ['comparisons', 'correlations', 'group_table', 'load_rows', 'write_report']
