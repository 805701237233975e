"""The tasklease benchmark harness (``make bench`` / ``python -m bench``).

Not part of the installed package. Modules:

- ``bench.cli``      orchestration: starts brokers, runs scenarios, prints one table, writes JSON
- ``bench.servers``  the broker (``tasklease serve``) and the empty-Starlette floor server
- ``bench.http``     a small keep-alive HTTP/1.1 client on asyncio + httptools
- ``bench.loadgen``  the load generator, run as its own process (``python -m bench.loadgen``)
- ``bench.inproc``   in-process measurements: floors, audit append, audit verify, memory
- ``bench.report``   percentiles, the table and the JSON document

Measurements of their own, outside ``make bench``: ``bench.cpu`` (CPU per operation),
``bench.propagation`` (revocation between replicas or workers), ``bench.feed`` (revocation
to an offline verifier), ``bench.scale`` (cost against state size), ``bench.pgcommit``,
``bench.auditquery``, ``bench.policy``, ``bench.offline_chain``.
"""
