"""Adapter to the DMP (Mon espace santé): XDS.b metadata, ebRIM, VIHF, SOAP/MTOM transport, gateways.

Plain typed modules: no Flask, no SQLAlchemy. ``soap`` is the only network code. See ``docs/dmp.md``.
"""
