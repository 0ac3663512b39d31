"""Test-case datasets, batch experiment runs on the tasks framework, checks and judges,
results grids.

May import chat, accounts and providers; none of those imports this app.
"""
