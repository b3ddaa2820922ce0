"""Amaranth gateware of the EIE-style accelerator: reusable cores and the `Chip` top level."""
