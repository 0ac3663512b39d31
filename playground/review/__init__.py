"""Reviewing saved replies: history and search, branches and diffs, annotations, review
queues, share links, export and import.

May import chat, accounts and providers; none of those imports this app.
"""
