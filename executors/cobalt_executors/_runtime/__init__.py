"""The worker runtime: runs tasks wherever an executor put it.

This is the only place, besides the client, where user payloads are
unpickled.
"""
