"""Build point-in-time features. See `enrich.jobs.build_features`."""

import sys

from enrich.jobs.build_features import main

if __name__ == "__main__":
    sys.exit(main())
