"""Versioned prompt templates with {{variables}}, labels, the read API; compare columns and
parameter sweeps.

May import chat, accounts and providers; none of those imports this app.
"""
