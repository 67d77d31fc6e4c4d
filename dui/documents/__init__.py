"""Clinical documents: the resident's record read into a document model (``record``), rendered as CDA R2
(CI-SIS DLU-EHPAD DLU and FLUDT, XDS-SD N1) and as PDF, stored as DocumentReference + Binary, kept current, and
received documents (FLUDR) read back into the record. Use cases: no Flask; they take the FHIR context."""
