#!/usr/bin/env python
"""The suite's manage.py (settings: ftpadmin.settings)."""

from ftpadmin.__main__ import main

if __name__ == "__main__":
    main()
