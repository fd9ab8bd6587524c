"""Text queries on points, PLY export and the web viewer."""
