"""``python -m mlcl`` (used with ``torchrun --nproc_per_node N -m mlcl train ...``)."""

from mlcl.cli import main

raise SystemExit(main())
