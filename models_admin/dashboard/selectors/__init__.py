"""Reads shaped for the dashboard's pages, one module per page group."""
