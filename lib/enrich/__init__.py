"""profile-enrichment: model-driven profile attributes from CDP events and profile snapshots."""

from enrich._versions import DELTA_VERSION, SPARK_VERSION

__all__ = ["DELTA_VERSION", "SPARK_VERSION"]
__version__ = "0.1.0"
