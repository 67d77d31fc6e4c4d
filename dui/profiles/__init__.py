"""Profiles in force: installed IG packages (database), the shipped DUI profiles, and validation against them.

The validation engine itself is the plain library ``fhir_profiles``; this package stores the packages an
administrator installs, builds the per-process validation context from them, and applies the write policy.
"""
