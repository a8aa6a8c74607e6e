"""``python -m bridge`` is the ``bridge`` command.

Import rule: ``bridge.cli`` only.
"""

import sys

from bridge.cli import main

sys.exit(main())
