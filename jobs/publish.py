"""Publish scores as XDM profile records with a manifest. See `enrich.jobs.publish`."""

import sys

from enrich.jobs.publish import main

if __name__ == "__main__":
    sys.exit(main())
