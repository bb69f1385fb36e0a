"""Train, evaluate, register and promote models. See `enrich.jobs.train`."""

import sys

from enrich.jobs.train import main

if __name__ == "__main__":
    sys.exit(main())
