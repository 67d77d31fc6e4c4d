"""The resident's identity: use cases over the FHIR store (admission, INSi, identity checks, duplicates, merge)."""
