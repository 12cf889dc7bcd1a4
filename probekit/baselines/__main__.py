"""``python -m probekit.baselines CONFIG --results-dir DIR``: run an experiment config's baselines."""
import sys

from probekit.baselines.runner import main

sys.exit(main())
