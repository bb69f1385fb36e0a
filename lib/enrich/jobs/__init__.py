"""Job entry points. Each module has `run(spark, cfg) -> summary` and `main(argv) -> exit code`;
`jobs/<name>.py`, spark-submit and the wheel's console scripts all call `main`."""
