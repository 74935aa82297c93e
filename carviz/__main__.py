"""Entry point for `python -m carviz`."""

import sys

from carviz.cli import main

sys.exit(main())
