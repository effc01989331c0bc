"""Runnable examples: expense approval, order fulfilment, document review (see README.md)."""
