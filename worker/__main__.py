"""`python -m worker` is `b24-worker`."""

import sys

from worker.cli import main

sys.exit(main())
