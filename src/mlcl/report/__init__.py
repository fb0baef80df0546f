"""Reports people look at: ``mlcl report`` (one run as one HTML page) and ``mlcl compare`` (groups of runs).

:mod:`mlcl.report.compare` groups finished runs over seeds and compares them with a baseline.
:mod:`mlcl.report.scores` writes and reads the arrays a run leaves for its report (``test_scores.npz``,
``train_labels.npz``); :mod:`mlcl.report.run_report` reads a run folder (it never runs the model) and renders the
page with :mod:`mlcl.report.figures` and :mod:`mlcl.report._page`. Nothing here imports the training stack.
"""

from mlcl.report.run_report import write_run_report

__all__ = ["write_run_report"]
