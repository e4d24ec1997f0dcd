"""Deployment manifests (deploy/), checked offline."""
