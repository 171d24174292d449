"""Test suite for the order placement service."""
