"""Bring an Experience Platform dataset into the raw zone. See `enrich.jobs.export_dataset`."""

import sys

from enrich.jobs.export_dataset import main

if __name__ == "__main__":
    sys.exit(main())
