"""The debug page and its HTTP API: server, records and alarms endpoints, request guards, the overlay, off-pipeline
work, static files.
"""
