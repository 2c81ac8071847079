"""``python -m mmap_ninja``: the same as the ``mmap-ninja`` command."""

import sys

from .cli import main

sys.exit(main())
