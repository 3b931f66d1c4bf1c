//! OpenAI streaming client: one request → raw timing, usage and status.
