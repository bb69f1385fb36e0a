"""Score the eligible profiles with the registered models. See `enrich.jobs.score`."""

import sys

from enrich.jobs.score import main

if __name__ == "__main__":
    sys.exit(main())
