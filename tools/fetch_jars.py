#!/usr/bin/env python3
"""Fetch the Delta Lake jars for local mode with Maven, once, into a project folder.

Spark's own `--packages` resolution may not reach a registry from every machine, so local mode
puts these jars on the classpath instead (clusters keep `--packages`). Maven resolves
`io.delta:delta-spark_<scala>:<version>` with its runtime dependencies; jars that the installed
pyspark already ships (Hadoop, Jackson, Parquet, Scala, logging) are left out, because two
versions of one library on a classpath fail in ways that are hard to trace.

Usage: python tools/fetch_jars.py DEST_DIR
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSIONS: dict[str, str] = {}
exec((ROOT / "lib" / "enrich" / "_versions.py").read_text(), VERSIONS)

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>profile-enrichment</groupId><artifactId>delta-jars</artifactId><version>1</version>
  <dependencyManagement>
    <dependencies>
      <!-- Jackson modules Delta needs must match the Jackson that pyspark ships. -->
      <dependency>
        <groupId>com.fasterxml.jackson</groupId><artifactId>jackson-bom</artifactId>
        <version>{jackson}</version><type>pom</type><scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>io.delta</groupId>
      <artifactId>delta-spark_{scala}</artifactId>
      <version>{delta}</version>
    </dependency>
  </dependencies>
</project>
"""

_VERSION_SUFFIX = re.compile(r"-\d[\w.\-]*\.jar$")
# Artifacts that come with another one Spark already ships.
_PART_OF = {"shims": "RoaringBitmap"}


def artifact_name(jar: str) -> str:
    """`jackson-core-2.13.5.jar` -> `jackson-core`."""
    return _VERSION_SUFFIX.sub("", jar)


def pyspark_jars() -> list[str]:
    import pyspark

    return sorted(p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar"))


def is_provided(jar: str, provided: set[str]) -> bool:
    name = artifact_name(jar)
    return name in provided or _PART_OF.get(name) in provided


def jackson_version(jars: list[str]) -> str:
    for jar in jars:
        match = re.fullmatch(r"jackson-databind-(.+)\.jar", jar)
        if match:
            return match.group(1)
    raise SystemExit("fetch_jars: pyspark ships no jackson-databind jar; cannot align Jackson")


def main(dest: Path) -> int:
    if shutil.which("mvn") is None:
        print("fetch_jars: Maven ('mvn') is not on PATH; install it (e.g. apt-get install maven).",
              file=sys.stderr)
        return 1
    spark_jars = pyspark_jars()
    provided = {artifact_name(j) for j in spark_jars}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(
            POM.format(scala=VERSIONS["SCALA_BINARY_VERSION"], delta=VERSIONS["DELTA_VERSION"],
                       jackson=jackson_version(spark_jars))
        )
        out = work / "jars"
        cmd = ["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
               f"-DoutputDirectory={out}"]
        result = subprocess.run(cmd, cwd=work, check=False)
        if result.returncode != 0:
            print(f"fetch_jars: Maven could not resolve {VERSIONS['DELTA_MAVEN_COORDINATE']} "
                  "(see its output above).", file=sys.stderr)
            return result.returncode
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        kept = []
        for jar in sorted(out.glob("*.jar")):
            if not is_provided(jar.name, provided):
                shutil.copy2(jar, staging / jar.name)
                kept.append(jar.name)
    # Swap in the complete folder only at the end: an interrupted fetch never looks finished.
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    print(f"fetch_jars: {len(kept)} jars in {dest}: {', '.join(kept)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]).resolve()))
