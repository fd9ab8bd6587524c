"""The embedded default: procedurally generated rooms, their camera paths and label renders."""
