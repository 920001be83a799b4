"""``python -m gateway``: the ``mdgateway`` command."""

import sys

from gateway.tools.cli import main

sys.exit(main())
