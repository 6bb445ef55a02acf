"""The master patient index: pure scoring (match.py) and the service that resolves, links and merges."""
