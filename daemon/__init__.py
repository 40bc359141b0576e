"""fallwatch.daemon"""
