"""The main job, as the user types it: ``python compress/qat.py --target-maccs 100G``.

The command line is :mod:`eapnet.jobs.qat` (also ``eapnet-compress`` and ``python -m eapnet.jobs.qat``)."""
import sys

from eapnet.jobs.qat import main

if __name__ == "__main__":
    sys.exit(main())
