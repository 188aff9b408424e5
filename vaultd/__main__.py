"""``python -m vaultd`` is the ``vaultd`` command."""

import sys

from vaultd.cli import main

sys.exit(main())
