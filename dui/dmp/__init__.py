"""Adapter to the DMP (Mon espace santé): XDS.b metadata, ebRIM, VIHF, SOAP/MTOM transport, gateways, and a
local simulator for development and tests.

Plain typed modules: no Flask, no SQLAlchemy. ``soap`` is the only network client. See ``docs/dmp.md``.
"""
