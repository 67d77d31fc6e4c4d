"""The Flask edge: translate HTTP to use cases and back. The only Flask code with ``dui.app`` and ``dui.cli``."""
