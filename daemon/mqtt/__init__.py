"""Everything that leaves over MQTT: the publisher, its connection, the durable outbox, commands, topics, Home
Assistant discovery.
"""
