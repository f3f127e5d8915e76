"""``python -m drmm_ref.conformance --adapter module:object [--only ...] [--json report.json]``."""

import sys

from .runner import main

sys.exit(main())
