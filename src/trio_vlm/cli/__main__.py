"""``python -m trio_vlm.cli …`` (and ``torchrun … -m trio_vlm.cli eval …``): the ``trio-vlm`` command."""

import sys

from trio_vlm.cli.main import main

sys.exit(main())
