"""Finding the missing labels of a label CSV: out-of-sample scores, ranked suggestions, the completed CSV.

* :mod:`mlcl.labels.crossfit`: every image scored by a model that never trained on it (K-fold cross-fitting
  through :func:`mlcl.engine.trainer.fit`), or by a given run's model (in-sample, biased).
* :mod:`mlcl.labels.suggest`: the ranking of the entries (unknown, and optionally observed) as likely label
  changes, its filters, and the suggestions file (``filename,class,value,probability,rank,suggested``).
* :mod:`mlcl.labels.estimate`: the estimated number of missing positives per class (Platt-calibrated sums).
* :mod:`mlcl.labels.apply`: a new label CSV with the accepted suggestions set.

The review page is :mod:`mlcl.report.review`. Nothing here is imported by ``import mlcl``.
"""
