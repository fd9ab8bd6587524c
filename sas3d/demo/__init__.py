"""The embedded default: procedurally generated rooms and the end-to-end demo pipeline."""
