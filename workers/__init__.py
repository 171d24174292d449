"""Dramatiq workers that place committed orders on the stock exchange: ``dramatiq workers.main``."""
