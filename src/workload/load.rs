//! Loading and validating `conversations.json` and `rag_data.json`.
