"""FHIR interactions, one module per interaction (http://hl7.org/fhir/R4/http.html)."""
