"""The DMP (dossier médical partagé): client and local simulator."""
