"""Where frames come from: camera and file sources, the reader thread, media time, still images."""
