"""Hostile-input properties of the gateway, against a real `python -m nuell_gateway` process."""
