"""fallwatch.config"""
