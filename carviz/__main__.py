"""Entry point for `python -m carviz`."""

import sys

from .cli import main

sys.exit(main())
