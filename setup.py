"""Packaging for profile-enrichment: the `enrich` library that spark-submit ships as a wheel.

Every Python dependency is pinned here, exactly; Spark and Delta take their versions from
lib/enrich/_versions.py so the Python packages and the fetched jars always match.
"""

from pathlib import Path

from setuptools import find_packages, setup

_versions: dict[str, str] = {}
exec((Path(__file__).parent / "lib" / "enrich" / "_versions.py").read_text(), _versions)

# Spark itself is an extra: a cluster or Databricks runtime brings its own pyspark and Delta, and a
# wheel that pulled in another pyspark would shadow the runtime's. `make setup` installs `.[spark,test]`.
SPARK_REQUIRES = [
    f"pyspark=={_versions['SPARK_VERSION']}",
    f"delta-spark=={_versions['DELTA_VERSION']}",
]

INSTALL_REQUIRES = [
    "mlflow==3.17.2",
    "pandas==2.3.3",  # PySpark warns on pandas 3
    "pyarrow==25.0.1",
    "matplotlib==3.11.2",  # evaluation plots logged to MLflow (already required by mlflow)
    "numpy==2.4.6",
    "scipy==1.17.1",
    "pydantic==2.14.3",  # typed config; already required by mlflow
    "PyYAML==6.0.3",
    "requests==2.34.2",
]

EXTRAS_REQUIRE = {
    "spark": SPARK_REQUIRES,
    "test": [
        "pytest==9.2.0",
        "hypothesis==6.170.15",
        "ruff==0.17.6",
        "lifetimes==0.11.3",  # reference implementation the BTYD features are checked against
    ],
}

setup(
    name="profile-enrichment",
    version="0.1.0",
    description="PySpark jobs that turn CDP experience events and profile snapshots into "
    "model-driven profile attributes and deliver them back in bulk.",
    python_requires=">=3.11",  # developed and tested on 3.11; Databricks LTS runtimes run 3.12
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "enrich-generate-data=enrich.jobs.generate_data:main",
            "enrich-features=enrich.jobs.build_features:main",
            "enrich-train=enrich.jobs.train:main",
            "enrich-score=enrich.jobs.score:main",
            "enrich-publish=enrich.jobs.publish:main",
            "enrich-pipeline=enrich.jobs.pipeline:main",
            "enrich-ingest=enrich.jobs.ingest:main",
            "enrich-export-dataset=enrich.jobs.export_dataset:main",
            "enrich-setup-aep=enrich.jobs.setup_aep:main",
            "enrich-aep-sandbox=enrich.aep.sandbox:main",
        ],
    },
)
