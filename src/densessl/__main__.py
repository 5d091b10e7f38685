"""``python -m densessl``: the command line (:mod:`densessl.cli`)."""

import sys

from densessl.cli import main

sys.exit(main())
