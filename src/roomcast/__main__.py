"""`python -m roomcast` is the `roomcast` command."""

import sys

from roomcast.cli import main

sys.exit(main())
