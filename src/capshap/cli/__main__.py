"""python -m capshap.cli: the capshap command."""

import sys

from capshap.cli import main

sys.exit(main())
