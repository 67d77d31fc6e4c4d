"""FHIR Bulk Data Access 2.0 ``$export`` (docs/bulk-export.md): the kick-off and status endpoints
(``operations``), the job table (``tables``, ``jobs``), what an export selects (``request``), the streaming NDJSON
writer shared with ``dui export --ndjson`` (``writer``, ``export``), the sealed files (``files``) and the job
``dui worker`` runs (``worker``)."""
