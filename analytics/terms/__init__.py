"""Meta's terms as data: the billing rules by period (`rules`), phone numbers to markets (`markets`) and rate cards (`ratecards`). Every stage reads them; none of them reads a stage."""
