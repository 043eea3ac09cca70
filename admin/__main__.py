"""``python -m admin -c FILE``: the same as ``slb-admin -c FILE``."""

import sys

from admin.cli import main

sys.exit(main())
