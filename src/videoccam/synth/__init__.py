"""The synthetic temporal world: procedural clips whose questions need (or do not need) temporal order."""
