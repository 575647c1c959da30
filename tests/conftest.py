"""Shared by every test directory: this file puts ``tests/`` on ``sys.path``, so
helpers used in several (``servers``) are plain imports."""
