"""Compare (2-6 columns side by side) and parameter sweeps (a grid of cells).

Every column and cell is an ordinary conversation in a `chat.RunGroup`, its replies made by
the one run engine (chat/services.py, chat/runs.py): review, export, usage and budgets see
them like any other reply. May import chat, accounts and providers; none of those imports
this app.
"""
