"""TDDUI flux 1 ("Transfert de données DUI", ``ans.fhir.fr.tddui`` 2.2.0): the producer (``export``) and the
consumer (``consumer``) of the transaction Bundle a DUI sends to another, and the profiles they use."""
