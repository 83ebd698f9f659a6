"""The ``xmr`` command line."""
