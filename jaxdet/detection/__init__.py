"""Two-stage detection: region proposal network and RoI heads, static shapes."""
