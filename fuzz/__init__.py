"""darknet-prn's fuzzer: seeded mutators for cfg files, .weights files and images plus a table of CLI path
cases, each run in a worker process under a memory cap and a timeout, classified ok / clean error / other
exception / hang / crash (``python -m fuzz --help``; ``make fuzz`` for the long run, docs/reliability.md)."""
