"""Who is acting, and what they may do (no Flask)."""
