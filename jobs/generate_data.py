"""Generate synthetic XDM data with known truth. See `enrich.jobs.generate_data`."""

import sys

from enrich.jobs.generate_data import main

if __name__ == "__main__":
    sys.exit(main())
