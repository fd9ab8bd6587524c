"""3D students (registry) and the spconv CPU patch."""
