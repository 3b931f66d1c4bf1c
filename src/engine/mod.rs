//! Engines: the server a run talks to (managed simulator, external endpoint).
