"""The running daemon: the service that wires everything, one worker per camera, the pose scheduler, reloads, stop
signals, systemd notify, logging.
"""
