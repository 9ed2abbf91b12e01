"""Interop with the TypeScript state adapters (Node.js; see bridge.py)."""
