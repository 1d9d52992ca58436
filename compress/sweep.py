"""The budget sweep, as the user types it: ``python compress/sweep.py --budgets 150G 100G 60G``.

The command line is :mod:`eapnet.jobs.sweep` (also ``eapnet-sweep`` and ``python -m eapnet.jobs.sweep``)."""
import sys

from eapnet.jobs.sweep import main

if __name__ == "__main__":
    sys.exit(main())
