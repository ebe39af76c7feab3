"""What people read: roll-ups by month and category (`rollups`), charts (`charts`) and the HTML report (`report`)."""
