"""What if: strategies rewrite traffic (`strategies`), scenarios bill and price each (`scenarios`), and `projection` extends the months ahead."""
