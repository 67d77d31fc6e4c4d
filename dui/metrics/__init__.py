"""Prometheus metrics (docs/metrics.md): what each process records as it works (``counters``), what is read from the
database when ``/metrics`` is scraped (``database``), and how they are exposed, summed over the workers of
``dui serve`` (``exposition``).

No label ever holds a resource id, a search value, a path with ids or anything about a resident: labels take
their values from short fixed lists (interactions, status codes, systems, outcomes, outbox job kinds and states).
"""
