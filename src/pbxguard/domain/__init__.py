"""Pure core: numbers, policy, evaluation, penalties, call tracking. No I/O, no clock."""
