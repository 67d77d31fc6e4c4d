"""Maintenance of the service's data over time: what may go after its retention (``purge``)."""
