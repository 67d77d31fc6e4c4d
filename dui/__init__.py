"""DUI backend: the resident's record of a French EHPAD as HL7 FHIR R4 resources, keyed by the INS.

Importing this package pulls in nothing else, so that ``import dui.fhir`` stays free of Flask.
"""

__version__ = "0.1.0"
