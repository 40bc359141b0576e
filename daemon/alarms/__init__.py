"""Alarms that stay open until someone answers, and notifications through Apprise."""
