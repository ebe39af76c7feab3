"""Below every stage: errors, the canonical schemas, shipped files (SQL, data) and safe output writing."""
