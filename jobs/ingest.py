"""Deliver a published folder into an Experience Platform dataset. See `enrich.jobs.ingest`."""

import sys

from enrich.jobs.ingest import main

if __name__ == "__main__":
    sys.exit(main())
