//! Unit tests of the stream reconciler.
