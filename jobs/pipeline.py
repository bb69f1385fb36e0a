"""Run the pipeline's stages in order from one config. See `enrich.jobs.pipeline`."""

import sys

from enrich.jobs.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
