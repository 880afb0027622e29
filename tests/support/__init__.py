"""Test helpers shared by the tiers: stand-ins for outside services, fakes for ports."""
