"""Stage 3, price: charges and a rate card to money (contracts.md §4)."""
