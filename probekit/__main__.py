"""``python -m probekit``: the same command line as ``probekit``."""
import sys

from probekit.cli import main

sys.exit(main())
