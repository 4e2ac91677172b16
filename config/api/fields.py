"""Bounds shared by the API's input fields."""

# Ids are BigAutoField: a larger integer can name no row, and handed to the database it
# overflows (SQLite raises OverflowError, a 500) instead of matching nothing.
MAX_ID = 2**63 - 1
