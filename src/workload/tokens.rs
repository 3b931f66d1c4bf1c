//! Counting prompt tokens: the server's tokenizer when known, else a labelled estimate.
