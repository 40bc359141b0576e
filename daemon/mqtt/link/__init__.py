"""The link to the broker: paho's client hardened against what a broker sends (client.py), the connection of the
moment with its TLS, reconnects and callbacks (connection.py), and the watchdog that restarts it (watchdog.py)."""
