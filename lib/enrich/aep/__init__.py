"""Adobe Experience Platform over HTTP: OAuth server-to-server tokens, retries, batch ingestion,
dataset export and the schema/dataset set-up. Plain `requests`; no Spark here, so these jobs run on
any driver, and the loopback sandbox (`enrich.aep.sandbox`) implements the same contract for tests."""
