"""Query sources: Redis projections, PostgreSQL read models, the write tables."""
