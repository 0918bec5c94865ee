"""importapi: a self-hostable Data Import API that lands pushed JSON in real SQL tables."""

__version__ = "0.1.0"
