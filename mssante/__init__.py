"""Secure health messaging (MSSanté): MIME messages, IHE XDM packages, SMTP/IMAP transport.

Not built yet. This package never imports ``dui``, Flask or SQLAlchemy.
"""
