"""`python -m sightline_cli` is the same as the `sightline` command."""

import sys

from sightline_cli.main import main

sys.exit(main())
