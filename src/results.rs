//! The results folder: timestamped, never overwritten, files written atomically.
