"""What comes in on ``<prefix>/set``: commands parsed without a broker (parse.py), the messages received and
applied with their guards and limits (inbox.py), and the alerts switch they turn (alerts_switch.py).

The parsed command types are the package's public surface (the daemon and the page use them)."""

from fallwatch.daemon.mqtt.commands.parse import Answer, Command, Feedback, parse_answer, parse_command

__all__ = ["Answer", "Command", "Feedback", "parse_answer", "parse_command"]
