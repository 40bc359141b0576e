"""fallwatch.rules"""
