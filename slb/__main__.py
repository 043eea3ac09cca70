import sys

from slb.cli import main

sys.exit(main())
