"""``python -m capshap`` runs the command-line tool."""

import sys

from capshap.cli import main

sys.exit(main())
