"""The audit trail: who did what to which resident's data, when, from where, with what outcome.

No Flask and no FHIR model: the web edge and the use cases call ``dui.audit.trail.record``; the
export as FHIR AuditEvent is a plain mapping (``dui.audit.export``).
"""
