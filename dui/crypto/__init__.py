"""Encryption at rest of resource bodies: envelope encryption under a master key.

- ``master``: the ``MasterKey`` interface (wrap / unwrap data keys) and its local implementation, a 32-byte
  key read from ``DUI_MASTER_KEY`` or ``DUI_MASTER_KEY_FILE`` (a generated file under ``var/keys/`` in
  development); a KMS or HSM implementation fits the same interface.
- ``envelope``: the stored form of a body (AES-256-GCM, versioned header naming the data key, associated data
  binding the ciphertext to its row).
- ``keyring``: data keys, stored only wrapped in ``data_key``, unwrapped once per process and cached.
- ``admin``: what ``dui keys`` does to the keys (status, master-key rotation, new data key).

No Flask, no FHIR: ``dui.fhir`` calls this package to seal and open bodies. See docs/security.md.
"""
