"""`python -m controller`: the same as `lbspeaker controller`."""

import sys

from controller.main import main

sys.exit(main())
