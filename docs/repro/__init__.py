"""The observation blocks of docs/reproduce.py, one module per group of observations (common.py:
what they share). Imported with docs/ on sys.path."""
