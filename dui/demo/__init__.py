"""Synthetic demonstration data (refused when DUI_ENV=prod)."""
