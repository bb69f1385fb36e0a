"""The one place where the Spark, Delta and Scala versions are pinned.

setup.py pins the Python packages from these values, the Makefile fetches the matching Delta jars
with Maven, and the session builder names the same coordinates for `--packages` on clusters.
Keep this file free of imports: setup.py and the Makefile read it without installing anything.
"""

SPARK_VERSION = "4.2.0"
# delta-spark_2.13 4.4.0 is built against Spark 4.2.0 and is the newest release on Maven Central;
# the Python package is pinned to the same release so the wrapper and the jar never disagree.
DELTA_VERSION = "4.4.0"
SCALA_BINARY_VERSION = "2.13"

DELTA_MAVEN_COORDINATE = f"io.delta:delta-spark_{SCALA_BINARY_VERSION}:{DELTA_VERSION}"
