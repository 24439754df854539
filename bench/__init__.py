"""``cqrs bench``: ghz-compatible benchmarks of the servers, the projector and freshness.

- :mod:`bench.catalogue`: the scenarios and the ghz configs in ``bench/ghz/``;
- :mod:`bench.data`: request data files drawn from the seeded database;
- :mod:`bench.drivers`: load generators (ghz, h2load, and a built-in multi-process one)
  that all produce ghz's JSON report (:mod:`bench.report`);
- :mod:`bench.projector` / :mod:`bench.freshness`: catch-up, rebuild and freshness;
- :mod:`bench.run`: runs a set of scenarios and writes ``bench/results/<UTC time>/``.
"""
