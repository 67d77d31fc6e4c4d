"""MSSanté in the service (docs/mssante.md): documents sent to an address through the outbox (``sending``), mail
received from the establishment's mailbox filed on the right resident or queued for a person (``receiving``).
The protocols themselves are the plain library ``mssante``."""
