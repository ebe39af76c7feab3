"""Below every stage: errors, the canonical schemas, shipped files (SQL, data), safe output writing, JSON files, time, code tables, money and text helpers."""
