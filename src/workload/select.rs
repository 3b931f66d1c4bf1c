//! Selecting conversations: tags, context size, ids, limits.
