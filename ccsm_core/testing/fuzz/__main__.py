"""``python -m ccsm_core.testing.fuzz``: see `runner`."""

import sys

from .runner import main

sys.exit(main())
