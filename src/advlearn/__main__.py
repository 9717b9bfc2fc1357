"""``python -m advlearn``: the same command line as ``advlearn``."""

import sys

from advlearn.cli import main

if __name__ == "__main__":  # importing this module (pytest's doctest collection does) runs nothing
    sys.exit(main())
