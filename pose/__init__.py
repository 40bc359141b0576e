"""fallwatch.pose"""
