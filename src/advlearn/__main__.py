"""``python -m advlearn``: the same command line as ``advlearn``."""

import sys

from advlearn.cli import main

sys.exit(main())
