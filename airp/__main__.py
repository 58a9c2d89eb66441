"""``python -m airp``: the same as the ``airp`` command."""

import sys

from ._tools._cli import main

sys.exit(main())
