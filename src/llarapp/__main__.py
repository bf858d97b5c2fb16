"""``python -m llarapp``: the ``llarapp`` command (how benchmarks run it as a user does)."""

import sys

from llarapp.cli import main

sys.exit(main())
