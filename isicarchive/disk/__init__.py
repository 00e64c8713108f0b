"""Archives on disk: layouts of folders and zips, and their columnar index."""
