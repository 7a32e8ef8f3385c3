"""Writers of tiny datasets in their native on-disk formats, for offline loader tests."""
