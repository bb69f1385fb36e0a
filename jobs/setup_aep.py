"""Create the field group, schema and dataset the records need on Experience Platform. See `enrich.jobs.setup_aep`."""

import sys

from enrich.jobs.setup_aep import main

if __name__ == "__main__":
    sys.exit(main())
